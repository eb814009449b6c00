//! `startup`: the server started on a large existing database (made by `lianxin populate`); how
//! long until it is ready, what it rests at, and that the stored history is served.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use lianxin_client::Client;
use lianxin_client::v1::ListPetitions;

use super::{Ctx, Outcome};
use crate::accounts::DEMO_PASSWORD;
use crate::cli::StartupArgs;
use crate::net;
use crate::progress;
use crate::report::{self, Better, LatencySummary, Metric, Unit};
use crate::spawn::ServerSetup;

/// Readers signing in and reading at once.
const READER_CONCURRENCY: usize = 8;

/// The server is started on the given data folder.
pub fn server_setup(args: &StartupArgs) -> ServerSetup {
    ServerSetup {
        data_dir: Some(args.data_dir.clone()),
        ..Default::default()
    }
}

/// Bytes of the files under a folder.
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// What one reader saw.
#[derive(Debug, Default)]
struct Read {
    petitions: u64,
    entries: u64,
    expected: u64,
    list: Vec<Duration>,
    history: Vec<Duration>,
}

/// One resident signs in, lists their petitions (one page) and reads each one's history.
async fn read_as(url: &str, login: &str) -> anyhow::Result<Read> {
    let client = Client::connect(url, net::client_options(None, None))
        .await
        .with_context(|| format!("connecting to {url}"))?;
    client
        .sign_in(login, DEMO_PASSWORD)
        .await
        .with_context(|| format!("signing in as {login}"))?;
    let mut read = Read::default();
    let t = Instant::now();
    let page = client
        .list_petitions(ListPetitions {
            limit: 20,
            ..Default::default()
        })
        .await?;
    read.list.push(t.elapsed());
    for p in &page.petitions {
        let t = Instant::now();
        let history = client.get_history(p.id, 0, 100).await?;
        read.history.push(t.elapsed());
        read.petitions += 1;
        read.entries += history.entries.len() as u64;
        read.expected += p.last_seq.min(100);
        anyhow::ensure!(
            history.entries.len() as u64 == p.last_seq.min(100),
            "petition {}: {} entries served of {}",
            p.id,
            history.entries.len(),
            p.last_seq
        );
    }
    Ok(read)
}

/// Runs `startup`.
pub async fn run(ctx: &Ctx<'_>, args: &StartupArgs) -> anyhow::Result<Outcome> {
    let disk = dir_size(&args.data_dir);
    let ready_secs = ctx.ready_secs;
    let at_ready = ctx.snapshot();
    progress::note(&format!(
        "ready after {}; resting {} s",
        ready_secs.map_or_else(|| "?".to_owned(), |s| format!("{s:.2} s")),
        args.settle_secs
    ));
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let at_rest = ctx.snapshot();

    let logins: Vec<String> = (0..args.readers)
        .map(|n| format!("pop-resident-{n}"))
        .collect();
    let bar = progress::counter(logins.len() as u64, "reading histories");
    let reads: Vec<anyhow::Result<Read>> = futures_util::stream::iter(logins.iter())
        .map(|login| {
            let bar = bar.clone();
            async move {
                let r = read_as(&ctx.url, login).await;
                bar.inc(1);
                r
            }
        })
        .buffer_unordered(READER_CONCURRENCY)
        .collect()
        .await;
    bar.finish_and_clear();
    let mut list = report::latency_histogram();
    let mut history = report::latency_histogram();
    let (mut petitions, mut entries, mut expected) = (0u64, 0u64, 0u64);
    for r in reads {
        let r = r?;
        petitions += r.petitions;
        entries += r.entries;
        expected += r.expected;
        r.list.iter().for_each(|d| report::record(&mut list, *d));
        r.history
            .iter()
            .for_each(|d| report::record(&mut history, *d));
    }
    anyhow::ensure!(
        petitions > 0,
        "no petitions were served: is {} a populated database (lianxin populate)?",
        args.data_dir.display()
    );
    let after_reads = ctx.snapshot();

    let mut metrics = Vec::new();
    if let Some(s) = ready_secs {
        metrics.push(Metric::new(
            "ready_secs",
            "start until /readyz answers 200",
            s,
            Unit::Seconds,
            Better::Lower,
        ));
    }
    for (name, label, snap) in [
        ("rss_at_ready_bytes", "target RSS when ready", at_ready),
        ("rss_at_rest_bytes", "target RSS at rest", at_rest),
        (
            "rss_after_reads_bytes",
            "target RSS after the reads",
            after_reads,
        ),
    ] {
        if let Some(s) = snap {
            metrics.push(Metric::new(
                name,
                label,
                s.rss_bytes as f64,
                Unit::Bytes,
                Better::Lower,
            ));
        }
    }
    metrics.push(Metric::new(
        "data_on_disk_bytes",
        "data folder size",
        disk as f64,
        Unit::Bytes,
        Better::Neither,
    ));
    metrics.push(Metric::new(
        "petitions_read",
        "petitions read back",
        petitions as f64,
        Unit::Count,
        Better::Neither,
    ));
    let history_summary = LatencySummary::of(&history);
    metrics.extend(history_summary.metrics("history", "getHistory (cold)"));
    let list_summary = LatencySummary::of(&list);
    Ok(Outcome {
        params: serde_json::json!({
            "data_dir": args.data_dir,
            "settle_secs": args.settle_secs,
            "readers": args.readers,
        }),
        metrics,
        details: serde_json::json!({
            "entries_read": entries,
            "entries_expected": expected,
            "list_latency": list_summary,
            "history_latency": history_summary,
            "peak_rss_bytes": after_reads.map(|s| s.hwm_bytes),
        }),
        notes: vec![
            "ready_secs counts from spawning the process to the first 200 of /readyz (polled \
             every 50 ms)"
                .to_owned(),
        ],
    })
}
