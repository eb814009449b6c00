//! Results: HDR latency histograms summarised in microseconds, key figures with units, the human
//! table printed on stdout, the JSON report, and the comparison of a run against the bare relay.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::procstat::{MachineSummary, ProcessSummary};

/// The largest latency a histogram holds, in microseconds (60 s); larger values are clamped.
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// A latency histogram with microsecond precision, 3 significant figures, from 1 µs to 60 s.
#[allow(clippy::expect_used)] // constant bounds that hdrhistogram accepts
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid constant histogram bounds")
}

/// Records a duration in a latency histogram, in microseconds (at least 1).
pub fn record(hist: &mut Histogram<u64>, elapsed: std::time::Duration) {
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    hist.saturating_record(us.clamp(1, MAX_LATENCY_US));
}

/// The percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Smallest value.
    pub min_us: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest value.
    pub max_us: u64,
    /// Arithmetic mean.
    pub mean_us: f64,
}

impl LatencySummary {
    /// Summarises a histogram (all zero when it is empty).
    pub fn of(hist: &Histogram<u64>) -> LatencySummary {
        if hist.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: hist.len(),
            min_us: hist.min(),
            p50_us: hist.value_at_quantile(0.50),
            p90_us: hist.value_at_quantile(0.90),
            p99_us: hist.value_at_quantile(0.99),
            p999_us: hist.value_at_quantile(0.999),
            max_us: hist.max(),
            mean_us: hist.mean(),
        }
    }

    /// `name p50 / p99 / p99.9 / max` as figures: `<prefix>_p50_us` and so on.
    pub fn metrics(&self, prefix: &str, label: &str) -> Vec<Metric> {
        let f = |suffix: &str, what: &str, v: u64| {
            Metric::new(
                &format!("{prefix}_{suffix}_us"),
                &format!("{label} {what}"),
                v as f64,
                Unit::Micros,
                Better::Lower,
            )
        };
        vec![
            f("p50", "p50", self.p50_us),
            f("p99", "p99", self.p99_us),
            f("p999", "p99.9", self.p999_us),
            f("max", "max", self.max_us),
        ]
    }
}

/// Formats microseconds for people: `850 µs`, `12.3 ms`, `1.20 s`.
pub fn format_us(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        let ms = us / 1_000.0;
        if ms < 10.0 {
            format!("{ms:.2} ms")
        } else if ms < 100.0 {
            format!("{ms:.1} ms")
        } else {
            format!("{ms:.0} ms")
        }
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}

/// Formats a byte count for people, in binary units: `512 B`, `12.3 KiB`, `45.6 MiB`.
pub fn format_bytes(bytes: f64) -> String {
    let sign = if bytes < 0.0 { "-" } else { "" };
    let b = bytes.abs();
    if b < 1024.0 {
        format!("{sign}{b:.0} B")
    } else if b < 1024.0 * 1024.0 {
        format!("{sign}{:.1} KiB", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{sign}{:.1} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{sign}{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    }
}

/// What a figure counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// A plain number.
    Count,
    /// Per second.
    PerSec,
    /// Microseconds.
    Micros,
    /// Bytes.
    Bytes,
    /// Seconds.
    Seconds,
    /// CPU cores (CPU seconds per wall second).
    Cores,
}

/// Which direction is good, for reading a ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// More is better (throughput).
    Higher,
    /// Less is better (latency, memory, CPU, errors).
    Lower,
    /// Neither (a setting echoed back).
    Neither,
}

/// One key figure of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    /// Stable snake_case key.
    pub name: String,
    /// For people.
    pub label: String,
    /// The value in `unit`.
    pub value: f64,
    /// What it counts.
    pub unit: Unit,
    /// Which direction is good.
    pub better: Better,
}

impl Metric {
    /// A figure.
    pub fn new(name: &str, label: &str, value: f64, unit: Unit, better: Better) -> Metric {
        Metric {
            name: name.to_owned(),
            label: label.to_owned(),
            value,
            unit,
            better,
        }
    }

    /// The value formatted with its unit.
    pub fn display(&self) -> String {
        format_value(self.value, self.unit)
    }
}

/// A value formatted with its unit.
pub fn format_value(value: f64, unit: Unit) -> String {
    match unit {
        Unit::Count => {
            if value.fract() == 0.0 && value.abs() < 1e15 {
                format!("{value:.0}")
            } else {
                format!("{value:.2}")
            }
        }
        Unit::PerSec => format!("{value:.1}/s"),
        Unit::Micros => format_us(value),
        Unit::Bytes => format_bytes(value),
        Unit::Seconds => format!("{value:.2} s"),
        Unit::Cores => format!("{value:.2} cores"),
    }
}

/// What a run was pointed at.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetInfo {
    /// `server` (spawned `lianxin`), `relay` (the bare relay) or `external` (`--target`).
    pub kind: String,
    /// The WebSocket URL.
    pub url: String,
    /// The process id, when this tool started the process.
    pub pid: Option<u32>,
}

/// The report of one scenario run against one target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Scenario name: idle, steady, storm, soak.
    pub scenario: String,
    /// What was loaded.
    pub target: TargetInfo,
    /// When the run started, Unix seconds.
    pub started_at_unix: u64,
    /// How long the whole run took (including start-up and sign-in), seconds.
    pub wall_secs: f64,
    /// The scenario's settings.
    pub params: serde_json::Value,
    /// Key figures, in order.
    pub metrics: Vec<Metric>,
    /// The key figures as `name → value`, for scripts.
    pub figures: BTreeMap<String, f64>,
    /// Everything else the scenario measured.
    pub details: serde_json::Value,
    /// The target process over the whole run, when this tool started it.
    pub server_process: Option<ProcessSummary>,
    /// This load generator over the whole run.
    pub load_generator: Option<ProcessSummary>,
    /// The worker threads of this load generator's runtime.
    pub load_generator_threads: usize,
    /// The whole machine over the whole run (to see whether anything else disturbed it).
    pub machine: Option<MachineSummary>,
    /// Caveats.
    pub notes: Vec<String>,
}

impl Report {
    /// Fills `figures` from `metrics`.
    pub fn index_figures(&mut self) {
        self.figures = self
            .metrics
            .iter()
            .map(|m| (m.name.clone(), m.value))
            .collect();
    }

    /// A figure by name.
    pub fn figure(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }
}

/// One figure of both runs of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratio {
    /// The figure's key.
    pub name: String,
    /// For people.
    pub label: String,
    /// Its unit.
    pub unit: Unit,
    /// Which direction is good.
    pub better: Better,
    /// Against the Lianxin server.
    pub ours: f64,
    /// Against the bare relay.
    pub relay: f64,
    /// ours / relay (`None` when the relay's value is 0).
    pub ratio: Option<f64>,
}

/// The same scenario against the server and against the bare relay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Scenario name.
    pub scenario: String,
    /// Always true: tells a comparison from a single report.
    pub compare: bool,
    /// Figures side by side, with ours / relay.
    pub ratios: Vec<Ratio>,
    /// The run against the Lianxin server.
    pub ours: Report,
    /// The run against the bare relay.
    pub relay: Report,
}

/// ours / relay, or `None` when the relay's value is zero.
pub fn ratio(ours: f64, relay: f64) -> Option<f64> {
    (relay != 0.0).then(|| ours / relay)
}

/// Puts two reports of the same scenario side by side.
pub fn compare(ours: Report, relay: Report) -> Comparison {
    let ratios = ours
        .metrics
        .iter()
        .filter_map(|m| {
            let r = relay.figure(&m.name)?;
            Some(Ratio {
                name: m.name.clone(),
                label: m.label.clone(),
                unit: m.unit,
                better: m.better,
                ours: m.value,
                relay: r,
                ratio: ratio(m.value, r),
            })
        })
        .collect();
    Comparison {
        scenario: ours.scenario.clone(),
        compare: true,
        ratios,
        ours,
        relay,
    }
}

/// Lays out rows of cells as a table with aligned columns (the first left, the others right).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate().take(columns) {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i == 0 {
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            } else {
                out.push_str("  ");
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = String::new();
    out.push_str(&line(
        &header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>(),
    ));
    out.push('\n');
    let total: usize = widths.iter().sum::<usize>() + 2 * (columns.saturating_sub(1));
    out.push_str(&"-".repeat(total));
    out.push('\n');
    for row in rows {
        out.push_str(&line(row));
        out.push('\n');
    }
    out
}

/// The human table of one report.
pub fn render(report: &Report) -> String {
    let mut out = format!(
        "scenario {} against {} ({}){}\n\n",
        report.scenario,
        report.target.kind,
        report.target.url,
        report
            .target
            .pid
            .map(|p| format!(", pid {p}"))
            .unwrap_or_default()
    );
    let rows: Vec<Vec<String>> = report
        .metrics
        .iter()
        .map(|m| vec![m.label.clone(), m.display()])
        .collect();
    out.push_str(&table(&["figure", "value"], &rows));
    for note in &report.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    out
}

/// The human table of a comparison.
pub fn render_comparison(c: &Comparison) -> String {
    let mut out = format!(
        "scenario {}: Lianxin server ({}) vs bare relay ({})\n\n",
        c.scenario, c.ours.target.url, c.relay.target.url
    );
    let rows: Vec<Vec<String>> = c
        .ratios
        .iter()
        .map(|r| {
            vec![
                r.label.clone(),
                format_value(r.ours, r.unit),
                format_value(r.relay, r.unit),
                r.ratio
                    .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}×")),
            ]
        })
        .collect();
    out.push_str(&table(
        &["figure", "ours", "bare relay", "ours/relay"],
        &rows,
    ));
    let mut notes: Vec<&String> = c.ours.notes.iter().collect();
    for n in &c.relay.notes {
        if !notes.contains(&n) {
            notes.push(n);
        }
    }
    for note in notes {
        out.push_str(&format!("note: {note}\n"));
    }
    out
}

/// `target/load-reports/<scenario>-<unix time>.json`.
pub fn default_report_path(scenario: &str, unix: u64) -> PathBuf {
    PathBuf::from("target")
        .join("load-reports")
        .join(format!("{scenario}-{unix}.json"))
}

/// Writes a value as pretty JSON, creating the folder.
pub fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::File::create(path)?;
    serde_json::to_writer_pretty(&mut file, value)?;
    file.write_all(b"\n")?;
    Ok(())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn percentiles_in_microseconds() {
        let mut h = latency_histogram();
        for us in 1..=1000u64 {
            record(&mut h, Duration::from_micros(us));
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 1000);
        assert_eq!(s.min_us, 1);
        assert_eq!(s.p50_us, 500);
        assert_eq!(s.p90_us, 900);
        assert_eq!(s.p99_us, 990);
        assert_eq!(s.p999_us, 999);
        assert_eq!(s.max_us, 1000);
        assert!((s.mean_us - 500.5).abs() < 1.0);
        // Outliers are clamped to the histogram's range rather than lost.
        record(&mut h, Duration::from_secs(3600));
        record(&mut h, Duration::ZERO);
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 1002);
        assert!(s.max_us >= MAX_LATENCY_US && s.max_us <= MAX_LATENCY_US + MAX_LATENCY_US / 1000);
        assert_eq!(
            LatencySummary::of(&latency_histogram()),
            LatencySummary::default()
        );
        let names: Vec<String> = s
            .metrics("ack", "ack")
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(
            names,
            ["ack_p50_us", "ack_p99_us", "ack_p999_us", "ack_max_us"]
        );
    }

    #[test]
    fn human_formats() {
        assert_eq!(format_us(850.0), "850 µs");
        assert_eq!(format_us(1_234.0), "1.23 ms");
        assert_eq!(format_us(12_345.0), "12.3 ms");
        assert_eq!(format_us(456_000.0), "456 ms");
        assert_eq!(format_us(1_200_000.0), "1.20 s");
        assert_eq!(format_bytes(512.0), "512 B");
        assert_eq!(format_bytes(12_595.2), "12.3 KiB");
        assert_eq!(format_bytes(-2048.0), "-2.0 KiB");
        assert_eq!(format_bytes(47_815_065.6), "45.6 MiB");
        assert_eq!(format_value(3.0, Unit::Count), "3");
        assert_eq!(format_value(2.5, Unit::Count), "2.50");
        assert_eq!(format_value(1999.96, Unit::PerSec), "2000.0/s");
        assert_eq!(format_value(0.753, Unit::Cores), "0.75 cores");
    }

    fn report(scenario: &str, metrics: Vec<Metric>) -> Report {
        let mut r = Report {
            scenario: scenario.into(),
            target: TargetInfo {
                kind: "server".into(),
                url: "ws://127.0.0.1:1/ws".into(),
                pid: Some(7),
            },
            started_at_unix: 1,
            wall_secs: 2.0,
            params: serde_json::json!({}),
            metrics,
            figures: BTreeMap::new(),
            details: serde_json::json!({}),
            server_process: None,
            load_generator: None,
            load_generator_threads: 2,
            machine: None,
            notes: vec!["media does not exist yet".into()],
        };
        r.index_figures();
        r
    }

    #[test]
    fn tables_and_ratios() {
        let ours = report(
            "steady",
            vec![
                Metric::new("rate", "achieved", 1000.0, Unit::PerSec, Better::Higher),
                Metric::new("p99", "ack p99", 4000.0, Unit::Micros, Better::Lower),
                Metric::new("only_ours", "x", 1.0, Unit::Count, Better::Neither),
            ],
        );
        let relay = report(
            "steady",
            vec![
                Metric::new("rate", "achieved", 2000.0, Unit::PerSec, Better::Higher),
                Metric::new("p99", "ack p99", 0.0, Unit::Micros, Better::Lower),
            ],
        );
        assert_eq!(ours.figures.get("p99"), Some(&4000.0));
        let c = compare(ours.clone(), relay);
        assert_eq!(c.ratios.len(), 2);
        assert_eq!(c.ratios[0].ratio, Some(0.5));
        assert_eq!(c.ratios[1].ratio, None);
        let text = render_comparison(&c);
        assert!(text.contains("0.50×"), "{text}");
        assert!(text.contains("note: media does not exist yet"), "{text}");
        assert_eq!(text.matches("note:").count(), 1, "notes are not repeated");
        let single = render(&ours);
        assert!(single.contains("ack p99"));
        assert!(single.contains("4.00 ms"), "{single}");
        let t = table(&["a", "bb"], &[vec!["long cell".into(), "1".into()]]);
        assert_eq!(t, "a          bb\n-------------\nlong cell   1\n");
        let v = serde_json::to_value(&c).unwrap();
        for key in ["scenario", "compare", "ratios", "ours", "relay"] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert_eq!(
            default_report_path("idle", 5),
            PathBuf::from("target/load-reports/idle-5.json")
        );
    }
}
