//! `lianxin-load`: the load generator (see the library's documentation).

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = lianxin_load::cli::Cli::parse();
    lianxin_load::run(cli).await
}
