//! Readings of a process from `/proc` (Linux): CPU seconds from `/proc/PID/stat`, resident memory
//! (`VmRSS`) and its peak (`VmHWM`) from `/proc/PID/status`, bytes it caused to be written to
//! disk from `/proc/PID/io`, and a sampler that takes them every second.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Clock ticks per second of `/proc/PID/stat` times (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
pub const CLK_TCK: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Snapshot {
    /// User plus system CPU time since the process started, in seconds.
    pub cpu_secs: f64,
    /// Resident memory now, in bytes.
    pub rss_bytes: u64,
    /// Peak resident memory since the process started, in bytes.
    pub hwm_bytes: u64,
    /// Bytes the process caused to be sent to the storage layer since it started (`write_bytes`
    /// of `/proc/PID/io`); `None` where that file cannot be read.
    pub disk_write_bytes: Option<u64>,
}

/// A snapshot taken `t_secs` after the sampler started.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the sampler started.
    pub t_secs: f64,
    /// The reading.
    #[serde(flatten)]
    pub snapshot: Snapshot,
}

/// `utime + stime` in clock ticks from the text of `/proc/PID/stat`.
///
/// The command name (field 2) is in parentheses and may hold spaces and parentheses itself, so
/// fields are counted from the last `)`: field 3 (state) is the first after it, utime is field 14
/// and stime field 15.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The value of a `Key:   1234 kB` line of `/proc/PID/status`, in bytes.
pub fn parse_status_bytes(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let mut parts = rest.split_whitespace();
        let value: u64 = parts.next()?.parse().ok()?;
        let factor = match parts.next() {
            Some("kB") | Some("KB") => 1024,
            Some("mB") | Some("MB") => 1024 * 1024,
            None => 1,
            Some(_) => return None,
        };
        Some(value * factor)
    })
}

/// A snapshot from the texts of `/proc/PID/stat` and `/proc/PID/status`.
pub fn parse_snapshot(stat: &str, status: &str) -> Option<Snapshot> {
    let ticks = parse_stat_cpu_ticks(stat)?;
    let rss_bytes = parse_status_bytes(status, "VmRSS")?;
    let hwm_bytes = parse_status_bytes(status, "VmHWM").unwrap_or(rss_bytes);
    Some(Snapshot {
        cpu_secs: ticks as f64 / CLK_TCK,
        rss_bytes,
        hwm_bytes,
        disk_write_bytes: None,
    })
}

/// The `write_bytes: 1234` line of `/proc/PID/io`.
pub fn parse_io_write_bytes(io: &str) -> Option<u64> {
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:")?.trim().parse().ok())
}

/// Reads a process (`pid`), or this process when `pid` is `None`.
pub fn read(pid: Option<u32>) -> std::io::Result<Snapshot> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_owned(),
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat"))?;
    let status = std::fs::read_to_string(format!("{dir}/status"))?;
    let mut snapshot = parse_snapshot(&stat, &status).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("cannot parse {dir}/stat or {dir}/status"),
        )
    })?;
    snapshot.disk_write_bytes = std::fs::read_to_string(format!("{dir}/io"))
        .ok()
        .and_then(|io| parse_io_write_bytes(&io));
    Ok(snapshot)
}

/// Takes a snapshot of a process every interval in a background task.
#[derive(Debug)]
pub struct Sampler {
    pid: Option<u32>,
    started: Instant,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling `pid` (this process when `None`) every `every`, with a first sample now.
    pub fn start(pid: Option<u32>, every: Duration) -> Sampler {
        let started = Instant::now();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (stop_tx, mut stop_rx) = oneshot::channel();
        let task = {
            let samples = Arc::clone(&samples);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            if let Ok(snapshot) = read(pid) {
                                let t_secs = started.elapsed().as_secs_f64();
                                lock(&samples).push(Sample { t_secs, snapshot });
                            }
                        }
                        _ = &mut stop_rx => break,
                    }
                }
            })
        };
        Sampler {
            pid,
            started,
            samples,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// The process sampled.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Reads the process now and records it as a sample too.
    pub fn sample_now(&self) -> Option<Snapshot> {
        let snapshot = read(self.pid).ok()?;
        let t_secs = self.started.elapsed().as_secs_f64();
        lock(&self.samples).push(Sample { t_secs, snapshot });
        Some(snapshot)
    }

    /// The samples taken so far, in time order.
    pub fn samples(&self) -> Vec<Sample> {
        let mut samples = lock(&self.samples).clone();
        samples.sort_by(|a, b| a.t_secs.total_cmp(&b.t_secs));
        samples
    }

    /// Samples taken at or after `since` seconds after the start.
    pub fn samples_since(&self, since: f64) -> Vec<Sample> {
        self.samples()
            .into_iter()
            .filter(|s| s.t_secs >= since)
            .collect()
    }

    /// Seconds since the sampler started.
    pub fn elapsed_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Stops sampling (after one last sample) and returns every sample.
    pub async fn stop(mut self) -> Vec<Sample> {
        let _ = self.sample_now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.samples()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a series of samples says about a process.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessSummary {
    /// The process id.
    pub pid: Option<u32>,
    /// CPU seconds used between the first and the last sample.
    pub cpu_secs: f64,
    /// Wall seconds between the first and the last sample.
    pub wall_secs: f64,
    /// CPU seconds per wall second (1.0 = one core busy).
    pub cpu_cores: f64,
    /// Resident memory at the first sample, bytes.
    pub rss_first_bytes: u64,
    /// Resident memory at the last sample, bytes.
    pub rss_last_bytes: u64,
    /// The largest resident memory sampled, bytes.
    pub rss_max_sampled_bytes: u64,
    /// The kernel's peak resident memory (`VmHWM`) at the last sample, bytes.
    pub peak_rss_bytes: u64,
    /// How many samples were taken.
    pub samples: usize,
}

/// Summarises samples; `None` when there are none.
pub fn summarize(pid: Option<u32>, samples: &[Sample]) -> Option<ProcessSummary> {
    let first = samples.first()?;
    let last = samples.last()?;
    let cpu_secs = (last.snapshot.cpu_secs - first.snapshot.cpu_secs).max(0.0);
    let wall_secs = (last.t_secs - first.t_secs).max(0.0);
    Some(ProcessSummary {
        pid,
        cpu_secs,
        wall_secs,
        cpu_cores: if wall_secs > 0.0 {
            cpu_secs / wall_secs
        } else {
            0.0
        },
        rss_first_bytes: first.snapshot.rss_bytes,
        rss_last_bytes: last.snapshot.rss_bytes,
        rss_max_sampled_bytes: samples
            .iter()
            .map(|s| s.snapshot.rss_bytes)
            .max()
            .unwrap_or(0),
        peak_rss_bytes: samples
            .iter()
            .map(|s| s.snapshot.hwm_bytes)
            .max()
            .unwrap_or(0),
        samples: samples.len(),
    })
}

/// How resident memory moved over a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryTrend {
    /// Length of the first and last windows compared, seconds.
    pub window_secs: f64,
    /// Average resident memory over the first window, bytes.
    pub first_window_avg_bytes: f64,
    /// Average resident memory over the last window, bytes.
    pub last_window_avg_bytes: f64,
    /// Last window minus first window, bytes.
    pub growth_bytes: f64,
    /// Least-squares slope of resident memory over all samples, bytes per second.
    pub slope_bytes_per_sec: f64,
    /// The slope extrapolated to an hour, MiB.
    pub slope_mib_per_hour: f64,
}

/// Compares the average RSS of the first and last `window_secs` of the samples and fits a line.
pub fn memory_trend(samples: &[Sample], window_secs: f64) -> Option<MemoryTrend> {
    let first = samples.first()?.t_secs;
    let last = samples.last()?.t_secs;
    let avg = |lo: f64, hi: f64| {
        let picked: Vec<f64> = samples
            .iter()
            .filter(|s| s.t_secs >= lo && s.t_secs <= hi)
            .map(|s| s.snapshot.rss_bytes as f64)
            .collect();
        (!picked.is_empty()).then(|| picked.iter().sum::<f64>() / picked.len() as f64)
    };
    let first_avg = avg(first, first + window_secs)?;
    let last_avg = avg(last - window_secs, last)?;
    let points: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| (s.t_secs, s.snapshot.rss_bytes as f64))
        .collect();
    let slope = linear_slope(&points).unwrap_or(0.0);
    Some(MemoryTrend {
        window_secs,
        first_window_avg_bytes: first_avg,
        last_window_avg_bytes: last_avg,
        growth_bytes: last_avg - first_avg,
        slope_bytes_per_sec: slope,
        slope_mib_per_hour: slope * 3600.0 / (1024.0 * 1024.0),
    })
}

/// The least-squares slope of `y` over `x`; `None` with fewer than two distinct `x`.
pub fn linear_slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    Some(sxy / sxx)
}

/// The whole machine's CPU time from the first line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct MachineCpu {
    /// user + nice + system + irq + softirq + steal.
    pub busy_ticks: u64,
    /// Time waiting for I/O.
    pub iowait_ticks: u64,
    /// busy + idle + iowait.
    pub total_ticks: u64,
}

/// Parses the `cpu` line of `/proc/stat`.
pub fn parse_machine_cpu(stat: &str) -> Option<MachineCpu> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<Vec<u64>>>()?;
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    let idle = get(3);
    let iowait = get(4);
    Some(MachineCpu {
        busy_ticks: busy,
        iowait_ticks: iowait,
        total_ticks: busy + idle + iowait,
    })
}

/// A counter of the `TcpExt` section of `/proc/net/netstat` (a line of names, then a line of
/// values).
pub fn parse_tcp_ext(netstat: &str, name: &str) -> Option<u64> {
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let index = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(index)?.parse().ok()
}

/// One reading of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MachineReading {
    /// CPU times.
    pub cpu: MachineCpu,
    /// Dirty page cache, bytes.
    pub dirty_bytes: u64,
    /// Times a listen queue overflowed (TcpExt ListenOverflows).
    pub listen_overflows: u64,
    /// SYNs to listening sockets dropped (TcpExt ListenDrops).
    pub listen_drops: u64,
}

/// Reads the machine's CPU times, dirty page cache (`/proc/meminfo`) and listen-queue drops
/// (`/proc/net/netstat`).
pub fn read_machine() -> Option<MachineReading> {
    let cpu = parse_machine_cpu(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let dirty_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| parse_status_bytes(&m, "Dirty"))
        .unwrap_or(0);
    let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    Some(MachineReading {
        cpu,
        dirty_bytes,
        listen_overflows: parse_tcp_ext(&netstat, "ListenOverflows").unwrap_or(0),
        listen_drops: parse_tcp_ext(&netstat, "ListenDrops").unwrap_or(0),
    })
}

/// What the whole machine did during a run, to tell whether something else disturbed it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MachineSummary {
    /// CPUs online.
    pub cpus: usize,
    /// Busy CPU time per wall second over the run, all processes.
    pub busy_cores: f64,
    /// I/O wait per wall second.
    pub iowait_cores: f64,
    /// Busy cores not used by the target or this load generator.
    pub other_cores: f64,
    /// Dirty page cache when the run started (a large value means writeback competes with the
    /// target's fsyncs).
    pub dirty_at_start_bytes: u64,
    /// Listen-queue overflows during the run (connection attempts the kernel dropped; the client
    /// retries its SYN after a second).
    pub listen_overflows: u64,
    /// SYNs to listening sockets dropped during the run.
    pub listen_drops: u64,
}

/// Summarises the machine between two readings `wall_secs` apart.
pub fn machine_summary(
    before: MachineReading,
    after: MachineReading,
    wall_secs: f64,
    ours_cpu_secs: f64,
) -> MachineSummary {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let secs = wall_secs.max(1e-9);
    let busy = after.cpu.busy_ticks.saturating_sub(before.cpu.busy_ticks) as f64 / CLK_TCK;
    let iowait = after
        .cpu
        .iowait_ticks
        .saturating_sub(before.cpu.iowait_ticks) as f64
        / CLK_TCK;
    MachineSummary {
        cpus,
        busy_cores: busy / secs,
        iowait_cores: iowait / secs,
        other_cores: ((busy - ours_cpu_secs) / secs).max(0.0),
        dirty_at_start_bytes: before.dirty_bytes,
        listen_overflows: after
            .listen_overflows
            .saturating_sub(before.listen_overflows),
        listen_drops: after.listen_drops.saturating_sub(before.listen_drops),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tlianxin\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\n\
        VmPeak:\t  812345 kB\nVmSize:\t  802345 kB\nVmHWM:\t   65432 kB\nVmRSS:\t   54321 kB\n\
        RssAnon:\t   40000 kB\nThreads:\t7\n";

    // A command name with a space and a parenthesis, as a process may choose.
    const STAT: &str = "4242 (lian xin) srv) S 1 4242 4242 0 -1 4194560 1234 0 5 0 \
        250 75 0 0 20 0 7 0 123456 802345000 13580 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn status_lines_give_bytes() {
        assert_eq!(parse_status_bytes(STATUS, "VmRSS"), Some(54321 * 1024));
        assert_eq!(parse_status_bytes(STATUS, "VmHWM"), Some(65432 * 1024));
        assert_eq!(parse_status_bytes(STATUS, "Threads"), Some(7));
        assert_eq!(parse_status_bytes(STATUS, "VmSwap"), None);
        // "VmRSS" must not match "VmRSSx" or a prefix of another key.
        assert_eq!(parse_status_bytes("VmRSSx:\t1 kB\n", "VmRSS"), None);
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        assert_eq!(parse_stat_cpu_ticks(STAT), Some(325));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1 2"), None);
        let snap = parse_snapshot(STAT, STATUS).unwrap();
        assert!((snap.cpu_secs - 3.25).abs() < 1e-9);
        assert_eq!(snap.rss_bytes, 54321 * 1024);
        assert_eq!(snap.hwm_bytes, 65432 * 1024);
    }

    #[test]
    fn io_gives_the_bytes_written_to_storage() {
        let io = "rchar: 100\nwchar: 5000\nsyscr: 3\nsyscw: 4\nread_bytes: 0\n\
                  write_bytes: 4096\ncancelled_write_bytes: 0\n";
        // `write_bytes`, not `cancelled_write_bytes` nor `wchar`.
        assert_eq!(parse_io_write_bytes(io), Some(4096));
        assert_eq!(parse_io_write_bytes("wchar: 5\n"), None);
    }

    #[test]
    fn machine_cpu_line() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n";
        let m = parse_machine_cpu(stat).unwrap();
        assert_eq!(m.busy_ticks, 161);
        assert_eq!(m.iowait_ticks, 20);
        assert_eq!(m.total_ticks, 1181);
        let later = MachineCpu {
            busy_ticks: 361,
            iowait_ticks: 70,
            total_ticks: 1581,
        };
        let before = MachineReading {
            cpu: m,
            dirty_bytes: 4096,
            listen_overflows: 3,
            listen_drops: 3,
        };
        let after = MachineReading {
            cpu: later,
            dirty_bytes: 0,
            listen_overflows: 10,
            listen_drops: 12,
        };
        let s = machine_summary(before, after, 2.0, 1.5);
        assert_eq!((s.listen_overflows, s.listen_drops), (7, 9));
        assert!((s.busy_cores - 1.0).abs() < 1e-9);
        assert!((s.iowait_cores - 0.25).abs() < 1e-9);
        assert!((s.other_cores - 0.25).abs() < 1e-9);
        assert_eq!(s.dirty_at_start_bytes, 4096);
        assert!(read_machine().is_some());
        let netstat = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 5 6\n\
            IpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(parse_tcp_ext(netstat, "ListenOverflows"), Some(5));
        assert_eq!(parse_tcp_ext(netstat, "ListenDrops"), Some(6));
        assert_eq!(parse_tcp_ext(netstat, "Nope"), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let snap = read(None).unwrap();
        assert!(snap.rss_bytes > 0);
        assert!(snap.hwm_bytes >= snap.rss_bytes);
    }

    fn sample(t: f64, rss: u64, cpu: f64) -> Sample {
        Sample {
            t_secs: t,
            snapshot: Snapshot {
                cpu_secs: cpu,
                rss_bytes: rss,
                hwm_bytes: rss + 10,
                disk_write_bytes: None,
            },
        }
    }

    #[test]
    fn slope_and_trend_of_a_steady_climb() {
        // 1000 bytes per second, from 1 MB.
        let samples: Vec<Sample> = (0..=120)
            .map(|t| sample(t as f64, 1_000_000 + 1000 * t, t as f64 * 0.5))
            .collect();
        let trend = memory_trend(&samples, 60.0).unwrap();
        assert!((trend.slope_bytes_per_sec - 1000.0).abs() < 1e-6);
        assert!((trend.first_window_avg_bytes - 1_030_000.0).abs() < 1e-6);
        assert!((trend.last_window_avg_bytes - 1_090_000.0).abs() < 1e-6);
        assert!((trend.growth_bytes - 60_000.0).abs() < 1e-6);
        let summary = summarize(Some(1), &samples).unwrap();
        assert!((summary.cpu_secs - 60.0).abs() < 1e-9);
        assert!((summary.cpu_cores - 0.5).abs() < 1e-9);
        assert_eq!(summary.rss_max_sampled_bytes, 1_120_000);
        assert_eq!(summary.peak_rss_bytes, 1_120_010);
        assert_eq!(linear_slope(&[(1.0, 1.0)]), None);
        assert_eq!(linear_slope(&[(1.0, 1.0), (1.0, 2.0)]), None);
    }
}
