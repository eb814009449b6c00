//! `lianxin-load`: the load generator (see the library's documentation).

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = lianxin_load::cli::Cli::parse();
    let runtime = lianxin_load::runtime(usize::from(cli.threads))?;
    runtime.block_on(lianxin_load::run(cli))
}
