//! Summaries of timing samples, thread CPU time and machine load, read from `/proc`.

use std::fmt::Write as _;
use std::fs;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// n, median, p95 and mean of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Summary {
    pub n: usize,
    pub median_ms: f64,
    pub p95_ms: f64,
    pub mean_ms: f64,
}

/// Median is the mean of the two middle values for an even count; p95 is nearest-rank
/// (the ⌈0.95·n⌉-th smallest), so with 30 samples it is the second largest.
pub(crate) fn summarize(samples: &[Duration]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median_ms = if !n.is_multiple_of(2) {
        ms[n / 2]
    } else {
        f64::midpoint(ms[n / 2 - 1], ms[n / 2])
    };
    let rank = (n * 95).div_ceil(100).max(1);
    let mean_ms = ms.iter().sum::<f64>() / ms.len() as f64;
    Some(Summary {
        n,
        median_ms,
        p95_ms: ms[rank - 1],
        mean_ms,
    })
}

/// Median in milliseconds, 0 for no samples.
pub(crate) fn median_ms(samples: &[Duration]) -> f64 {
    summarize(samples).map_or(0.0, |s| s.median_ms)
}

/// CPU time (user + system) the calling thread has used, and where it was read from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ThreadCpu {
    pub time: Duration,
    pub source: &'static str,
}

/// The calling thread's CPU time: nanoseconds from `/proc/thread-self/schedstat` when the
/// kernel keeps scheduler statistics, else clock ticks from `/proc/thread-self/stat`.
pub(crate) fn thread_cpu_time() -> Result<ThreadCpu> {
    if let Ok(text) = fs::read_to_string("/proc/thread-self/schedstat")
        && let Some(ns) = parse_schedstat(&text)
    {
        return Ok(ThreadCpu {
            time: Duration::from_nanos(ns),
            source: "/proc/thread-self/schedstat",
        });
    }
    let text = fs::read_to_string("/proc/thread-self/stat")
        .context("read /proc/thread-self/stat for the thread's CPU time")?;
    let ticks = parse_stat_cpu_ticks(&text)?;
    Ok(ThreadCpu {
        time: ticks_to_duration(ticks, clock_ticks_per_second()),
        source: "/proc/thread-self/stat",
    })
}

/// The first field of schedstat: time spent on the CPU, in nanoseconds.
fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// utime + stime (fields 14 and 15) of a `/proc/*/stat` line. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat_cpu_ticks(text: &str) -> Result<u64> {
    let Some((_, rest)) = text.rsplit_once(')') else {
        bail!("/proc/thread-self/stat has no `)` closing the command name: {text:?}");
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let field = |index: usize, name: &str| -> Result<u64> {
        fields
            .get(index)
            .with_context(|| format!("/proc/thread-self/stat has no {name} field"))?
            .parse::<u64>()
            .with_context(|| format!("/proc/thread-self/stat field {name} is not a number"))
    };
    Ok(field(11, "utime")? + field(12, "stime")?)
}

fn ticks_to_duration(ticks: u64, per_second: u64) -> Duration {
    let per_second = per_second.max(1);
    Duration::from_secs(ticks / per_second)
        + Duration::from_nanos((ticks % per_second) * 1_000_000_000 / per_second)
}

/// `getconf CLK_TCK`; 100, the value on every common Linux configuration, when unavailable.
fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// CPU time spent over an interval: by the whole machine (every process, every core, from
/// `/proc/stat`) and by one process (its threads, from `/proc/<pid>/stat`).
pub(crate) struct CpuMeter {
    pid: u32,
    machine: u64,
    process: u64,
    started: std::time::Instant,
}

/// What a [`CpuMeter`] measured.
#[derive(Clone, Copy, Default)]
pub(crate) struct CpuUse {
    /// Busy CPU time of the whole machine (user, system, interrupts; not idle or I/O wait).
    pub(crate) machine_ms: f64,
    pub(crate) process_ms: f64,
    pub(crate) wall_ms: f64,
}

impl CpuUse {
    /// Share of the machine's cores that were busy, 0 to 1.
    pub(crate) fn busy(&self) -> f64 {
        self.machine_ms / (self.wall_ms * cores()).max(1e-9)
    }
}

/// The cores this process may run on.
pub(crate) fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as f64
}

impl CpuMeter {
    pub(crate) fn start(pid: u32) -> Result<Self> {
        Ok(Self {
            pid,
            machine: machine_busy_ticks()?,
            process: process_ticks(pid)?,
            started: std::time::Instant::now(),
        })
    }

    pub(crate) fn finish(self) -> Result<CpuUse> {
        let per_second = clock_ticks_per_second();
        let to_ms = |ticks: u64| ticks_to_duration(ticks, per_second).as_secs_f64() * 1000.0;
        Ok(CpuUse {
            machine_ms: to_ms(machine_busy_ticks()?.saturating_sub(self.machine)),
            process_ms: to_ms(process_ticks(self.pid)?.saturating_sub(self.process)),
            wall_ms: self.started.elapsed().as_secs_f64() * 1000.0,
        })
    }
}

/// The busy ticks of all CPUs: the `cpu` line of `/proc/stat` without idle and iowait (guest
/// time is counted in user time already).
fn machine_busy_ticks() -> Result<u64> {
    let text = fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    parse_machine_busy(&text)
}

fn parse_machine_busy(text: &str) -> Result<u64> {
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("/proc/stat has no `cpu` line")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| {
            f.parse::<u64>()
                .context("/proc/stat: a cpu field is not a number")
        })
        .collect::<Result<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    if fields.len() < 8 {
        bail!(
            "/proc/stat: the cpu line has {} fields, expected 8 or more",
            fields.len()
        );
    }
    Ok(fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7])
}

fn process_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    parse_stat_cpu_ticks(&text)
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` prints them.
pub(crate) fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Formats milliseconds with one decimal (two below 1 ms, where one would round to nothing).
pub(crate) fn ms(value: f64) -> String {
    let mut s = String::new();
    if value < 1.0 {
        let _ = write!(s, "{value:.2}");
    } else {
        let _ = write!(s, "{value:.1}");
    }
    s
}

/// Thousands separated by commas, as the targets are stated (`10,000 edits/s`).
pub(crate) fn thousands(value: f64) -> String {
    // Rates here are far below 2^53, so the rounded value is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let whole = value.round().max(0.0) as u64;
    let digits = whole.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_busy_time_leaves_out_idle_and_io_wait() {
        let stat = "cpu  100 2 30 5000 40 5 6 7 0 0\ncpu0 50 1 15 2500 20 2 3 3 0 0\n";
        assert_eq!(parse_machine_busy(stat).unwrap(), 100 + 2 + 30 + 5 + 6 + 7);
        assert!(parse_machine_busy("cpu  1 2 3\n").is_err());
        assert!(parse_machine_busy("intr 5\n").is_err());
    }

    fn millis(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn median_of_odd_count_is_the_middle_value() {
        let s = summarize(&millis(&[30, 10, 20])).unwrap();
        assert_eq!(s.n, 3);
        assert!((s.median_ms - 20.0).abs() < 1e-9);
        assert!((s.mean_ms - 20.0).abs() < 1e-9);
    }

    #[test]
    fn median_of_even_count_is_the_mean_of_the_middle_two() {
        let s = summarize(&millis(&[40, 10, 20, 30])).unwrap();
        assert!((s.median_ms - 25.0).abs() < 1e-9);
    }

    #[test]
    fn p95_is_nearest_rank() {
        // 30 samples 1..=30 ms: ⌈28.5⌉ = 29th smallest.
        let samples: Vec<u64> = (1..=30).rev().collect();
        let s = summarize(&millis(&samples)).unwrap();
        assert!((s.p95_ms - 29.0).abs() < 1e-9);
        // 20 samples: the 19th.
        let samples: Vec<u64> = (1..=20).collect();
        assert!((summarize(&millis(&samples)).unwrap().p95_ms - 19.0).abs() < 1e-9);
        // One sample is its own p95.
        assert!((summarize(&millis(&[7])).unwrap().p95_ms - 7.0).abs() < 1e-9);
    }

    #[test]
    fn no_samples_have_no_summary() {
        assert_eq!(summarize(&[]), None);
        assert!(median_ms(&[]).abs() < 1e-12);
    }

    #[test]
    fn stat_cpu_ticks_are_counted_after_the_command_name() {
        // A command name with spaces and a `)` must not shift the fields.
        let line = "4242 (tug bench) x) R 1 2 3 4 5 6 7 8 9 10 250 17 0 0 20 0 1 0 100 0 0\n";
        assert_eq!(parse_stat_cpu_ticks(line).unwrap(), 267);
        assert!(parse_stat_cpu_ticks("4242 tug R 1").is_err());
        assert!(parse_stat_cpu_ticks("4242 (tug) R 1 2").is_err());
    }

    #[test]
    fn schedstat_gives_nanoseconds_on_cpu() {
        assert_eq!(parse_schedstat("123456789 5000 12\n"), Some(123_456_789));
        assert_eq!(parse_schedstat(""), None);
    }

    #[test]
    fn ticks_convert_exactly() {
        assert_eq!(ticks_to_duration(250, 100), Duration::from_millis(2500));
        assert_eq!(ticks_to_duration(1, 250), Duration::from_millis(4));
    }

    #[test]
    fn this_thread_uses_cpu_time() {
        let before = thread_cpu_time().unwrap();
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(60) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = thread_cpu_time().unwrap();
        assert!(after.time > before.time, "{before:?} -> {after:?}");
    }

    #[test]
    fn numbers_print_as_the_targets_are_stated() {
        assert_eq!(thousands(10_000.0), "10,000");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(ms(46.04), "46.0");
        assert_eq!(ms(0.123), "0.12");
    }
}
