//! `idle`: many signed-in, subscribed, quiet connections; what each costs the target in memory, and
//! how fast they are opened.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lianxin_client::Client;

use super::{Ctx, Outcome};
use crate::accounts::{self, Account};
use crate::cli::IdleArgs;
use crate::net;
use crate::procstat;
use crate::progress;
use crate::report::{self, Better, LatencySummary, Metric, Unit};

/// A short class of a connection failure, to count failures by kind.
pub fn failure_kind(error: &str) -> String {
    let lower = error.to_lowercase();
    for (needle, kind) in [
        ("timed out", "timeout"),
        ("refused", "refused"),
        ("reset", "reset"),
        ("too many open files", "out of file descriptors"),
        ("address not available", "no local port"),
        ("address already in use", "no local port"),
        ("401", "unauthorized"),
    ] {
        if lower.contains(needle) {
            return kind.to_owned();
        }
    }
    error.chars().take(60).collect()
}

/// `delta / count` in bytes, 0 when nothing was counted.
pub fn per_connection(before: u64, after: u64, count: usize) -> f64 {
    if count == 0 {
        return 0.0;
    }
    (after as f64 - before as f64) / count as f64
}

/// Runs `idle`.
pub async fn run(ctx: &Ctx<'_>, args: &IdleArgs) -> anyhow::Result<Outcome> {
    let (n, cap_note) = net::cap_connections(args.connections, ctx.nofile);
    if let Some(note) = &cap_note {
        progress::note(note);
    }
    let account_count = (args.accounts.min(n)) as usize;
    let logins: Vec<String> = accounts::demo_logins()
        .into_iter()
        .take(account_count)
        .collect();
    let signed = accounts::sign_in_all(&ctx.url, &logins).await?;
    let list: Vec<Account> = logins
        .iter()
        .filter_map(|l| signed.get(l).cloned())
        .collect();
    let sources = ctx.sources(n);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let server_before = ctx.snapshot();
    let me_before = procstat::read(None).ok();

    let bar = progress::counter(n, "opening connections");
    let started = Instant::now();
    let results: Vec<(Result<Client, String>, Duration)> =
        futures_util::stream::iter(0..n as usize)
            .map(|i| {
                let account = &list[i % list.len()];
                let url = ctx.url.clone();
                let local = sources.pick(i);
                let bar = bar.clone();
                async move {
                    let t = Instant::now();
                    let options = net::client_options(local, Some(&account.token));
                    let result = async {
                        let client = Client::connect(&url, options).await?;
                        client.subscribe(account.head).await?;
                        Ok::<_, lianxin_client::ClientError>(client)
                    }
                    .await
                    .map_err(|e| e.to_string());
                    bar.inc(1);
                    (result, t.elapsed())
                }
            })
            .buffer_unordered(args.connect_concurrency as usize)
            .collect()
            .await;
    let connect_secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let mut connect_latency = report::latency_histogram();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut clients = Vec::new();
    for (result, took) in results {
        match result {
            Ok(c) => {
                report::record(&mut connect_latency, took);
                clients.push(c);
            }
            Err(e) => *failures.entry(failure_kind(&e)).or_default() += 1,
        }
    }
    let connected = clients.len();
    let server_connected = ctx.snapshot();

    let hold = progress::timer(args.hold_secs, "holding");
    for s in 0..args.hold_secs {
        hold.set_position(s);
        hold.set_message(format!(
            "{} open",
            clients.iter().filter(|c| !c.is_closed()).count()
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    hold.finish_and_clear();
    let server_after = ctx.snapshot();
    let me_after = procstat::read(None).ok();
    let still_open = clients.iter().filter(|c| !c.is_closed()).count();
    drop(clients);

    let connect = LatencySummary::of(&connect_latency);
    let rate = connected as f64 / connect_secs.max(1e-9);
    let mut metrics = vec![
        Metric::new(
            "connections",
            "connections open",
            connected as f64,
            Unit::Count,
            Better::Higher,
        ),
        Metric::new(
            "failed",
            "connections failed",
            failures.values().sum::<u64>() as f64,
            Unit::Count,
            Better::Lower,
        ),
        Metric::new(
            "still_open",
            "still open after the hold",
            still_open as f64,
            Unit::Count,
            Better::Higher,
        ),
        Metric::new(
            "connect_per_sec",
            "connect rate (incl. subscribe)",
            rate,
            Unit::PerSec,
            Better::Higher,
        ),
    ];
    metrics.extend(connect.metrics("connect", "connect+subscribe"));
    let mut details = serde_json::json!({
        "requested": args.connections,
        "connections": connected,
        "accounts": list.len(),
        "source_ips": sources.len(),
        "connect_secs": connect_secs,
        "connect_latency": connect,
        "failures": failures,
        "still_open_after_hold": still_open,
        "open_files_limit": ctx.nofile,
    });
    if let (Some(b), Some(a)) = (server_before, server_after) {
        let per = per_connection(b.rss_bytes, a.rss_bytes, connected);
        if let Some(first) = ctx.samples_since(0.0).first() {
            metrics.push(Metric::new(
                "server_rss_at_start_bytes",
                "target RSS at start (before sign-ins)",
                first.snapshot.rss_bytes as f64,
                Unit::Bytes,
                Better::Lower,
            ));
        }
        metrics.extend([
            Metric::new(
                "server_rss_before_bytes",
                "target RSS before connecting",
                b.rss_bytes as f64,
                Unit::Bytes,
                Better::Lower,
            ),
            Metric::new(
                "server_rss_after_bytes",
                "target RSS after the hold",
                a.rss_bytes as f64,
                Unit::Bytes,
                Better::Lower,
            ),
            Metric::new(
                "server_rss_per_connection_bytes",
                "target RSS per connection",
                per,
                Unit::Bytes,
                Better::Lower,
            ),
            Metric::new(
                "server_peak_rss_bytes",
                "target peak RSS (VmHWM)",
                a.hwm_bytes as f64,
                Unit::Bytes,
                Better::Lower,
            ),
            Metric::new(
                "server_connect_cpu_secs",
                "target CPU for the connects",
                server_connected.map_or(0.0, |c| c.cpu_secs - b.cpu_secs),
                Unit::Seconds,
                Better::Lower,
            ),
        ]);
        if let Some(map) = details.as_object_mut() {
            map.insert("server_before".into(), serde_json::to_value(b)?);
            map.insert(
                "server_after_connect".into(),
                serde_json::to_value(server_connected)?,
            );
            map.insert("server_after_hold".into(), serde_json::to_value(a)?);
        }
    }
    if let (Some(b), Some(a)) = (me_before, me_after) {
        metrics.push(Metric::new(
            "loadgen_rss_per_connection_bytes",
            "load generator RSS per connection",
            per_connection(b.rss_bytes, a.rss_bytes, connected),
            Unit::Bytes,
            Better::Neither,
        ));
    }
    let mut notes = Vec::new();
    notes.extend(cap_note);
    notes.push(format!(
        "{} accounts each signed in once with its password; the {connected} connections reuse \
         their tokens (Authorization header) and subscribe from the feed head",
        list.len()
    ));
    let params = serde_json::json!({
        "connections": n,
        "hold_secs": args.hold_secs,
        "accounts": list.len(),
        "connect_concurrency": args.connect_concurrency,
        "source_ips": sources.len(),
    });
    Ok(Outcome {
        params,
        metrics,
        details,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified() {
        assert_eq!(failure_kind("timed out waiting for x"), "timeout");
        assert_eq!(
            failure_kind("cannot connect: Connection refused (os error 111)"),
            "refused"
        );
        assert_eq!(
            failure_kind("Too many open files"),
            "out of file descriptors"
        );
        assert_eq!(failure_kind("weird"), "weird");
        assert_eq!(per_connection(1000, 3000, 4), 500.0);
        assert_eq!(per_connection(3000, 1000, 4), -500.0);
        assert_eq!(per_connection(1, 2, 0), 0.0);
    }
}
