//! `soak`: the steady load for a long (bounded) time, sampling the target's resident memory every
//! second, to see whether it grows: the average of the first and last minute (or third, for runs
//! shorter than three minutes) and the least-squares slope.

use super::{Ctx, Outcome, steady};
use crate::cli::LoadShape;
use crate::procstat;
use crate::report::{Better, Metric, Unit};

/// The window compared at the start and the end of a run of `secs` seconds: a minute, or a third
/// of the run when it is shorter than three minutes (at least one second).
pub fn trend_window(secs: f64) -> f64 {
    (secs / 3.0).clamp(1.0, 60.0)
}

/// Runs `soak`.
pub async fn run(ctx: &Ctx<'_>, shape: &LoadShape) -> anyhow::Result<Outcome> {
    let load = steady::run_load(ctx, shape).await?;
    let samples = load.load_samples.clone();
    let mut outcome = load.outcome(ctx, shape);
    let window = trend_window(shape.duration_secs as f64);
    let trend = procstat::memory_trend(&samples, window);
    if let Some(t) = &trend {
        outcome.metrics.extend([
            Metric::new(
                "rss_first_window_avg_bytes",
                "target RSS, first window avg",
                t.first_window_avg_bytes,
                Unit::Bytes,
                Better::Lower,
            ),
            Metric::new(
                "rss_last_window_avg_bytes",
                "target RSS, last window avg",
                t.last_window_avg_bytes,
                Unit::Bytes,
                Better::Lower,
            ),
            Metric::new(
                "rss_growth_bytes",
                "target RSS growth (last - first)",
                t.growth_bytes,
                Unit::Bytes,
                Better::Lower,
            ),
            Metric::new(
                "rss_slope_bytes_per_sec",
                "target RSS slope (per second)",
                t.slope_bytes_per_sec,
                Unit::Bytes,
                Better::Lower,
            ),
        ]);
    } else {
        outcome
            .notes
            .push("no memory figures: the target's process is not ours (--target)".to_owned());
    }
    if let Some(map) = outcome.details.as_object_mut() {
        map.insert("memory_trend".to_owned(), serde_json::to_value(&trend)?);
    }
    if ctx.is_relay() {
        outcome.notes.push(
            "the bare relay keeps every feed in memory by design, so its RSS grows with the \
             messages relayed"
                .to_owned(),
        );
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        assert_eq!(trend_window(3.0), 1.0);
        assert_eq!(trend_window(60.0), 20.0);
        assert_eq!(trend_window(600.0), 60.0);
        assert_eq!(trend_window(0.5), 1.0);
    }
}
