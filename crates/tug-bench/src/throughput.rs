//! The throughput benchmark: how many commits per second tug lands against the physical floor of
//! landing commits at all, both measured in one run on one machine over smart HTTP on loopback.
//!
//! * floor — B chained commits (each a one-line tag bump of a different service's kustomization,
//!   made with `git fast-import` before the clock starts), then ONE timed `git push` of all of
//!   them to a fresh copy of the fixture. B / push time is the most commits per second any tool
//!   could land with one push of B commits, if it spent no time of its own. Median of 3 per B.
//! * tug — a fresh `tug server` (auth none, SQLite): closed loops of 1, 64 and 256 clients, open
//!   loops at fixed offered rates, and an overload run offering 4 × the measured capacity (the
//!   largest closed loop's rate). Refusals (429, 503) are counted apart from other failures, and
//!   afterwards every acknowledged job is looked up by its `Tug-Request` trailer in the served
//!   repository.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tug_testkit::{Scratch, TugServer, git_command, run_git, trailer_values_on_all_branches};

use crate::fixture::{BRANCH, Fixture, ImageBump, path_str};
use crate::load::{
    Counters, LoadRun, RssSampler, deploy, deploy_body, memory_kib, parse_counters, run_clients,
};
use crate::server::batch_log_summary;
use crate::servers::{PushTime, ServedRepo, SmartHttpServer};
use crate::stats::{CpuMeter, CpuUse, load_average, median_ms, ms, thousands};
use crate::targets::{FLOOR_ALLOWANCE_MS, FLOOR_FACTOR, TARGET_RSS_MIB};

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub fixtures_dir: PathBuf,
    pub fixture: String,
    /// The `tug` binary (release build).
    pub tug: PathBuf,
    /// Commits per floor push.
    pub floor_batches: Vec<usize>,
    /// Floor pushes per batch size (the median is reported).
    pub floor_repeat: usize,
    /// Concurrent client counts of the closed-loop runs; the largest gives the capacity.
    pub clients: Vec<usize>,
    pub requests_per_client: usize,
    pub batch_max: u32,
    /// `limits.max_waiting_streams` of the server; `None`: the server's default.
    pub max_waiting_streams: Option<u32>,
    /// Offered rates of the open-loop runs (requests/s).
    pub open_rates: Vec<f64>,
    pub open_seconds: f64,
    /// The overload run offers this many times the capacity.
    pub overload_factor: f64,
    /// Length of the overload run (0 skips it).
    pub overload_seconds: f64,
    /// Requests of the sustained run (0 skips it).
    pub sustained_requests: usize,
    /// Where the server's log is copied when the run ends.
    pub log_copy: Option<PathBuf>,
    /// Every push to a served copy (floor and tug alike) waits this long in the remote's
    /// `pre-receive` hook: a git server farther away than loopback.
    pub remote_delay: Duration,
    /// When the served copies collect their packs.
    pub remote_gc: RemoteGc,
}

/// When the remote's repository is repacked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RemoteGc {
    /// Only between rows, outside the clock, as a hosted git server schedules its housekeeping
    /// off the push path (GitLab's Gitaly runs every git command with `gc.auto=0`).
    BetweenRows,
    /// Also whenever a push leaves more than `gc.autoPackLimit` packs: `receive-pack`'s
    /// default `gc --auto`, as on a self-hosted server left at git's defaults.
    OnPush,
}

// Targets.
const FLOOR_SHARE: f64 = 0.8;
const TARGET_P99_64_MS: f64 = 500.0;
const TARGET_OPEN_RATE: f64 = 1_000.0;
const TARGET_OPEN_P99_MS: f64 = 1_000.0;
/// How far an open loop's measured rate may fall below the offered one and still count as
/// keeping up: batches of a few hundred answers differ in length by tens of milliseconds, which
/// moves the slope through a window of seconds by a fraction of a percent.
const OPEN_RATE_RESOLUTION: f64 = 0.01;
/// A long run ends as fast as it began: its last tenth at least this share of its first.
const SUSTAINED_SHARE: f64 = 0.9;
/// Image bumps read from the fixture (at most): more than the largest batch, so one push never
/// edits a file twice on a fixture that has this many overlays.
const BUMPS: usize = 1_024;
/// An open-loop request gives up after this long; a stuck server fails it, not the run.
const OPEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

struct FloorRow {
    commits: usize,
    pushes: Vec<Duration>,
    /// The machine's CPU time during each push (git's client and server, the web server).
    cpu: Vec<CpuUse>,
}

impl FloorRow {
    fn median_ms(&self) -> f64 {
        median_ms(&self.pushes)
    }

    fn commits_per_s(&self) -> f64 {
        self.commits as f64 * 1000.0 / self.median_ms().max(1e-9)
    }
}

/// One request as a row keeps it.
struct Sample {
    latency: Duration,
    succeeded: bool,
    status: Option<u16>,
    job_id: Option<String>,
    /// When the answer was complete, from the start of the run (open loops only).
    done_at: Option<Duration>,
    /// How late the request was sent against its schedule (open loops only).
    send_lag: Option<Duration>,
}

enum Kind {
    Closed { clients: usize },
    Open { offered: f64 },
    Overload { offered: f64 },
}

struct TugRow {
    kind: Kind,
    samples: Vec<Sample>,
    wall: Duration,
    first_error: Option<String>,
    counters: Counters,
    peak_rss_kib: u64,
    cpu: CpuUse,
}

impl TugRow {
    fn ok(&self) -> usize {
        self.samples.iter().filter(|s| s.succeeded).count()
    }

    fn with_status(&self, code: u16) -> usize {
        self.samples
            .iter()
            .filter(|s| s.status == Some(code))
            .count()
    }

    /// Neither succeeded nor refused: failed jobs, transport errors, other statuses.
    fn other_failures(&self) -> usize {
        self.samples
            .iter()
            .filter(|s| !s.succeeded && !matches!(s.status, Some(429 | 503)))
            .count()
    }

    /// Acknowledged requests per second. Closed loop: succeeded / wall. Open loop: the rate
    /// while load was offered, after its first tenth: the slope of a least-squares line through
    /// the running count of answers against time. Leaving out the start and the drain keeps the
    /// first batch's fill and the last batch's wait out of it; a line through every answer,
    /// rather than a count between two of them, keeps a batching server's bursts from skewing
    /// it (a staircase of equal steps has the slope of its steps). A server that falls behind
    /// answers at its own pace; one that refuses shows fewer answers.
    fn acked_rate(&self) -> f64 {
        let mut done: Vec<Duration> = self
            .samples
            .iter()
            .filter(|s| s.succeeded)
            .filter_map(|s| s.done_at)
            .collect();
        let offered = match self.kind {
            Kind::Closed { .. } => None,
            Kind::Open { offered } | Kind::Overload { offered } => Some(offered),
        };
        let fallback = self.ok() as f64 / self.wall.as_secs_f64().max(1e-9);
        let Some(offered) = offered else {
            return fallback;
        };
        done.sort();
        let offering = Duration::from_secs_f64(self.samples.len() as f64 / offered.max(1e-9));
        let window: Vec<f64> = done
            .iter()
            .filter(|d| **d >= offering / 10 && **d <= offering)
            .map(Duration::as_secs_f64)
            .collect();
        slope(&window).unwrap_or(fallback)
    }

    /// Latency percentile over every request (refused ones included: they were answered).
    fn percentile_ms(&self, p: usize) -> f64 {
        percentile_ms(self.samples.iter().map(|s| s.latency), p)
    }

    fn ok_percentile_ms(&self, p: usize) -> f64 {
        percentile_ms(
            self.samples
                .iter()
                .filter(|s| s.succeeded)
                .map(|s| s.latency),
            p,
        )
    }

    fn commits_per_push(&self) -> f64 {
        self.counters.batched_requests / self.counters.batches.max(1.0)
    }

    fn label(&self) -> String {
        match self.kind {
            Kind::Closed { clients: 1 } => "tug closed loop, 1 client".to_owned(),
            Kind::Closed { clients } => format!("tug closed loop, {clients} clients"),
            Kind::Open { offered } => format!("tug open loop, {offered:.0}/s"),
            Kind::Overload { offered } => format!("tug overload, {offered:.0}/s"),
        }
    }
}

struct Exactly {
    acked: usize,
    lost: usize,
    lost_overload: usize,
    duplicated: usize,
    gained: usize,
    merges: usize,
}

pub(crate) struct Report {
    header: String,
    floor: Vec<FloorRow>,
    rows: Vec<TugRow>,
    capacity: f64,
    hwm_kib: u64,
    exactly: Exactly,
    batches: String,
    overload_factor: f64,
    sustained: Option<Sustained>,
}

/// A long closed-loop run: does landing slow down as the mirror and the remote grow?
struct Sustained {
    clients: usize,
    requests: usize,
    ok: usize,
    /// Acknowledged requests/s over the first and the last tenth of the answers.
    first_rate: f64,
    last_rate: f64,
    /// How long the remote took to answer a push, on average over the first and the last
    /// tenth of the run's pushes.
    remote_push_ms: Option<(f64, f64)>,
    /// Milliseconds per acknowledged request, in the first and the last tenth, during which the
    /// remote was answering none of tug's pushes: tug's own part of the time, which the remote
    /// taking longer to answer does not change.
    outside_remote_ms: Option<(f64, f64)>,
    /// Packs in the server's mirror when the run ended, and in the remote.
    mirror_packs: usize,
    remote_packs: usize,
    /// The floor of 64 commits on the pristine fixture, and on the remote as the run left it.
    floor_at_start: Option<f64>,
    floor_at_end: Duration,
    /// What the remote's housekeeping ran, when the run had tenths to compare.
    housekeeping: Option<Housekeeping>,
}

/// The remote's housekeeping during the sustained run, from its [`HOUSEKEEPING_LOG`].
struct Housekeeping {
    runs: usize,
    total_s: f64,
    longest_s: f64,
    /// Seconds of the first and the last tenth during which a housekeeping ran, and how long
    /// each tenth was.
    in_first_s: f64,
    first_s: f64,
    in_last_s: f64,
    last_s: f64,
    /// The remote's packs after a push, averaged over the first and the last tenth of the
    /// pushes, and the most it held.
    packs_first: f64,
    packs_last: f64,
    packs_most: usize,
}

/// A log the served copy's hooks write; empty when they wrote none.
fn read_log(path: &std::path::Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Reads the served copy's [`HOUSEKEEPING_LOG`], lays its runs over the tenths `first` and
/// `last`, and sums up its [`PACKS_LOG`].
fn remote_housekeeping(repo: &ServedRepo, first: Span, last: Span) -> Result<Housekeeping> {
    let log = repo.path.join(HOUSEKEEPING_LOG);
    let runs = read_log(&log)?
        .lines()
        .map(|line| {
            let mut times = line.split_whitespace().map(str::parse::<f64>);
            match (times.next(), times.next()) {
                (Some(Ok(from)), Some(Ok(to))) if to >= from => Ok((from, to)),
                _ => bail!("{}: not a housekeeping run: {line:?}", log.display()),
            }
        })
        .collect::<Result<Vec<(f64, f64)>>>()?;
    // The log's times are the wall clock's; the tenths are the monotonic clock's.
    let wall = wall_clock()?;
    let overlap = |(from, to): Span| {
        let (from, to) = (wall(from), wall(to));
        runs.iter()
            .map(|&(a, b)| (b.min(to) - a.max(from)).max(0.0))
            // Not `sum`, which starts at -0.0 and prints an empty sum as "-0.0".
            .fold(0.0, |all, s| all + s)
    };
    let packs_log = repo.path.join(PACKS_LOG);
    let packs = read_log(&packs_log)?
        .lines()
        .map(|line| {
            line.split_whitespace()
                .nth(1)
                .and_then(|n| n.parse::<usize>().ok())
                .with_context(|| format!("{}: not a push's packs: {line:?}", packs_log.display()))
        })
        .collect::<Result<Vec<usize>>>()?;
    let tenth = packs.len() / 10;
    let mean = |p: &[usize]| {
        if p.is_empty() {
            0.0
        } else {
            p.iter().sum::<usize>() as f64 / p.len() as f64
        }
    };
    Ok(Housekeeping {
        packs_first: mean(&packs[..tenth]),
        packs_last: mean(&packs[packs.len() - tenth..]),
        packs_most: packs.iter().copied().max().unwrap_or(0),
        runs: runs.len(),
        total_s: runs.iter().map(|(a, b)| b - a).fold(0.0, |all, s| all + s),
        longest_s: runs.iter().map(|(a, b)| b - a).fold(0.0, f64::max),
        in_first_s: overlap(first),
        first_s: first.1.duration_since(first.0).as_secs_f64(),
        in_last_s: overlap(last),
        last_s: last.1.duration_since(last.0).as_secs_f64(),
    })
}

/// Turns an instant of the monotonic clock into seconds since the epoch, for laying spans of
/// the run over the times other processes logged.
fn wall_clock() -> Result<impl Fn(Instant) -> f64> {
    let now = Instant::now();
    let wall_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs_f64();
    Ok(move |at: Instant| wall_now - now.duration_since(at).as_secs_f64())
}

/// Seconds from `from` to `to` (since the epoch) during which the remote was answering at
/// least one of `pushes`: the union of their answers' intervals, cut to the span.
fn remote_busy_within(pushes: &[PushTime], from: f64, to: f64) -> f64 {
    let mut intervals: Vec<(f64, f64)> = pushes
        .iter()
        .map(|p| ((p.ended - p.secs).max(from), p.ended.min(to)))
        .filter(|(a, b)| a < b)
        .collect();
    intervals.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut busy = 0.0;
    let mut covered_to = f64::NEG_INFINITY;
    for (a, b) in intervals {
        let a = a.max(covered_to);
        if b > a {
            busy += b - a;
            covered_to = b;
        }
    }
    busy
}

/// The slope, in answers per second, of the least-squares line through (time of answer k, k)
/// for answers sorted by time; none for fewer than two distinct times.
fn slope(times: &[f64]) -> Option<f64> {
    if times.len() < 2 {
        return None;
    }
    let n = times.len() as f64;
    let mean_t = times.iter().sum::<f64>() / n;
    let mean_k = (n - 1.0) / 2.0;
    let (mut cov, mut var) = (0.0, 0.0);
    for (k, t) in times.iter().enumerate() {
        cov += (t - mean_t) * (k as f64 - mean_k);
        var += (t - mean_t) * (t - mean_t);
    }
    (var > 0.0).then(|| cov / var)
}

/// Requests/s over the first and the last tenth of `done` (completion times, any order), each
/// measured from the answer before the tenth began.
fn tenths(done: &mut [Instant]) -> (f64, f64) {
    match tenth_windows(done) {
        Some(((first_from, first_to), (last_from, last_to), tenth)) => {
            let rate = |from: Instant, to: Instant| {
                let secs = to.duration_since(from).as_secs_f64();
                if secs > 0.0 { tenth as f64 / secs } else { 0.0 }
            };
            (rate(first_from, first_to), rate(last_from, last_to))
        }
        None => (0.0, 0.0),
    }
}

/// The first and the last tenth of `done` (sorted here) as spans of time, and the answers in a
/// tenth; none for fewer than ten answers.
fn tenth_windows(done: &mut [Instant]) -> Option<(Span, Span, usize)> {
    done.sort_unstable();
    let n = done.len();
    let tenth = n / 10;
    (tenth > 0).then(|| {
        (
            (done[0], done[tenth]),
            (done[n - 1 - tenth], done[n - 1]),
            tenth,
        )
    })
}

/// From one instant to a later one.
type Span = (Instant, Instant);

/// The means of the first and the last tenth of `values`; none for fewer than ten.
fn first_and_last_tenth_mean(values: &[f64]) -> Option<(f64, f64)> {
    let tenth = values.len() / 10;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    (tenth > 0).then(|| {
        (
            mean(&values[..tenth]),
            mean(&values[values.len() - tenth..]),
        )
    })
}

/// Between rows, outside the clock: waits for the `gc --auto` that the last pushes may have
/// started in the background (receive-pack's default), then collects the remote into one pack.
/// Each row then starts on a remote like the floor's fresh copies, instead of sharing the two
/// cores with a repack of everything the rows before it pushed. Within a row the remote's own
/// `gc --auto` still runs, as it would on a real server.
fn compact_remote(repo: &ServedRepo) -> Result<()> {
    let started = Instant::now();
    wait_for_remote_housekeeping(repo)?;
    let waited = started.elapsed();
    run_git(
        Some(&repo.path),
        &["-c", "gc.autoDetach=false", "gc", "--quiet"],
    )
    .context("collect the served repository into one pack between rows")?;
    eprintln!(
        "remote: waited {:.1} s for its gc, then collected it in {:.1} s ({} pack)",
        waited.as_secs_f64(),
        (started.elapsed() - waited).as_secs_f64(),
        pack_files(&repo.path)
    );
    Ok(())
}

/// Waits (polling: these are another process's lock files) until no `gc` and no housekeeping
/// started by [`housekeep_every`] runs in the served copy.
fn wait_for_remote_housekeeping(repo: &ServedRepo) -> Result<()> {
    let started = Instant::now();
    for running in [repo.path.join("gc.pid"), repo.path.join(HOUSEKEEPING_LOCK)] {
        while running.exists() {
            if started.elapsed() > Duration::from_secs(300) {
                bail!(
                    "{} stayed for 5 minutes: housekeeping of the served repository did not end",
                    running.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// Held (a directory, made atomically) while the served copy's housekeeping runs.
const HOUSEKEEPING_LOCK: &str = "housekeeping.lock";
/// Pushes between two housekeepings of the served copy in the sustained run.
const HOUSEKEEPING_EVERY: usize = 50;
/// One line per housekeeping of the served copy: when it started and ended, in seconds since
/// the epoch.
const HOUSEKEEPING_LOG: &str = "housekeeping.log";
/// One line per push to the served copy while it is housekept: the push's number and the
/// packs the remote held after it.
const PACKS_LOG: &str = "packs.log";

/// Housekeeping as a hosted git server schedules it: after every `pushes` pushes a geometric
/// repack (`git repack -d --geometric=2 --write-midx`, what GitLab's and GitHub's maintenance
/// run between full repacks) starts in the background of the push that counted it, at most one
/// at a time. It keeps the served copy's packs few over minutes of pushes at a cost that grows
/// with what was pushed since, not with the whole repository as `gc --auto`'s `repack -A`.
///
/// A hosted server runs it on its own machine. Here it shares the two cores with the server
/// under test, and its cost grows as the packs it rolls together do: at the same priority as
/// the pushes, the repacks of a 100,000-request run's last tenth took 5–6 s of CPU against 2 s
/// for its first tenth's, so the sustained row's ratio measured the remote's housekeeping
/// along with tug. At the lowest priority (`nice -n 19`) it gets what the pushes leave idle,
/// the nearest one machine comes to another. Each run is logged in [`HOUSEKEEPING_LOG`], and
/// the packs after each push in [`PACKS_LOG`] (shell builtins only: no process is added to
/// the push).
fn housekeep_every(repo: &ServedRepo, pushes: usize) -> Result<()> {
    write_hook(
        repo,
        "post-receive",
        &format!(
            "#!/bin/sh\n\
             cat >/dev/null\n\
             n=$(( $(cat pushes 2>/dev/null || echo 0) + 1 ))\n\
             echo $n > pushes\n\
             set -- objects/pack/*.pack\n\
             echo \"$n $#\" >> {PACKS_LOG}\n\
             if [ $((n % {pushes})) -eq 0 ] && mkdir {HOUSEKEEPING_LOCK} 2>/dev/null; then\n\
             \t(s=$(date +%s.%N); nice -n 19 git -c gc.auto=0 repack -d -l -q --geometric=2 --write-midx; \
             echo \"$s $(date +%s.%N)\" >> {HOUSEKEEPING_LOG}; rmdir {HOUSEKEEPING_LOCK}) </dev/null >/dev/null 2>&1 &\n\
             fi\n"
        ),
    )
}

/// Writes the executable hook `name` of the served copy.
fn write_hook(repo: &ServedRepo, name: &str, script: &str) -> Result<()> {
    let hook = repo.path.join("hooks").join(name);
    std::fs::create_dir_all(repo.path.join("hooks"))?;
    std::fs::write(&hook, script).with_context(|| format!("write {}", hook.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("make {} executable", hook.display()))
}

/// `.pack` files of a bare repository.
fn pack_files(git_dir: &std::path::Path) -> usize {
    std::fs::read_dir(git_dir.join("objects/pack")).map_or(0, |packs| {
        packs
            .filter_map(Result::ok)
            .filter(|p| p.file_name().to_string_lossy().ends_with(".pack"))
            .count()
    })
}

/// `.pack` files under the server's `data_dir/mirrors`.
fn mirror_packs(server: &TugServer) -> usize {
    let Ok(mirrors) = std::fs::read_dir(server.data_dir().join("mirrors")) else {
        return 0;
    };
    mirrors
        .filter_map(Result::ok)
        .filter_map(|m| std::fs::read_dir(m.path().join("objects/pack")).ok())
        .flat_map(|packs| packs.filter_map(Result::ok))
        .filter(|p| p.file_name().to_string_lossy().ends_with(".pack"))
        .count()
}

pub(crate) fn run(config: &Config) -> Result<Report> {
    let fixture = Fixture::load(&config.fixtures_dir, &config.fixture)?;
    let load_start = load_average();
    let http = SmartHttpServer::start()?;
    let count = fixture.service_dirs.min(BUMPS);
    eprintln!("reading {count} image bumps from {}", fixture.name);
    let bumps = fixture.image_bumps(1..=count)?;

    // The floor first, on a machine where no tug server runs yet.
    warm_floor(&http, &fixture, &bumps, config.remote_delay)?;
    let mut floor = Vec::new();
    for &b in &config.floor_batches {
        let (mut pushes, mut cpu) = (Vec::new(), Vec::new());
        for r in 0..config.floor_repeat.max(1) {
            let (push, used) = floor_push(&http, &fixture, &bumps, b, r, config.remote_delay)?;
            cpu.push(used);
            eprintln!(
                "floor: push of {b} commits #{}: {:.1} ms",
                r + 1,
                push.as_secs_f64() * 1000.0
            );
            pushes.push(push);
        }
        floor.push(FloorRow {
            commits: b,
            pushes,
            cpu,
        });
    }

    let tug_repo = http.publish(&fixture, "throughput-tug")?;
    delay_pushes(&tug_repo, config.remote_delay)?;
    set_remote_gc(&tug_repo, config.remote_gc)?;
    let server = crate::server::start_tug_with(
        &config.tug,
        config.batch_max,
        config.max_waiting_streams,
        &tug_repo,
    )?;
    let pid = server.pid().context("tug server has no process id")?;
    let endpoint = format!("{}/api/v1/deploy", server.http_url());
    let counters = |server: &TugServer| -> Result<Counters> {
        Ok(parse_counters(&server.get("/metrics", None)?.text()))
    };

    eprintln!("warming up tug server (mirror clone)");
    let warm = run_clients(
        &endpoint,
        1,
        vec![deploy_body(&tug_repo.url, &bumps[0], "9.0.0")],
    )?;
    if let Some(o) = warm.outcomes.iter().find(|o| !o.succeeded) {
        bail!("warm-up failed: {}", o.error.as_deref().unwrap_or("?"));
    }
    let mut acked_ids: Vec<String> = warm
        .outcomes
        .iter()
        .filter_map(|o| o.job_id.clone())
        .collect();

    let mut rows = Vec::new();
    let mut next = 0usize;
    for (round, &clients) in config.clients.iter().enumerate() {
        let n = clients * config.requests_per_client;
        let bodies: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let bump = &bumps[(next + i) % bumps.len()];
                deploy_body(&tug_repo.url, bump, &format!("7.{round}.{i}"))
            })
            .collect();
        next += n;
        compact_remote(&tug_repo)?;
        eprintln!(
            "tug closed loop: {clients} clients × {} requests",
            config.requests_per_client
        );
        let before = counters(&server)?;
        let sampler = RssSampler::start(pid);
        let meter = CpuMeter::start(pid)?;
        let run = run_clients(&endpoint, clients, bodies)?;
        let cpu = meter.finish()?;
        let peak_rss_kib = sampler.finish()?;
        rows.push(closed_row(
            clients,
            run,
            counters(&server)?.since(before),
            peak_rss_kib,
            cpu,
        ));
    }
    let capacity = config
        .clients
        .iter()
        .copied()
        .max()
        .and_then(|max| {
            rows.iter()
                .find(|r| matches!(r.kind, Kind::Closed { clients } if clients == max))
        })
        .map_or(0.0, TugRow::acked_rate);

    let mut open_plan: Vec<(Kind, f64)> = config
        .open_rates
        .iter()
        .map(|&offered| (Kind::Open { offered }, config.open_seconds))
        .collect();
    if config.overload_seconds > 0.0 {
        if capacity <= 0.0 {
            bail!("no closed-loop capacity measured to overload (no request succeeded)");
        }
        let offered = config.overload_factor * capacity;
        open_plan.push((Kind::Overload { offered }, config.overload_seconds));
    }
    for (round, (kind, seconds)) in open_plan.into_iter().enumerate() {
        let offered = match kind {
            Kind::Open { offered } | Kind::Overload { offered } => offered,
            Kind::Closed { .. } => continue,
        };
        let n = (offered * seconds).round().max(1.0) as usize;
        compact_remote(&tug_repo)?;
        eprintln!("tug open loop: {offered:.0} requests/s offered for {seconds} s ({n} requests)");
        let url = tug_repo.url.clone();
        let shared = Arc::new(bumps.clone());
        let start_at = next;
        let make = move |i: usize| {
            deploy_body(
                &url,
                &shared[(start_at + i) % shared.len()],
                &format!("6.{round}.{i}"),
            )
        };
        next += n;
        let before = counters(&server)?;
        let sampler = RssSampler::start(pid);
        let meter = CpuMeter::start(pid)?;
        let (samples, wall, first_error) = open_loop(&endpoint, offered, n, make)?;
        let cpu = meter.finish()?;
        let peak_rss_kib = sampler.finish()?;
        rows.push(TugRow {
            kind,
            samples,
            wall,
            first_error,
            counters: counters(&server)?.since(before),
            peak_rss_kib,
            cpu,
        });
    }
    // Last, so that the rows above run on the repository as the floor found it.
    let sustained = if config.sustained_requests > 0 {
        compact_remote(&tug_repo)?;
        // Minutes of pushes with no housekeeping would leave the remote with more than a
        // thousand packs, which no maintained server has: in this row a hosted server's
        // housekeeping runs during the pushes (or, left at git's defaults, its gc --auto).
        if config.remote_gc == RemoteGc::BetweenRows {
            housekeep_every(&tug_repo, HOUSEKEEPING_EVERY)?;
        }
        let clients = 64;
        let n = config.sustained_requests;
        eprintln!("tug sustained: {clients} clients, {n} requests");
        let bodies: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let bump = &bumps[(next + i) % bumps.len()];
                deploy_body(&tug_repo.url, bump, &format!("5.{i}"))
            })
            .collect();
        let pushes_before = http.push_times(&tug_repo)?.len();
        let run = run_clients(&endpoint, clients, bodies)?;
        let push_times = http.push_times(&tug_repo)?;
        let ok: Vec<&crate::load::Outcome> = run.outcomes.iter().filter(|o| o.succeeded).collect();
        acked_ids.extend(ok.iter().filter_map(|o| o.job_id.clone()));
        let mut done: Vec<Instant> = ok.iter().map(|o| o.done_at).collect();
        let (first_rate, last_rate) = tenths(&mut done);
        let windows = tenth_windows(&mut done);
        let pushes = push_times.get(pushes_before..).unwrap_or_default();
        let outside_remote_ms = match windows {
            Some((first, last, tenth)) => {
                let wall = wall_clock()?;
                let outside = |(from, to): Span| {
                    let (from, to) = (wall(from), wall(to));
                    (to - from - remote_busy_within(pushes, from, to)) * 1000.0 / tenth as f64
                };
                Some((outside(first), outside(last)))
            }
            None => None,
        };
        Some(Sustained {
            clients,
            requests: n,
            ok: ok.len(),
            first_rate,
            last_rate,
            remote_push_ms: first_and_last_tenth_mean(
                &pushes.iter().map(|p| p.secs).collect::<Vec<f64>>(),
            )
            .map(|(first, last)| (first * 1000.0, last * 1000.0)),
            outside_remote_ms,
            mirror_packs: mirror_packs(&server),
            remote_packs: pack_files(&tug_repo.path),
            floor_at_start: floor
                .iter()
                .find(|f| f.commits == 64)
                .map(FloorRow::median_ms),
            floor_at_end: {
                wait_for_remote_housekeeping(&tug_repo)?;
                floor_push_onto(&tug_repo, &bumps, 64)?
            },
            housekeeping: windows
                .filter(|_| config.remote_gc == RemoteGc::BetweenRows)
                .map(|(first, last, _)| remote_housekeeping(&tug_repo, first, last))
                .transpose()?,
        })
    } else {
        None
    };
    let hwm_kib = memory_kib(pid, "VmHWM")?;
    let logs = server.logs();
    if let Some(path) = &config.log_copy {
        std::fs::write(path, &logs).with_context(|| format!("write {}", path.display()))?;
    }
    drop(server);

    let overload_ids: Vec<&String> = rows
        .iter()
        .filter(|r| matches!(r.kind, Kind::Overload { .. }))
        .flat_map(|r| r.samples.iter())
        .filter(|s| s.succeeded)
        .filter_map(|s| s.job_id.as_ref())
        .collect();
    acked_ids.extend(
        rows.iter()
            .flat_map(|r| r.samples.iter())
            .filter(|s| s.succeeded)
            .filter_map(|s| s.job_id.clone()),
    );
    let exactly = exactly_once(&fixture, &tug_repo, &acked_ids, &overload_ids)?;
    let acked_without_id =
        1 + rows.iter().map(TugRow::ok).sum::<usize>() + sustained.as_ref().map_or(0, |s| s.ok)
            - acked_ids.len();
    if acked_without_id > 0 {
        bail!("{acked_without_id} succeeded requests had no jobId on their final line");
    }

    let delayed = if config.remote_delay.is_zero() {
        String::new()
    } else {
        format!(
            " (every push held {} ms in pre-receive)",
            config.remote_delay.as_millis()
        )
    };
    let housekeeping = match config.remote_gc {
        RemoteGc::BetweenRows if config.sustained_requests > 0 => {
            "the remote repacks between rows only (in the sustained run also geometrically every 50 pushes, at nice 19)"
        }
        RemoteGc::BetweenRows => "the remote repacks between rows only",
        RemoteGc::OnPush => "the remote repacks between rows and on its own gc --auto",
    };
    let header = format!(
        "tug throughput against the floor on {}: {} service dirs, {} commits, {} files\nserver: {}{delayed}; {housekeeping}\n{}; {} CPUs; load average (1/5/15 min) at start {load_start}, at end {}\n",
        fixture.name,
        fixture.service_dirs,
        fixture.commits,
        fixture.files,
        http.describe(),
        String::from_utf8_lossy(&run_git(None, &["--version"])?).trim(),
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        load_average(),
    );
    http.unpublish(&tug_repo)?;
    Ok(Report {
        header,
        floor,
        rows,
        capacity,
        hwm_kib,
        exactly,
        batches: batch_log_summary(&logs),
        overload_factor: config.overload_factor,
        sustained,
    })
}

fn closed_row(
    clients: usize,
    run: LoadRun,
    counters: Counters,
    peak_rss_kib: u64,
    cpu: CpuUse,
) -> TugRow {
    let first_error = run
        .outcomes
        .iter()
        .find(|o| !o.succeeded)
        .and_then(|o| o.error.clone());
    TugRow {
        kind: Kind::Closed { clients },
        samples: run
            .outcomes
            .into_iter()
            .map(|o| Sample {
                latency: o.latency,
                succeeded: o.succeeded,
                status: o.status,
                job_id: o.job_id,
                done_at: None,
                send_lag: None,
            })
            .collect(),
        wall: run.wall,
        first_error,
        counters,
        peak_rss_kib,
        cpu,
    }
}

/// An open loop: request `i` is started `i / rate` seconds after the start, each in its own task,
/// whether or not earlier ones have come back; nothing caps how many are in flight. Bodies are
/// made when their request is due, so a long run holds no queue of them. Latency counts from the
/// scheduled start, so lateness of the sender and queueing at the server are both charged.
fn open_loop(
    endpoint: &str,
    rate_per_s: f64,
    n: usize,
    make: impl Fn(usize) -> Vec<u8>,
) -> Result<(Vec<Sample>, Duration, Option<String>)> {
    if rate_per_s <= 0.0 {
        bail!("the offered rate must be positive, got {rate_per_s}");
    }
    let runtime = crate::load::client_runtime()?;
    let client = reqwest::Client::builder()
        .timeout(OPEN_REQUEST_TIMEOUT)
        .build()
        .context("build the HTTP client")?;
    runtime.block_on(async {
        let started = tokio::time::Instant::now();
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let at = started + Duration::from_secs_f64(i as f64 / rate_per_s);
            tokio::time::sleep_until(at).await;
            let body = make(i);
            let client = client.clone();
            let endpoint = endpoint.to_owned();
            handles.push(tokio::spawn(async move {
                let send_lag = at.elapsed();
                let outcome = deploy(&client, &endpoint, body).await;
                (outcome, at.elapsed(), send_lag, started.elapsed())
            }));
        }
        let mut samples = Vec::with_capacity(n);
        let mut first_error = None;
        for handle in handles {
            let (outcome, latency, send_lag, done_at) =
                handle.await.context("a client task panicked")?;
            if first_error.is_none() && !outcome.succeeded {
                first_error = outcome.error;
            }
            samples.push(Sample {
                latency,
                succeeded: outcome.succeeded,
                status: outcome.status,
                job_id: outcome.job_id,
                done_at: Some(done_at),
                send_lag: Some(send_lag),
            });
        }
        Ok((samples, started.elapsed(), first_error))
    })
}

/// One untimed push to a throwaway copy, so the first measured push does not pay for starting
/// the web server's workers.
fn warm_floor(
    http: &SmartHttpServer,
    fixture: &Fixture,
    bumps: &[ImageBump],
    delay: Duration,
) -> Result<()> {
    let repo = http.publish(fixture, "floor-warm")?;
    delay_pushes(&repo, delay)?;
    let scratch = Scratch::new().context("create a directory for the floor clone")?;
    let local = scratch.join("floor.git");
    prepare_commits(&fixture.path, &local, bumps, 1, "8.0.0", 0)?;
    push(&local, &repo.url)?;
    http.unpublish(&repo)
}

/// Turns the served copy's `gc --auto` after pushes off when housekeeping is to run between rows
/// only; `on-push` leaves git's default.
fn set_remote_gc(repo: &ServedRepo, gc: RemoteGc) -> Result<()> {
    if gc == RemoteGc::BetweenRows {
        run_git(Some(&repo.path), &["config", "gc.auto", "0"])
            .with_context(|| format!("turn off gc --auto in {}", repo.path.display()))?;
    }
    Ok(())
}

/// Makes every push to `repo` wait `delay` in its `pre-receive` hook, after the remote has the
/// pack and before it updates the ref, as a remote farther away would.
fn delay_pushes(repo: &ServedRepo, delay: Duration) -> Result<()> {
    if delay.is_zero() {
        return Ok(());
    }
    write_hook(
        repo,
        "pre-receive",
        &format!(
            "#!/bin/sh\ncat >/dev/null\nsleep {:.3}\n",
            delay.as_secs_f64()
        ),
    )
}

/// Repetition `r` of the floor for `b` commits: a fresh served copy, `b` commits made in a
/// local bare clone outside the clock, then the timed push.
fn floor_push(
    http: &SmartHttpServer,
    fixture: &Fixture,
    bumps: &[ImageBump],
    b: usize,
    r: usize,
    delay: Duration,
) -> Result<(Duration, CpuUse)> {
    let repo = http.publish(fixture, &format!("floor-{b}-{r}"))?;
    delay_pushes(&repo, delay)?;
    let scratch = Scratch::new().context("create a directory for the floor clone")?;
    let local = scratch.join("floor.git");
    prepare_commits(
        &fixture.path,
        &local,
        bumps,
        b,
        &format!("9.{b}.{r}"),
        r * b,
    )?;
    let meter = CpuMeter::start(std::process::id())?;
    let took = push(&local, &repo.url)?;
    let used = meter.finish()?;
    let gained = rev_count(&repo.path.to_string_lossy(), BRANCH)? - fixture.commits;
    if gained != b {
        bail!("floor push of {b} commits: the remote gained {gained}");
    }
    http.unpublish(&repo)?;
    Ok((took, used))
}

/// The floor on a repository that has grown: `b` commits prepared on a clone of `repo` as it is
/// now, pushed to it in one timed push.
fn floor_push_onto(repo: &ServedRepo, bumps: &[ImageBump], b: usize) -> Result<Duration> {
    let git_dir = path_str(&repo.path)?.to_owned();
    let before = rev_count(&git_dir, BRANCH)?;
    let scratch = Scratch::new().context("create a directory for the floor clone")?;
    let local = scratch.join("floor.git");
    prepare_commits(&repo.path, &local, bumps, b, "4.0", 0)?;
    let took = push(&local, &repo.url)?;
    let gained = rev_count(&git_dir, BRANCH)? - before;
    if gained != b {
        bail!("floor push of {b} commits onto the grown repository: it gained {gained}");
    }
    Ok(took)
}

/// Clones the bare repository `src` to `dest` and chains `b` commits on its main branch with one
/// `git fast-import` stream, commit `i` setting the tag `TAG.i` in bump `first + i`'s file.
fn prepare_commits(
    src: &std::path::Path,
    dest: &std::path::Path,
    bumps: &[ImageBump],
    b: usize,
    tag: &str,
    first: usize,
) -> Result<()> {
    let src = path_str(src)?;
    let dest_str = path_str(dest)?;
    run_git(None, &["clone", "--bare", "--quiet", src, dest_str])?;
    // Dated after the tip: git's walks from the new commits to what the remote has stop at
    // the first commit older than those they started from, so commits dated before a grown
    // remote's history (tug's, dated now) would have every push walk all of it.
    let tip_time = String::from_utf8_lossy(&run_git(
        None,
        &["--git-dir", dest_str, "log", "-1", "--format=%ct", BRANCH],
    )?)
    .trim()
    .parse::<u64>()
    .context("the commit time of the clone's tip")?;
    let mut files: HashMap<String, String> = HashMap::new();
    let mut stream = Vec::new();
    for i in 0..b {
        let bump = &bumps[(first + i) % bumps.len()];
        let current = match files.remove(&bump.file) {
            Some(text) => text,
            None => String::from_utf8(run_git(
                None,
                &[
                    "--git-dir",
                    dest_str,
                    "show",
                    &format!("{BRANCH}:{}", bump.file),
                ],
            )?)
            .with_context(|| format!("{} is not UTF-8", bump.file))?,
        };
        let tag = format!("{tag}.{i}");
        let edited = set_image_tag(&current, &bump.image, &tag)
            .with_context(|| format!("no newTag for {} in {}", bump.image, bump.file))?;
        let message = format!("deploy({}): bump image to {tag}\n", bump.dir);
        let _ = writeln!(
            Bytes(&mut stream),
            "commit refs/heads/{BRANCH}\ncommitter Bench <bench@example.invalid> {} +0000\ndata {}\n{message}",
            tip_time + 1 + i as u64,
            message.len(),
        );
        if i == 0 {
            let _ = writeln!(Bytes(&mut stream), "from refs/heads/{BRANCH}^0");
        }
        let _ = writeln!(
            Bytes(&mut stream),
            "M 100644 inline {}\ndata {}\n{edited}",
            bump.file,
            edited.len()
        );
        files.insert(bump.file.clone(), edited);
    }
    let mut cmd = git_command();
    cmd.args(["--git-dir", dest_str, "fast-import", "--quiet", "--force"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("start git fast-import")?;
    child
        .stdin
        .take()
        .context("git fast-import has no stdin")?
        .write_all(&stream)
        .context("write the fast-import stream")?;
    let output = child
        .wait_with_output()
        .context("wait for git fast-import")?;
    if !output.status.success() {
        bail!(
            "git fast-import failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// `fmt::Write` into a byte buffer (the stream is text; `data` lengths count its bytes).
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// The timed part of the floor: `git push` of the local main branch.
fn push(local: &std::path::Path, url: &str) -> Result<Duration> {
    let local = path_str(local)?;
    let started = Instant::now();
    run_git(
        None,
        &[
            "--git-dir",
            local,
            "push",
            "--quiet",
            url,
            &format!("{BRANCH}:{BRANCH}"),
        ],
    )?;
    Ok(started.elapsed())
}

fn rev_count(git_dir: &str, rev: &str) -> Result<usize> {
    String::from_utf8_lossy(&run_git(
        None,
        &["--git-dir", git_dir, "rev-list", "--count", rev],
    )?)
    .trim()
    .parse::<usize>()
    .with_context(|| format!("count commits of {rev} in {git_dir}"))
}

/// The kustomization with the `newTag:` on the line after `  - name: IMAGE` set to `tag`,
/// keeping its quotes and comment; `None` when there is no such line.
fn set_image_tag(text: &str, image: &str, tag: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len() + tag.len());
    let mut after_name = false;
    let mut done = false;
    for line in text.split_inclusive('\n') {
        if after_name && !done {
            after_name = false;
            if let Some(start) = line.find("newTag: \"") {
                let value = start + "newTag: \"".len();
                let end = value + line[value..].find('"')?;
                out.push_str(&line[..value]);
                out.push_str(tag);
                out.push_str(&line[end..]);
                done = true;
                continue;
            }
        }
        after_name = line.trim_end() == format!("  - name: {image}");
        out.push_str(line);
    }
    done.then_some(out)
}

/// Every acknowledged job's `Tug-Request` trailer is in the served repository once.
fn exactly_once(
    fixture: &Fixture,
    repo: &ServedRepo,
    acked: &[String],
    overload: &[&String],
) -> Result<Exactly> {
    let mut landed: BTreeMap<String, usize> = BTreeMap::new();
    for id in trailer_values_on_all_branches(&repo.path, "Tug-Request")? {
        *landed.entry(id).or_default() += 1;
    }
    let git_dir = path_str(&repo.path)?;
    let merges = String::from_utf8_lossy(&run_git(
        None,
        &["--git-dir", git_dir, "rev-list", "--merges", BRANCH],
    )?)
    .lines()
    .count();
    Ok(Exactly {
        acked: acked.len(),
        lost: acked.iter().filter(|id| !landed.contains_key(*id)).count(),
        lost_overload: overload
            .iter()
            .filter(|id| !landed.contains_key(id.as_str()))
            .count(),
        duplicated: landed.values().filter(|n| **n > 1).count(),
        gained: rev_count(git_dir, BRANCH)? - fixture.commits,
        merges,
    })
}

/// Nearest-rank percentile, in ms.
fn percentile_ms(samples: impl Iterator<Item = Duration>, p: usize) -> f64 {
    let mut v: Vec<f64> = samples.map(|d| d.as_secs_f64() * 1000.0).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[(v.len() * p).div_ceil(100).max(1) - 1]
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

impl Report {
    /// CPU per commit: of the whole machine for the floor's pushes and tug's rows, and of the
    /// tug server alone; and the rate each cost allows when every core is busy.
    fn write_cpu(&self, out: &mut String) {
        let cores = crate::stats::cores();
        let _ = writeln!(
            out,
            "  CPU (whole machine from /proc/stat, {cores} cores; `tug` = the server's own threads, without its git children):"
        );
        for f in &self.floor {
            let mut per_commit: Vec<f64> = f
                .cpu
                .iter()
                .map(|c| c.machine_ms / f.commits.max(1) as f64)
                .collect();
            per_commit.sort_by(f64::total_cmp);
            let Some(&median) = per_commit.get(per_commit.len() / 2) else {
                continue;
            };
            let _ = writeln!(
                out,
                "    floor: push of {:>4} commits: {} ms per commit; all cores busy would allow {:.0} commits/s",
                f.commits,
                ms(median),
                cores * 1000.0 / median.max(1e-9)
            );
        }
        for r in &self.rows {
            let ok = r.ok().max(1) as f64;
            let per_request = r.cpu.machine_ms / ok;
            let _ = writeln!(
                out,
                "    {}: {} ms per acknowledged request (tug {} ms), machine {:.0} % busy; all cores busy would allow {:.0} req/s",
                r.label(),
                ms(per_request),
                ms(r.cpu.process_ms / ok),
                r.cpu.busy() * 100.0,
                cores * 1000.0 / per_request.max(1e-9)
            );
        }
    }

    fn floor_of(&self, commits: usize) -> Option<&FloorRow> {
        self.floor.iter().find(|f| f.commits == commits)
    }

    fn closed(&self, clients: usize) -> Option<&TugRow> {
        self.rows
            .iter()
            .find(|r| matches!(r.kind, Kind::Closed { clients: c } if c == clients))
    }

    pub(crate) fn render(&self) -> String {
        let mut out = self.header.clone();
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  scenario                        requests      ok    429    503  failed   commits/s  × floor   p50 ms    p99 ms  commits/push  peak RSS MiB"
        );
        for f in &self.floor {
            let slowest = f.pushes.iter().max().copied().unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<30}  {:>8}  {:>6}  {:>5}  {:>5}  {:>6}  {:>10.1}  {:>7}  {:>7}  {:>8}  {:>12}  {:>12}",
                if f.commits == 1 {
                    "floor: 1 push of 1 commit".to_owned()
                } else {
                    format!("floor: 1 push of {} commits", f.commits)
                },
                f.commits,
                f.commits,
                "-",
                "-",
                "-",
                f.commits_per_s(),
                "1.00",
                ms(f.median_ms()),
                ms(slowest.as_secs_f64() * 1000.0),
                f.commits,
                "-"
            );
        }
        let largest_floor = self.floor.iter().max_by_key(|f| f.commits);
        for r in &self.rows {
            let floor = match r.kind {
                Kind::Closed { clients } => self.floor_of(clients),
                Kind::Open { .. } | Kind::Overload { .. } => largest_floor,
            };
            let ratio = floor.map_or_else(
                || "-".to_owned(),
                |f| format!("{:.2}", r.acked_rate() / f.commits_per_s().max(1e-9)),
            );
            let _ = writeln!(
                out,
                "  {:<30}  {:>8}  {:>6}  {:>5}  {:>5}  {:>6}  {:>10.1}  {:>7}  {:>7}  {:>8}  {:>12.1}  {:>12.1}",
                r.label(),
                r.samples.len(),
                r.ok(),
                r.with_status(429),
                r.with_status(503),
                r.other_failures(),
                r.acked_rate(),
                ratio,
                ms(r.percentile_ms(50)),
                ms(r.percentile_ms(99)),
                r.commits_per_push(),
                r.peak_rss_kib as f64 / 1024.0
            );
        }
        let _ = writeln!(
            out,
            "  floor rows: median of {} pushes (p99 column: the slowest); commits/s = commits / median push time.",
            self.floor.first().map_or(0, |f| f.pushes.len())
        );
        let _ = writeln!(
            out,
            "  tug rows: commits/s = acknowledged requests/s (one commit each); × floor = against floor(clients) for closed loops, floor({}) for open ones.",
            largest_floor.map_or(0, |f| f.commits)
        );
        let _ = writeln!(
            out,
            "  closed loops: ok / wall; open loops: acknowledgements per second while offering (after its first tenth), the slope of their running count; latency from the scheduled start."
        );
        let _ = writeln!(
            out,
            "  capacity (largest closed loop): {:.1} req/s; overload offers {:.1} × capacity",
            self.capacity, self.overload_factor
        );
        self.write_cpu(&mut out);
        for r in &self.rows {
            let lags: Vec<Duration> = r.samples.iter().filter_map(|s| s.send_lag).collect();
            if !lags.is_empty() {
                let _ = writeln!(
                    out,
                    "  {}: sender late by p99 {} ms, max {} ms; ok p99 {} ms; wall {:.1} s",
                    r.label(),
                    ms(percentile_ms(lags.iter().copied(), 99)),
                    ms(percentile_ms(lags.iter().copied(), 100)),
                    ms(r.ok_percentile_ms(99)),
                    r.wall.as_secs_f64()
                );
            }
            if let Some(e) = &r.first_error {
                let _ = writeln!(out, "  {}: first failure: {e}", r.label());
            }
        }
        let e = &self.exactly;
        let _ = writeln!(
            out,
            "\nremote check: {} acknowledged jobs, {} without their Tug-Request trailer ({} of them from the overload run), {} trailers twice; main gained {} commits, {} merges",
            e.acked, e.lost, e.lost_overload, e.duplicated, e.gained, e.merges
        );
        let _ = writeln!(
            out,
            "server memory: VmHWM {:.1} MiB at the end",
            self.hwm_kib as f64 / 1024.0
        );
        let _ = writeln!(
            out,
            "server log (landed batch lines, whole run):\n{}",
            self.batches
        );
        if let Some(s) = &self.sustained {
            let _ = writeln!(
                out,
                "sustained: {} requests from {} closed-loop clients, {} ok; first tenth {:.1} req/s, \
                 last tenth {:.1} req/s ({:.2} of the first); at the end {} packs in tug's mirror, \
                 {} in the remote; the floor's push of 64 commits {} ms on the fixture, {} ms on \
                 the remote as the run left it",
                s.requests,
                s.clients,
                s.ok,
                s.first_rate,
                s.last_rate,
                if s.first_rate > 0.0 {
                    s.last_rate / s.first_rate
                } else {
                    0.0
                },
                s.mirror_packs,
                s.remote_packs,
                s.floor_at_start.map_or_else(|| "-".to_owned(), ms),
                ms(s.floor_at_end.as_secs_f64() * 1000.0),
            );
            if let Some((first, last)) = s.remote_push_ms {
                let _ = writeln!(
                    out,
                    "  the remote's answer to a push (the web server's time for the POST of its \
                     pack): {first:.1} ms on average over the first tenth of the pushes, {last:.1} \
                     ms over the last"
                );
            }
            if let Some((first, last)) = s.outside_remote_ms {
                let _ = writeln!(
                    out,
                    "  tug's own part: {first:.2} ms per request during which the remote answered \
                     none of its pushes in the first tenth, {last:.2} ms in the last"
                );
            }
            if let Some(h) = &s.housekeeping {
                let _ = writeln!(
                    out,
                    "  the remote's housekeeping (nice 19): {} geometric repacks, {:.1} s in all, the \
                     longest {:.1} s; running during {:.1} s of the first tenth's {:.1} s and {:.1} s \
                     of the last tenth's {:.1} s; the remote held {:.1} packs after a push of the \
                     first tenth on average, {:.1} in the last, {} at most",
                    h.runs,
                    h.total_s,
                    h.longest_s,
                    h.in_first_s,
                    h.first_s,
                    h.in_last_s,
                    h.last_s,
                    h.packs_first,
                    h.packs_last,
                    h.packs_most,
                );
            }
        }
        out.push_str(&self.render_targets());
        out
    }

    fn render_targets(&self) -> String {
        let mut out = String::from("targets:\n");
        for clients in [64, 256] {
            match (self.closed(clients), self.floor_of(clients)) {
                (Some(r), Some(f)) => {
                    let rate = r.acked_rate();
                    let bound = FLOOR_SHARE * f.commits_per_s();
                    let p99 = r.percentile_ms(99);
                    let p99_part = if clients == 64 {
                        format!(", p99 {} ms ≤ {TARGET_P99_64_MS} ms", ms(p99))
                    } else {
                        String::new()
                    };
                    let pass = rate >= bound && (clients != 64 || p99 <= TARGET_P99_64_MS);
                    let _ = writeln!(
                        out,
                        "  {clients} clients ≥ {FLOOR_SHARE} × floor({clients}): {} req/s vs {FLOOR_SHARE} × {} = {} ({:.2} of floor){p99_part}  {}",
                        thousands(rate),
                        thousands(f.commits_per_s()),
                        thousands(bound),
                        rate / f.commits_per_s().max(1e-9),
                        verdict(pass)
                    );
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "  {clients} clients ≥ {FLOOR_SHARE} × floor({clients}): not measured (needs --clients and --floor-batches with {clients})  MISS"
                    );
                }
            }
        }
        match self.rows.iter().find(|r| {
            matches!(r.kind, Kind::Open { offered } if (offered - TARGET_OPEN_RATE).abs() < 0.5)
        }) {
            Some(r) => {
                // An open loop's answers cannot outrun what it offers, so "≥ 1,000 acknowledged
                // at 1,000 offered" is read as: every request acknowledged, at the offered rate
                // within the measurement's resolution.
                let rate = r.acked_rate();
                let p99 = r.percentile_ms(99);
                let all = r.ok() == r.samples.len();
                let least = TARGET_OPEN_RATE * (1.0 - OPEN_RATE_RESOLUTION);
                let _ = writeln!(
                    out,
                    "  open loop {} req/s: {} req/s acknowledged ≥ {} (the offered rate less {:.0} % resolution), {} of {} acknowledged, p99 {} ms ≤ {} ms  {}",
                    thousands(TARGET_OPEN_RATE),
                    thousands(rate),
                    thousands(least),
                    OPEN_RATE_RESOLUTION * 100.0,
                    thousands(r.ok() as f64),
                    thousands(r.samples.len() as f64),
                    ms(p99),
                    thousands(TARGET_OPEN_P99_MS),
                    verdict(rate >= least && all && p99 <= TARGET_OPEN_P99_MS)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "  open loop {} req/s: not measured (needs {} in --open-rates)  MISS",
                    thousands(TARGET_OPEN_RATE),
                    TARGET_OPEN_RATE
                );
            }
        }
        match self
            .rows
            .iter()
            .find(|r| matches!(r.kind, Kind::Overload { .. }))
        {
            Some(r) => {
                let peak = r.peak_rss_kib as f64 / 1024.0;
                let lost = self.exactly.lost_overload;
                let _ = writeln!(
                    out,
                    "  overload at {:.0}/s: peak RSS {peak:.1} MiB ≤ {TARGET_RSS_MIB} MiB, {lost} of {} acknowledged lost ({} refused with 429, {} with 503)  {}",
                    match r.kind {
                        Kind::Overload { offered } => offered,
                        _ => 0.0,
                    },
                    r.ok(),
                    r.with_status(429),
                    r.with_status(503),
                    verdict(peak <= TARGET_RSS_MIB && lost == 0 && self.exactly.lost == 0)
                );
            }
            None => {
                let _ = writeln!(out, "  overload: not measured (--overload-seconds 0)  MISS");
            }
        }
        match (self.closed(1), self.floor_of(1)) {
            (Some(r), Some(f)) => {
                let p50 = r.percentile_ms(50);
                let bound = FLOOR_FACTOR * f.median_ms() + FLOOR_ALLOWANCE_MS;
                let _ = writeln!(
                    out,
                    "  idle single request p50 ≤ {FLOOR_FACTOR} × floor(1) + {FLOOR_ALLOWANCE_MS} ms: {} ms vs {FLOOR_FACTOR} × {} + {FLOOR_ALLOWANCE_MS} = {} ms ({:.2})  {}",
                    ms(p50),
                    ms(f.median_ms()),
                    ms(bound),
                    p50 / bound,
                    verdict(p50 <= bound)
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "  idle single request: not measured (needs 1 in --clients and --floor-batches)  MISS"
                );
            }
        }
        if let Some(s) = &self.sustained {
            let share = if s.first_rate > 0.0 {
                s.last_rate / s.first_rate
            } else {
                0.0
            };
            // The same work by the plainest tool at both ends: git's own push of 64 prepared
            // commits onto the fixture, then onto the remote as the run left it.
            let floor_share = s
                .floor_at_start
                .filter(|_| !s.floor_at_end.is_zero())
                .map(|start| start / (s.floor_at_end.as_secs_f64() * 1000.0));
            let _ = writeln!(
                out,
                "  sustained: last tenth {:.1} req/s ≥ {SUSTAINED_SHARE} × first tenth {:.1} req/s ({share:.2}; \
                 the floor's push of 64 on the remote as the run left it: {} of its rate on the \
                 fixture; the remote's answer {}, tug's own part {})  {}",
                s.last_rate,
                s.first_rate,
                floor_share.map_or_else(|| "not measured".to_owned(), |f| format!("{f:.2}")),
                s.remote_push_ms.map_or_else(
                    || "not measured".to_owned(),
                    |(a, b)| format!("{a:.1} → {b:.1} ms a push")
                ),
                s.outside_remote_ms.map_or_else(
                    || "not measured".to_owned(),
                    |(a, b)| format!("{a:.2} → {b:.2} ms a request")
                ),
                verdict(share >= SUSTAINED_SHARE && s.ok == s.requests)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servers::testing::{commit, push};

    #[test]
    fn the_served_copy_is_repacked_geometrically_every_n_pushes() -> Result<()> {
        let scratch = Scratch::new()?;
        let path = scratch.join("served.git");
        let work = scratch.join("work");
        let (path_s, work_s) = (path.to_string_lossy(), work.to_string_lossy());
        run_git(None, &["init", "--quiet", "--bare", &path_s])?;
        run_git(None, &["init", "--quiet", &work_s])?;
        let repo = ServedRepo {
            path: path.clone(),
            url: String::new(),
        };
        run_git(Some(&repo.path), &["config", "gc.auto", "0"])?;
        // Every push stays a pack, as a batch of commits would.
        run_git(Some(&repo.path), &["config", "receive.unpackLimit", "1"])?;
        housekeep_every(&repo, 2)?;
        let midx = path.join("objects/pack/multi-pack-index");
        let started = Instant::now();
        for n in 1..=4 {
            commit(&work, n)?;
            push(&work, &path_s)?;
            wait_for_remote_housekeeping(&repo)?;
            let counted = std::fs::read_to_string(path.join("pushes"))?;
            assert_eq!(counted.trim(), n.to_string());
            // Housekeeping ran after the second push, not after the first.
            assert_eq!(midx.exists(), n >= 2, "multi-pack index after {n} pushes");
        }
        // Every push left a pack; the geometric repacks rolled the four into fewer.
        assert!(pack_files(&path) < 4, "{} packs", pack_files(&path));
        // Both runs were logged, and fell within the span of the pushes.
        let whole = (started, Instant::now());
        let h = remote_housekeeping(&repo, whole, (whole.1, whole.1))?;
        assert_eq!(h.runs, 2);
        assert!(h.total_s > 0.0 && h.longest_s <= h.total_s);
        assert!(
            (h.in_first_s - h.total_s).abs() < 0.01,
            "{} of {}",
            h.in_first_s,
            h.total_s
        );
        assert_eq!(h.in_last_s, 0.0);
        // Four pushes, a pack each, logged with the packs after them: one, two, then what the
        // second push's housekeeping left, plus one.
        let logged = std::fs::read_to_string(path.join(PACKS_LOG))?;
        let logged: Vec<&str> = logged.lines().collect();
        assert_eq!(logged.len(), 4, "{logged:?}");
        assert_eq!(&logged[..2], ["1 1", "2 2"]);
        assert!(h.packs_most >= 2, "{}", h.packs_most);
        Ok(())
    }

    #[test]
    fn a_housekeeping_log_line_that_is_not_two_times_is_an_error() -> Result<()> {
        let scratch = Scratch::new()?;
        let repo = ServedRepo {
            path: scratch.join("served.git"),
            url: String::new(),
        };
        std::fs::create_dir_all(&repo.path)?;
        let now = Instant::now();
        // No log: nothing ran, and it prints as nothing, not as "-0.0".
        let none = remote_housekeeping(&repo, (now, now), (now, now))?;
        assert_eq!(none.runs, 0);
        assert_eq!(
            format!("{:.1} {:.1}", none.total_s, none.in_first_s),
            "0.0 0.0"
        );
        std::fs::write(repo.path.join(HOUSEKEEPING_LOG), "1.5 2.5\n3.0\n")?;
        let err = remote_housekeeping(&repo, (now, now), (now, now)).err();
        let err = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("not a housekeeping run: \"3.0\""), "{err}");
        std::fs::write(repo.path.join(HOUSEKEEPING_LOG), "1.5 2.5\n")?;
        std::fs::write(repo.path.join(PACKS_LOG), "1 1\n2\n")?;
        let err = remote_housekeeping(&repo, (now, now), (now, now)).err();
        let err = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("not a push's packs: \"2\""), "{err}");
        Ok(())
    }

    #[test]
    fn between_rows_turns_gc_auto_off_and_on_push_leaves_the_default() -> Result<()> {
        let scratch = Scratch::new()?;
        let path = scratch.join("served.git");
        run_git(
            None,
            &["init", "--quiet", "--bare", &path.to_string_lossy()],
        )?;
        let repo = ServedRepo {
            path,
            url: String::new(),
        };
        let gc_auto = || {
            run_git(Some(&repo.path), &["config", "--get", "gc.auto"])
                .ok()
                .map(|v| String::from_utf8_lossy(&v).trim().to_owned())
        };
        set_remote_gc(&repo, RemoteGc::OnPush)?;
        assert_eq!(gc_auto(), None);
        set_remote_gc(&repo, RemoteGc::BetweenRows)?;
        assert_eq!(gc_auto().as_deref(), Some("0"));
        Ok(())
    }

    #[test]
    fn the_first_and_last_tenth_of_twenty_values_are_two_each() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(first_and_last_tenth_mean(&values), Some((1.5, 19.5)));
        assert_eq!(first_and_last_tenth_mean(&values[..9]), None);
    }

    #[test]
    fn the_remote_is_busy_for_the_union_of_its_answers_within_the_span() {
        let push = |from: f64, to: f64| PushTime {
            secs: to - from,
            ended: to,
        };
        // 10–12 and 11–14 overlap (4 s together), 20–21 stands alone, 30–40 is cut at 35.
        let pushes = [
            push(20.0, 21.0),
            push(10.0, 12.0),
            push(30.0, 40.0),
            push(11.0, 14.0),
            push(12.5, 13.0),
        ];
        assert_eq!(remote_busy_within(&pushes, 0.0, 35.0), 10.0);
        // A span before, between and after the answers.
        assert_eq!(remote_busy_within(&pushes, 0.0, 10.0), 0.0);
        assert_eq!(remote_busy_within(&pushes, 15.0, 20.0), 0.0);
        assert_eq!(remote_busy_within(&pushes, 11.5, 20.5), 3.0);
        assert_eq!(remote_busy_within(&[], 0.0, 100.0), 0.0);
    }

    #[test]
    fn tenths_measure_the_first_and_last_tenth_of_the_answers() {
        let start = Instant::now();
        // 100 answers: the first 50 every 10 ms, the rest every 20 ms.
        let mut done: Vec<Instant> = (0..100u64)
            .map(|i| {
                let ms = if i < 50 { i * 10 } else { 490 + (i - 49) * 20 };
                start + Duration::from_millis(ms)
            })
            .rev()
            .collect();
        let (first, last) = tenths(&mut done);
        assert!((first - 100.0).abs() < 0.01, "{first}");
        assert!((last - 50.0).abs() < 0.01, "{last}");
        assert_eq!(tenths(&mut done[..5].to_vec()), (0.0, 0.0));
    }

    #[test]
    fn the_tag_after_the_image_line_is_set_with_its_quotes_and_comment() {
        let k = "images:\n  - name: registry.example.com/platform/envoy\n    newTag: \"1.0\"\n  - name: registry.example.com/search/svc-0007\n    newTag: \"1.2.3\"  # release tag\n";
        let edited = set_image_tag(k, "registry.example.com/search/svc-0007", "9.1.2").unwrap();
        assert_eq!(edited, k.replace("\"1.2.3\"", "\"9.1.2\""));
        assert_eq!(
            set_image_tag(k, "registry.example.com/search/svc-0008", "1"),
            None
        );
    }

    fn open_row(offered: f64, done_ms: impl Iterator<Item = u64>) -> TugRow {
        let samples: Vec<Sample> = done_ms
            .map(|done_ms| Sample {
                latency: Duration::from_millis(100),
                succeeded: true,
                status: Some(200),
                job_id: None,
                done_at: Some(Duration::from_millis(done_ms)),
                send_lag: Some(Duration::ZERO),
            })
            .collect();
        TugRow {
            kind: Kind::Open { offered },
            samples,
            wall: Duration::from_secs(5),
            first_error: None,
            counters: Counters::default(),
            peak_rss_kib: 0,
            cpu: CpuUse::default(),
        }
    }

    #[test]
    fn open_loop_rate_is_the_pace_of_acknowledgements() {
        let row = open_row(10.0, (0..11).map(|i| 100 + i * 100));
        assert!((row.acked_rate() - 10.0).abs() < 1e-9);
        assert_eq!(row.with_status(429), 0);
        assert_eq!(row.other_failures(), 0);
    }

    #[test]
    fn open_loop_rate_is_the_offered_one_for_a_server_that_keeps_up_in_bursts() {
        // 1,000 requests offered at 100/s (one every 10 ms); a batch every 250 ms takes what
        // arrived since the last and answers 180 ms later.
        let keeps_up = open_row(100.0, (0..1000u64).map(|i| (i * 10 / 250 + 1) * 250 + 180));
        let rate = keeps_up.acked_rate();
        assert!((rate - 100.0).abs() < 0.01, "{rate}");
        // Batches of uneven length (claims 200 and 300 ms apart in turn), each answered 150 or
        // 250 ms after its claim: still the offered rate, within the 1 % the target allows.
        let claims: Vec<(u64, u64)> = (0..60u64)
            .scan(0, |at, j| {
                *at += if j % 2 == 0 { 200 } else { 300 };
                Some((*at, *at + if j % 3 == 0 { 150 } else { 250 }))
            })
            .collect();
        let uneven = open_row(
            100.0,
            (0..1000u64).map(|i| {
                claims
                    .iter()
                    .find(|(claim, _)| *claim >= i * 10)
                    .map_or(u64::MAX, |(_, done)| *done)
            }),
        );
        let rate = uneven.acked_rate();
        assert!((rate - 100.0).abs() < 1.0, "{rate}");
        // A server that answers one request every 20 ms falls behind: its own pace shows.
        let behind = open_row(100.0, (0..1000u64).map(|i| 50 + i * 20));
        let rate = behind.acked_rate();
        assert!((rate - 50.0).abs() < 1.0, "{rate}");
    }
}
