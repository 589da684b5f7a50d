//! The server benchmark: concurrent writers on one branch of the large fixture, naive git
//! pipelines against a real `tug server`, side by side in one run over smart HTTP on loopback.
//!
//! * naive — N writer threads, each in its own work-tree clone, each landing its updates with
//!   fetch, `reset --hard`, sed, add, commit, push, and starting again from the fetch when the
//!   push is rejected (what script-based deploy servers do under concurrency).
//! * tug — the `tug` binary serving `POST /api/v1/deploy`; 1, 8 and 64 concurrent clients, each
//!   sending its requests one after another on a keep-alive pool and reading every NDJSON stream
//!   to its final line, so a request counts once it is acknowledged after its push.
//! * idle — one request at a time against the floor (`git push` of a prepared commit), alternated
//!   so that both see the same machine load.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tug_testkit::{TugServer, run_git};

use crate::fixture::{BRANCH, Fixture, ImageBump, path_str};
use crate::load::{
    Counters, LoadRun, RssSampler, deploy_body, memory_kib, parse_counters, run_clients,
    run_open_loop,
};
use crate::servers::{ServedRepo, SmartHttpServer};
use crate::stats::{load_average, ms, summarize, thousands};
use crate::targets::{FLOOR_ALLOWANCE_MS, FLOOR_FACTOR, TARGET_RSS_MIB};
use crate::worktree::WorkTree;

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub fixtures_dir: PathBuf,
    pub fixture: String,
    /// The `tug` binary (release build).
    pub tug: PathBuf,
    pub naive_writers: usize,
    pub naive_updates_per_writer: usize,
    /// Concurrent client counts of the tug runs.
    pub clients: Vec<usize>,
    pub requests_per_client: usize,
    /// Requests of the idle single-request comparison (and floor pushes).
    pub idle_requests: usize,
    pub batch_max: u32,
    /// Offered rates of the open-loop runs (requests/s), at the largest client count.
    pub open_rates: Vec<f64>,
    /// Length of each open-loop run.
    pub open_seconds: f64,
    /// Where the server's log is copied when the run ends.
    pub log_copy: Option<PathBuf>,
}

// Targets as the release notes state them.
const TARGET_RPS_64: f64 = 1_000.0;
const TARGET_SPEEDUP: f64 = 300.0;
const TARGET_P99_MS: f64 = 500.0;
// A naive writer that needs more attempts than this for one update is starving: fail the run.
const NAIVE_MAX_ATTEMPTS: usize = 200;

struct NaiveResult {
    writers: usize,
    landed: usize,
    attempts: usize,
    wall: Duration,
    latencies: Vec<Duration>,
}

struct TugRun {
    clients: usize,
    run: LoadRun,
    counters: Counters,
    peak_rss_kib: u64,
}

struct OpenRun {
    clients: usize,
    offered: f64,
    run: LoadRun,
    counters: Counters,
    peak_rss_kib: u64,
}

struct Idle {
    floor: Vec<Duration>,
    tug: Vec<Duration>,
    counters: Counters,
}

pub(crate) struct Report {
    header: String,
    naive: NaiveResult,
    tug: Vec<TugRun>,
    open: Vec<OpenRun>,
    idle: Idle,
    hwm_kib: u64,
    verification: String,
    bottleneck: String,
}

pub(crate) fn run(config: &Config) -> Result<Report> {
    let fixture = Fixture::load(&config.fixtures_dir, &config.fixture)?;
    let load_start = load_average();
    let http = SmartHttpServer::start()?;
    let naive_repo = http.publish(&fixture, "server-naive")?;
    let floor_repo = http.publish(&fixture, "server-floor")?;
    let tug_repo = http.publish(&fixture, "server-tug")?;

    // Distinct service/environment per request across every scenario: request numbers never
    // repeat (the fixture has services × 3 overlays).
    let tug_total: usize = config
        .clients
        .iter()
        .map(|c| c * config.requests_per_client)
        .sum();
    let naive_total = config.naive_writers * config.naive_updates_per_writer;
    let needed = naive_total + tug_total + 2 * (config.idle_requests + 1) + 1;
    if needed > fixture.service_dirs {
        bail!(
            "{needed} requests need as many overlays; {} has {}",
            fixture.name,
            fixture.service_dirs
        );
    }
    eprintln!("reading {needed} image bumps from {}", fixture.name);
    let bumps = fixture.image_bumps(1..=needed)?;
    let (naive_bumps, rest) = bumps.split_at(naive_total);
    let (idle_bumps, tug_bumps) = rest.split_at(2 * (config.idle_requests + 1));

    // One clone outside timing; every writer and the floor work in copies of it.
    eprintln!(
        "cloning {} for the naive writers and the floor",
        naive_repo.url
    );
    let (first, clone_time) = WorkTree::clone(&naive_repo.url)?;
    let mut trees = Vec::new();
    for _ in 1..config.naive_writers {
        trees.push(first.copy()?);
    }
    trees.push(first);
    let floor_tree = trees[0].copy()?;
    floor_tree.git(&["remote", "set-url", "origin", &floor_repo.url])?;
    eprintln!(
        "clone {:.1} s; running {} naive writers × {} updates",
        clone_time.as_secs_f64(),
        config.naive_writers,
        config.naive_updates_per_writer
    );
    let naive = run_naive(trees, naive_bumps, config.naive_updates_per_writer)?;

    let server = start_tug(&config.tug, config.batch_max, &tug_repo)?;
    let pid = server.pid().context("tug server has no process id")?;
    let endpoint = format!("{}/api/v1/deploy", server.http_url());
    let metrics_url = "/metrics";
    let counters = |server: &TugServer| -> Result<Counters> {
        let response = server.get(metrics_url, None)?;
        Ok(parse_counters(&response.text()))
    };

    // Warm-up (not counted): the server clones its mirror of the large fixture on first use.
    eprintln!("warming up tug server (mirror clone)");
    let started = Instant::now();
    let warm = run_clients(
        &endpoint,
        1,
        vec![deploy_body(&tug_repo.url, &idle_bumps[0], "9.0.0")],
    )?;
    check_all_succeeded("warm-up", &warm)?;
    eprintln!("warm-up {:.1} s", started.elapsed().as_secs_f64());
    // The floor's first push warms its side too.
    floor_push(&floor_tree, &idle_bumps[1], "8.0.0")?;

    eprintln!(
        "idle single requests: {} × (floor push, tug request)",
        config.idle_requests
    );
    let before = counters(&server)?;
    let mut idle = Idle {
        floor: Vec::new(),
        tug: Vec::new(),
        counters: Counters::default(),
    };
    for i in 0..config.idle_requests {
        let floor_bump = &idle_bumps[2 + 2 * i];
        let tug_bump = &idle_bumps[3 + 2 * i];
        let tag = format!("8.1.{i}");
        let floor_first = i % 2 == 0;
        if floor_first {
            idle.floor.push(floor_push(&floor_tree, floor_bump, &tag)?);
        }
        let one = run_clients(
            &endpoint,
            1,
            vec![deploy_body(&tug_repo.url, tug_bump, &tag)],
        )?;
        check_all_succeeded("idle request", &one)?;
        idle.tug.extend(one.outcomes.iter().map(|o| o.latency));
        if !floor_first {
            idle.floor.push(floor_push(&floor_tree, floor_bump, &tag)?);
        }
    }
    idle.counters = counters(&server)?.since(before);

    let mut tug_runs = Vec::new();
    let mut offset = 0;
    for (round, &clients) in config.clients.iter().enumerate() {
        let n = clients * config.requests_per_client;
        let bodies: Vec<Vec<u8>> = tug_bumps[offset..offset + n]
            .iter()
            .enumerate()
            .map(|(i, b)| deploy_body(&tug_repo.url, b, &format!("7.{round}.{i}")))
            .collect();
        offset += n;
        eprintln!(
            "tug: {clients} clients × {} requests",
            config.requests_per_client
        );
        let before = counters(&server)?;
        let sampler = RssSampler::start(pid);
        let run = run_clients(&endpoint, clients, bodies)?;
        let peak_rss_kib = sampler.finish()?;
        let counters = counters(&server)?.since(before);
        tug_runs.push(TugRun {
            clients,
            run,
            counters,
            peak_rss_kib,
        });
    }
    // Open loop: CI pipelines do not wait for each other, so requests arrive at a rate, not
    // one per client per push. The overlays are reused with fresh tags.
    let open_clients = config.clients.iter().copied().max().unwrap_or(64);
    let mut open = Vec::new();
    for (round, &offered) in config.open_rates.iter().enumerate() {
        let n = (offered * config.open_seconds).round().max(1.0) as usize;
        let bodies: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let bump = &tug_bumps[i % tug_bumps.len()];
                deploy_body(&tug_repo.url, bump, &format!("6.{round}.{i}"))
            })
            .collect();
        eprintln!(
            "tug open loop: {open_clients} clients offering {offered} requests/s for {} s",
            config.open_seconds
        );
        let before = counters(&server)?;
        let sampler = RssSampler::start(pid);
        let run = run_open_loop(&endpoint, open_clients, offered, bodies)?;
        let peak_rss_kib = sampler.finish()?;
        let counters = counters(&server)?.since(before);
        open.push(OpenRun {
            clients: open_clients,
            offered,
            run,
            counters,
            peak_rss_kib,
        });
    }
    let hwm_kib = memory_kib(pid, "VmHWM")?;
    let logs = server.logs();
    if let Some(path) = &config.log_copy {
        std::fs::write(path, &logs).with_context(|| format!("write {}", path.display()))?;
    }
    drop(server);

    let succeeded = 1
        + idle.tug.len()
        + tug_runs
            .iter()
            .map(|r| r.run.outcomes.iter().filter(|o| o.succeeded).count())
            .sum::<usize>()
        + open
            .iter()
            .map(|r| r.run.outcomes.iter().filter(|o| o.succeeded).count())
            .sum::<usize>();
    let verification = verify_remote(&fixture, &tug_repo, succeeded)?
        + &verify_remote(&fixture, &naive_repo, naive.landed)?;
    let bottleneck = batch_log_summary(&logs);

    let header = format!(
        "tug server benchmark on {}: {} service dirs, {} commits, {} files\nserver: {}\n{}; {} CPUs; load average (1/5/15 min) at start {load_start}, at end {}\n",
        fixture.name,
        fixture.service_dirs,
        fixture.commits,
        fixture.files,
        http.describe(),
        String::from_utf8_lossy(&run_git(None, &["--version"])?).trim(),
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        load_average(),
    );
    for repo in [&naive_repo, &floor_repo, &tug_repo] {
        http.unpublish(repo)?;
    }
    Ok(Report {
        header,
        naive,
        tug: tug_runs,
        open,
        idle,
        hwm_kib,
        verification,
        bottleneck,
    })
}

/// The `tug` binary serving `repo` as `manifests` on SQLite, without authentication, with
/// `limits.batch_max` set.
pub(crate) fn start_tug(tug: &Path, batch_max: u32, repo: &ServedRepo) -> Result<TugServer> {
    start_tug_with(tug, batch_max, None, repo)
}

/// [`start_tug`] with `limits.max_waiting_streams` set when given.
pub(crate) fn start_tug_with(
    tug: &Path,
    batch_max: u32,
    max_waiting_streams: Option<u32>,
    repo: &ServedRepo,
) -> Result<TugServer> {
    let waiting = max_waiting_streams
        .map(|n| format!("  max_waiting_streams: {n}\n"))
        .unwrap_or_default();
    let yaml = format!(
        "log:\n  level: info\nrepositories:\n  - name: manifests\n    url: \"{url}\"\nauth:\n  mode: none\nlimits:\n  batch_max: {batch_max}\n{waiting}",
        url = repo.url,
    );
    TugServer::start(tug, &yaml).with_context(|| format!("start {} server", tug.display()))
}

fn check_all_succeeded(what: &str, run: &LoadRun) -> Result<()> {
    if let Some(o) = run.outcomes.iter().find(|o| !o.succeeded) {
        bail!("{what} failed: {}", o.error.as_deref().unwrap_or("?"));
    }
    Ok(())
}

/// Sed and commit outside the clock, then the timed `git push`.
fn floor_push(tree: &WorkTree, bump: &ImageBump, tag: &str) -> Result<Duration> {
    tree.sed_image_tag(&bump.file, &bump.image, tag)?;
    tree.git(&[
        "commit",
        "--quiet",
        "-am",
        &format!("deploy({}): bump", bump.dir),
    ])?;
    tree.git(&["push", "--quiet", "origin", "HEAD:main"])
}

fn run_naive(trees: Vec<WorkTree>, bumps: &[ImageBump], per_writer: usize) -> Result<NaiveResult> {
    let writers = trees.len();
    let started = Instant::now();
    let results: Vec<Result<Vec<(Duration, usize)>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = trees
            .iter()
            .enumerate()
            .map(|(w, tree)| {
                // Writer w owns requests w, w + writers, …: no two writers touch one file.
                let mine: Vec<&ImageBump> = bumps
                    .iter()
                    .skip(w)
                    .step_by(writers)
                    .take(per_writer)
                    .collect();
                scope.spawn(move || naive_writer(tree, w, &mine))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a naive writer panicked")))
            })
            .collect()
    });
    let wall = started.elapsed();
    let mut latencies = Vec::new();
    let mut attempts = 0;
    for r in results {
        for (latency, a) in r? {
            latencies.push(latency);
            attempts += a;
        }
    }
    Ok(NaiveResult {
        writers,
        landed: latencies.len(),
        attempts,
        wall,
        latencies,
    })
}

/// One naive writer: per update, fetch + reset + sed + add + commit + push, from the fetch again
/// when the push is rejected. Returns (latency from first attempt to accepted push, attempts).
fn naive_writer(tree: &WorkTree, w: usize, bumps: &[&ImageBump]) -> Result<Vec<(Duration, usize)>> {
    let mut out = Vec::new();
    for (n, bump) in bumps.iter().enumerate() {
        let started = Instant::now();
        let tag = format!("4.{w}.{n}");
        let mut attempts = 0;
        loop {
            attempts += 1;
            if attempts > NAIVE_MAX_ATTEMPTS {
                bail!(
                    "naive writer {w}: update {n} not landed after {NAIVE_MAX_ATTEMPTS} attempts"
                );
            }
            tree.git(&["fetch", "--quiet", "origin"])?;
            tree.git(&["reset", "--quiet", "--hard", "origin/main"])?;
            tree.sed_image_tag(&bump.file, &bump.image, &tag)?;
            tree.git(&["add", &bump.file])?;
            tree.git(&[
                "commit",
                "--quiet",
                "-m",
                &format!("deploy({}): writer {w} update {n}", bump.dir),
            ])?;
            // A rejected push (another writer landed first) is the expected failure here.
            if tree
                .git(&["push", "--quiet", "origin", "HEAD:main"])
                .is_ok()
            {
                break;
            }
        }
        out.push((started.elapsed(), attempts));
    }
    Ok(out)
}

/// The remote gained exactly `expected` commits and its history has no merge.
fn verify_remote(fixture: &Fixture, repo: &ServedRepo, expected: usize) -> Result<String> {
    let git_dir = path_str(&repo.path)?;
    let count = |args: &[&str]| -> Result<usize> {
        let mut all = vec!["--git-dir", git_dir, "rev-list", "--count"];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&run_git(None, &all)?)
            .trim()
            .parse::<usize>()
            .with_context(|| format!("count commits in {}", repo.path.display()))
    };
    let total = count(&[BRANCH])?;
    let merges = count(&["--merges", BRANCH])?;
    let gained = total - fixture.commits;
    let ok = gained == expected && merges == 0;
    let line = format!(
        "  {}: gained {gained} commits for {expected} succeeded requests, {merges} merges: {}\n",
        repo.url,
        if ok { "OK" } else { "MISMATCH" }
    );
    if !ok {
        bail!("remote check failed:\n{line}");
    }
    Ok(line)
}

/// Summary of the writer's `landed batch` log lines: batches, tasks, attempts and where the
/// time of a batch went (push against the rest).
pub(crate) fn batch_log_summary(logs: &str) -> String {
    let mut batches = 0usize;
    let mut tasks = 0u64;
    let mut attempts = 0u64;
    let mut push_ms = 0u64;
    let mut apply_ms = 0u64;
    let mut record_ms = 0u64;
    let mut total_ms = 0u64;
    let mut largest = 0u64;
    for line in logs.lines().filter(|l| l.contains("landed batch")) {
        let line = &strip_ansi(line);
        let field = |name: &str| -> u64 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
                .unwrap_or(0)
        };
        batches += 1;
        tasks += field("tasks");
        attempts += field("attempts");
        push_ms += field("push_ms");
        apply_ms += field("apply_ms");
        record_ms += field("record_ms");
        total_ms += field("total_ms");
        largest = largest.max(field("tasks"));
    }
    if batches == 0 {
        return "  no `landed batch` lines in the server log\n".to_owned();
    }
    let b = batches as f64;
    format!(
        "  {batches} batches, {tasks} requests (largest {largest}), {attempts} push attempts; per batch: push {:.1} ms, whole batch {:.1} ms (edits and objects {:.1} ms, recording results {:.1} ms)\n",
        push_ms as f64 / b,
        total_ms as f64 / b,
        apply_ms as f64 / b,
        record_ms as f64 / b,
    )
}

/// The log's text without the colour escapes (`ESC [ … m`) a terminal-style formatter adds.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn rate(n: usize, wall: Duration) -> f64 {
    n as f64 / wall.as_secs_f64().max(1e-9)
}

/// Nearest-rank percentile of latencies, in ms.
fn percentile_ms(samples: &[Duration], p: usize) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut v: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    v.sort_by(f64::total_cmp);
    let rank = (v.len() * p).div_ceil(100).max(1);
    v[rank - 1]
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

impl Report {
    pub(crate) fn render(&self) -> String {
        let mut out = self.header.clone();
        let n = &self.naive;
        let naive_rate = rate(n.landed, n.wall);
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  scenario                 clients  requests  ok     req/s   p50 ms   p95 ms   p99 ms  pushes  req/push  retries  peak RSS MiB"
        );
        let _ = writeln!(
            out,
            "  naive (fetch…push)       {:>7}  {:>8}  {:>4}  {:>7.2}  {:>7}  {:>7}  {:>7}  {:>6}  {:>8}  {:>7}  {:>12}",
            n.writers,
            n.landed,
            n.landed,
            naive_rate,
            ms(percentile_ms(&n.latencies, 50)),
            ms(percentile_ms(&n.latencies, 95)),
            ms(percentile_ms(&n.latencies, 99)),
            n.attempts,
            "1.00",
            n.attempts - n.landed,
            "-"
        );
        for t in &self.tug {
            let lat: Vec<Duration> = t.run.outcomes.iter().map(|o| o.latency).collect();
            let ok = t.run.outcomes.iter().filter(|o| o.succeeded).count();
            let _ = writeln!(
                out,
                "  tug server               {:>7}  {:>8}  {:>4}  {:>7.1}  {:>7}  {:>7}  {:>7}  {:>6}  {:>8.1}  {:>7}  {:>12.1}",
                t.clients,
                t.run.outcomes.len(),
                ok,
                rate(ok, t.run.wall),
                ms(percentile_ms(&lat, 50)),
                ms(percentile_ms(&lat, 95)),
                ms(percentile_ms(&lat, 99)),
                t.counters.batches,
                t.counters.batched_requests / t.counters.batches.max(1.0),
                t.counters.push_retries,
                t.peak_rss_kib as f64 / 1024.0
            );
        }
        let _ = writeln!(
            out,
            "  naive: {:.2} push attempts per landed commit, wall {:.1} s",
            n.attempts as f64 / n.landed.max(1) as f64,
            n.wall.as_secs_f64()
        );
        for t in &self.tug {
            if let Some(o) = t.run.outcomes.iter().find(|o| !o.succeeded) {
                let _ = writeln!(
                    out,
                    "  tug {} clients: first failure: {}",
                    t.clients,
                    o.error.as_deref().unwrap_or("?")
                );
            }
        }

        if !self.open.is_empty() {
            let _ = writeln!(
                out,
                "\nopen loop (requests sent at a fixed rate, latency from the scheduled send to the final line)"
            );
            let _ = writeln!(
                out,
                "  clients  offered/s  requests  ok   acked req/s   p50 ms   p95 ms   p99 ms  pushes  req/push  peak RSS MiB"
            );
            for o in &self.open {
                let lat: Vec<Duration> = o.run.outcomes.iter().map(|x| x.latency).collect();
                let ok = o.run.outcomes.iter().filter(|x| x.succeeded).count();
                let _ = writeln!(
                    out,
                    "  {:>7}  {:>9.0}  {:>8}  {:>4}  {:>11.1}  {:>7}  {:>7}  {:>7}  {:>6}  {:>8.1}  {:>12.1}",
                    o.clients,
                    o.offered,
                    o.run.outcomes.len(),
                    ok,
                    rate(ok, o.run.wall),
                    ms(percentile_ms(&lat, 50)),
                    ms(percentile_ms(&lat, 95)),
                    ms(percentile_ms(&lat, 99)),
                    o.counters.batches,
                    o.counters.batched_requests / o.counters.batches.max(1.0),
                    o.peak_rss_kib as f64 / 1024.0
                );
                if let Some(x) = o.run.outcomes.iter().find(|x| !x.succeeded) {
                    let _ = writeln!(
                        out,
                        "  offered {:.0}/s: first failure: {}",
                        o.offered,
                        x.error.as_deref().unwrap_or("?")
                    );
                }
            }
        }

        let floor = summarize(&self.idle.floor);
        let idle = summarize(&self.idle.tug);
        let _ = writeln!(
            out,
            "\nidle single request (one at a time, alternated with the floor)"
        );
        let _ = writeln!(
            out,
            "  ms per request                      median       p95      mean"
        );
        for (label, s) in [
            ("floor: git push", floor),
            ("tug: POST /api/v1/deploy", idle),
        ] {
            if let Some(s) = s {
                let _ = writeln!(
                    out,
                    "  {label:<32}{:>9}{:>10}{:>10}",
                    ms(s.median_ms),
                    ms(s.p95_ms),
                    ms(s.mean_ms)
                );
            }
        }
        let _ = writeln!(
            out,
            "  pushes {} for {} requests, retries {}",
            self.idle.counters.batches,
            self.idle.tug.len(),
            self.idle.counters.push_retries
        );
        let _ = writeln!(
            out,
            "\nserver memory: VmHWM {:.1} MiB at the end",
            self.hwm_kib as f64 / 1024.0
        );
        let _ = writeln!(out, "\nremote checks:\n{}", self.verification);
        let _ = writeln!(
            out,
            "server log (landed batch lines, whole run):\n{}",
            self.bottleneck
        );
        out.push_str(&self.render_targets(naive_rate, floor, idle));
        out
    }

    fn render_targets(
        &self,
        naive_rate: f64,
        floor: Option<crate::stats::Summary>,
        idle: Option<crate::stats::Summary>,
    ) -> String {
        let mut out = String::from("targets:\n");
        if let Some(t) = self.tug.iter().max_by_key(|t| t.clients) {
            let ok = t.run.outcomes.iter().filter(|o| o.succeeded).count();
            let r = rate(ok, t.run.wall);
            let lat: Vec<Duration> = t.run.outcomes.iter().map(|o| o.latency).collect();
            let p99 = percentile_ms(&lat, 99);
            let _ = writeln!(
                out,
                "  {} clients ≥ {} requests/s: {} req/s = {:.3} of target  {}",
                t.clients,
                thousands(TARGET_RPS_64),
                thousands(r),
                r / TARGET_RPS_64,
                verdict(r >= TARGET_RPS_64)
            );
            let speedup = r / naive_rate.max(1e-9);
            let _ = writeln!(
                out,
                "  {} clients ≥ {TARGET_SPEEDUP}× naive ({} writers, {naive_rate:.2}/s): {speedup:.0}×  {}",
                t.clients,
                self.naive.writers,
                verdict(speedup >= TARGET_SPEEDUP)
            );
            let _ = writeln!(
                out,
                "  {} clients p99 ≤ {TARGET_P99_MS} ms: {} ms  {}",
                t.clients,
                ms(p99),
                verdict(p99 <= TARGET_P99_MS)
            );
        }
        if let Some(o) = self
            .open
            .iter()
            .max_by(|a, b| a.offered.total_cmp(&b.offered))
        {
            let ok = o.run.outcomes.iter().filter(|x| x.succeeded).count();
            let r = rate(ok, o.run.wall);
            let lat: Vec<Duration> = o.run.outcomes.iter().map(|x| x.latency).collect();
            let p99 = percentile_ms(&lat, 99);
            let _ = writeln!(
                out,
                "  open loop, {} clients offering {:.0}/s: {} req/s acked = {:.3} of {}, {:.0}× naive, p99 {} ms  {}",
                o.clients,
                o.offered,
                thousands(r),
                r / TARGET_RPS_64,
                thousands(TARGET_RPS_64),
                r / naive_rate.max(1e-9),
                ms(p99),
                verdict(
                    r >= TARGET_RPS_64
                        && p99 <= TARGET_P99_MS
                        && r / naive_rate.max(1e-9) >= TARGET_SPEEDUP
                )
            );
        }
        if let Some(t) = self.tug.iter().find(|t| t.clients == 8) {
            let all_ok = t.run.outcomes.iter().all(|o| o.succeeded);
            let first_push =
                all_ok && t.counters.push_retries == 0.0 && t.counters.push_conflicts == 0.0;
            let _ = writeln!(
                out,
                "  8 clients all on their first push: {} of {} succeeded, {} push retries, {} conflicts  {}",
                t.run.outcomes.iter().filter(|o| o.succeeded).count(),
                t.run.outcomes.len(),
                t.counters.push_retries,
                t.counters.push_conflicts,
                verdict(first_push)
            );
        }
        if let (Some(f), Some(i)) = (floor, idle) {
            let bound = FLOOR_FACTOR * f.median_ms + FLOOR_ALLOWANCE_MS;
            let _ = writeln!(
                out,
                "  idle single tug / (1.2×floor + 5ms) = {} / (1.2×{} + 5) = {:.2}  {}",
                ms(i.median_ms),
                ms(f.median_ms),
                i.median_ms / bound,
                verdict(i.median_ms <= bound)
            );
        }
        let peak = self
            .tug
            .iter()
            .map(|t| t.peak_rss_kib)
            .chain(self.open.iter().map(|o| o.peak_rss_kib))
            .max()
            .unwrap_or(0)
            .max(self.hwm_kib) as f64
            / 1024.0;
        let _ = writeln!(
            out,
            "  RSS ≤ {TARGET_RSS_MIB} MiB: peak {peak:.1} MiB (VmHWM)  {}",
            verdict(peak <= TARGET_RSS_MIB)
        );
        out
    }
}

/// `CARGO_TARGET_DIR/release/tug` or the workspace's `target/release/tug`.
pub(crate) fn default_tug_binary() -> PathBuf {
    let dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    Path::new(&dir).join("release").join("tug")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_lines_are_read_through_colour_escapes() {
        let log = "\u{1b}[2m2026\u{1b}[0m landed batch \u{1b}[3mtasks\u{1b}[0m\u{1b}[2m=\u{1b}[0m3 \u{1b}[3mattempts\u{1b}[0m\u{1b}[2m=\u{1b}[0m1 push_ms=60 total_ms=80\nother line\nlanded batch tasks=1 attempts=2 push_ms=40 total_ms=60\n";
        let summary = batch_log_summary(log);
        assert!(
            summary.contains("2 batches, 4 requests (largest 3), 3 push attempts"),
            "{summary}"
        );
        assert!(
            summary.contains("push 50.0 ms, whole batch 70.0 ms"),
            "{summary}"
        );
    }
}
