//! `uploads`: photos of about 1 MiB posted over HTTP (`POST /media`), many at once; throughput,
//! latency, and the server's memory while they run (uploads are streamed to disk and decoded a
//! few at a time, so memory must not grow with the number in flight).

use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;

use super::{Ctx, Outcome};
use crate::accounts;
use crate::cli::UploadsArgs;
use crate::progress;
use crate::report::{self, Better, LatencySummary, Metric, Unit};

/// A JPEG of noise of about `kib` KiB; `seed` makes each one different.
pub fn noise_jpeg(kib: u32, seed: u32) -> anyhow::Result<Vec<u8>> {
    let encode = |w: u32, h: u32| -> anyhow::Result<Vec<u8>> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        let img = image::RgbImage::from_fn(w, h, |_, _| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let b = state.to_le_bytes();
            image::Rgb([b[0], b[1], b[2]])
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
            .encode_image(&img)
            .context("encoding a JPEG")?;
        Ok(out)
    };
    // Noise at quality 80 takes about 1.9 bytes a pixel; measure once and correct.
    let want = f64::from(kib) * 1024.0;
    let side = (want / 1.9).sqrt().max(16.0);
    let first = encode(side as u32, side as u32)?;
    let side = (side * (want / first.len() as f64).sqrt()).max(16.0) as u32;
    encode(side, side)
}

/// The target's HTTP base address (`http://host:port`), from its WebSocket URL.
pub fn http_base(ctx: &Ctx<'_>) -> String {
    ctx.url
        .replace("ws://", "http://")
        .trim_end_matches("/ws")
        .to_owned()
}

/// Posts a JPEG to `url` (`POST /media`) as the token's account; returns the HTTP status and the
/// answer's body.
pub async fn post_photo(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    photo: Vec<u8>,
) -> anyhow::Result<(reqwest::StatusCode, String)> {
    let resp = client
        .post(url)
        .bearer_auth(token)
        .header("content-type", "image/jpeg")
        .body(photo)
        .send()
        .await
        .context("posting a photo")?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    Ok((status, body))
}

/// Runs `uploads`.
pub async fn run(ctx: &Ctx<'_>, args: &UploadsArgs) -> anyhow::Result<Outcome> {
    anyhow::ensure!(!ctx.is_relay(), "the relay stores no media");
    let http = http_base(ctx);
    // Residents only: each photo's uploader owns it.
    let logins: Vec<String> = accounts::demo_logins()
        .into_iter()
        .filter(|l| l.starts_with("resident-"))
        .take(args.concurrency.clamp(1, 144))
        .collect();
    let signed = accounts::sign_in_all(&ctx.url, &logins).await?;
    let tokens: Vec<String> = logins
        .iter()
        .filter_map(|l| signed.get(l).map(|a| a.token.clone()))
        .collect();
    anyhow::ensure!(!tokens.is_empty(), "no resident signed in");

    let bar = progress::counter(u64::from(args.uploads), "drawing photos");
    let mut photos = Vec::with_capacity(args.uploads as usize);
    for i in 0..args.uploads {
        photos.push(noise_jpeg(args.size_kib, i)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let total_bytes: u64 = photos.iter().map(|p| p.len() as u64).sum();

    let before = ctx.snapshot();
    let t0 = ctx.sampler_secs();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .context("building the HTTP client")?;
    let bar = progress::counter(u64::from(args.uploads), "uploading");
    let started = Instant::now();
    let results: Vec<anyhow::Result<Duration>> = futures_util::stream::iter(photos)
        .enumerate()
        .map(|(i, photo)| {
            let (client, bar) = (client.clone(), bar.clone());
            let token = tokens[i % tokens.len()].clone();
            let url = format!("{http}/media");
            async move {
                let t = Instant::now();
                let (status, body) = post_photo(&client, &url, &token, photo).await?;
                bar.inc(1);
                anyhow::ensure!(status.is_success(), "HTTP {status}: {body}");
                anyhow::ensure!(body.contains("MEDIA_KIND_IMAGE"), "not an image: {body}");
                Ok(t.elapsed())
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    let wall = started.elapsed();
    bar.finish_and_clear();
    let during = ctx.samples_since(t0);
    let after = ctx.snapshot();

    let mut hist = report::latency_histogram();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(d) => report::record(&mut hist, d),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let mib = total_bytes as f64 / (1024.0 * 1024.0);
    let peak = during
        .iter()
        .map(|s| s.snapshot.rss_bytes)
        .chain(after.map(|s| s.rss_bytes))
        .max();
    let mut metrics = vec![
        Metric::new(
            "uploads_ok",
            "uploads stored",
            hist.len() as f64,
            Unit::Count,
            Better::Higher,
        ),
        Metric::new(
            "errors",
            "uploads refused or failed",
            errors.len() as f64,
            Unit::Count,
            Better::Lower,
        ),
        Metric::new(
            "throughput_mib_per_sec",
            "throughput (MiB/s, whole run)",
            mib / wall.as_secs_f64().max(1e-9),
            Unit::Count,
            Better::Higher,
        ),
        Metric::new(
            "uploads_per_sec",
            "uploads per second",
            f64::from(args.uploads) / wall.as_secs_f64().max(1e-9),
            Unit::PerSec,
            Better::Higher,
        ),
    ];
    metrics.extend(LatencySummary::of(&hist).metrics("upload", "upload"));
    if let (Some(b), Some(p)) = (before, peak) {
        metrics.push(Metric::new(
            "rss_before_bytes",
            "target RSS before",
            b.rss_bytes as f64,
            Unit::Bytes,
            Better::Lower,
        ));
        metrics.push(Metric::new(
            "rss_peak_during_bytes",
            "target RSS, peak while uploading",
            p as f64,
            Unit::Bytes,
            Better::Lower,
        ));
        metrics.push(Metric::new(
            "rss_growth_bytes",
            "target RSS growth (peak - before)",
            p as f64 - b.rss_bytes as f64,
            Unit::Bytes,
            Better::Lower,
        ));
    }
    errors.truncate(5);
    Ok(Outcome {
        params: serde_json::json!({
            "uploads": args.uploads,
            "concurrency": args.concurrency,
            "size_kib": args.size_kib,
            "accounts": tokens.len(),
        }),
        metrics,
        details: serde_json::json!({
            "bytes_uploaded": total_bytes,
            "wall_secs": wall.as_secs_f64(),
            "first_errors": errors,
        }),
        notes: vec![
            "the target's RSS is sampled once a second; the peak may miss a short spike".to_owned(),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photos_are_about_the_asked_size_and_differ() -> anyhow::Result<()> {
        let a = noise_jpeg(256, 1)?;
        let b = noise_jpeg(256, 2)?;
        let kib = a.len() as f64 / 1024.0;
        assert!((200.0..320.0).contains(&kib), "{kib} KiB");
        assert_ne!(a, b);
        Ok(())
    }
}
