//! The replica benchmark, on the large fixture over smart HTTP on loopback, side by side in one
//! run:
//!
//! * store — one `tug server`, one branch, N closed-loop clients: SQLite against PostgreSQL (a
//!   throwaway server with `fsync=on`, so both stores pay for durability).
//! * spread — requests across many branches: one replica against three on one PostgreSQL, the
//!   clients spread over the replicas.
//! * chaos — three replicas, a hot branch and ten others, clients that retry with their
//!   `Idempotency-Key` when their replica goes away; every `kill_every` the replica holding the
//!   hot branch's lease is killed (SIGKILL) and restarted, the git server is restarted once, and
//!   a person pushes to the hot branch every 100 ms. Afterwards: every acknowledged request is in
//!   git exactly once, every human commit is there, history is linear; failover is the time from
//!   a kill to the hot branch's next landed task (read from the job store). Beside the person, a
//!   plain git writer (commit, push, `pull --rebase` after a lost race) lands a commit every few
//!   seconds on the same branch: the floor of landing there under the same contention.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use serde_json::json;
use tug_testkit::{HumanPusher, Postgres, TugServer, run_git, trailer_values_on_all_branches};

use crate::fixture::{Fixture, ImageBump, path_str};
use crate::load::{LoadRun, run_clients_on};
use crate::servers::{ServedRepo, SmartHttpServer};
use crate::stats::load_average;

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub fixtures_dir: PathBuf,
    pub fixture: String,
    pub tug: PathBuf,
    /// Closed-loop clients of the store and spread runs.
    pub clients: usize,
    /// Requests of each spread run.
    pub requests: usize,
    /// Requests of each store run (half per round).
    pub store_requests: usize,
    /// Branches of the spread runs (0 skips them).
    pub branches: usize,
    /// Requests of the chaos run, and its clients.
    pub chaos_requests: usize,
    pub chaos_clients: usize,
    pub kill_every: Duration,
    /// How often a person pushes to the hot branch during the chaos run (none: nobody does).
    pub human_every: Option<Duration>,
}

/// How often the plain git writer of the chaos run commits: long enough for its clone to be
/// stale at every commit.
const FLOOR_WRITER_EVERY: Duration = Duration::from_secs(2);

struct Run {
    name: String,
    run: LoadRun,
}

struct Chaos {
    requests: usize,
    wall: Duration,
    kills: usize,
    retried: usize,
    lost: usize,
    duplicated: usize,
    failovers: Vec<Duration>,
    /// Human commits pushed, and those missing from the hot branch afterwards.
    human_commits: usize,
    human_lost: usize,
    /// The floor of landing under the same contention: a plain git client (commit, push, on a
    /// lost race `pull --rebase` and push again) that commits every few seconds from a clone
    /// gone stale meanwhile — as a writer taking a branch over does — racing the same person
    /// under the same load. Its commits, and the time each took from first push to landed.
    floor_landing: Vec<Duration>,
    /// Merge commits on any branch (history must stay linear).
    merges: usize,
}

pub(crate) struct Report {
    header: String,
    runs: Vec<Run>,
    /// Per store of the one-branch runs: the writer's batches, from the server logs.
    batches: Vec<(String, String)>,
    chaos: Option<Chaos>,
}

const REPOSITORY: &str = "manifests";

fn body(url: &str, bump: &ImageBump, tag: &str, branch: &str) -> Vec<u8> {
    json!({
        "commitSpec": {"CommitMessage": format!("deploy({}): bump image to {tag}", bump.dir)},
        "deploySpecs": [{
            "url": url,
            "updates": [{
                "branch": branch,
                "paths": [{
                    "path": bump.dir,
                    "kustomize": {"images": [{"name": bump.image, "newTag": tag}]},
                }],
            }],
        }],
    })
    .to_string()
    .into_bytes()
}

fn config_yaml(url: &str, postgres: Option<&str>) -> String {
    let store = postgres
        .map(|db| format!("store:\n  postgres:\n    url: \"{db}\"\n    max_connections: 16\n"))
        .unwrap_or_default();
    format!(
        "{store}log:\n  level: \"info,tug_git::land=debug\"\nrepositories:\n  - name: {REPOSITORY}\n    url: \"{url}\"\n\
         auth:\n  mode: none\nlimits:\n  batch_max: 256\n"
    )
}

fn start(config: &Config, repo: &ServedRepo, postgres: Option<&str>) -> Result<TugServer> {
    TugServer::start(&config.tug, &config_yaml(&repo.url, postgres))
        .with_context(|| format!("start {}", config.tug.display()))
}

fn make_branches(repo: &ServedRepo, branches: usize) -> Result<()> {
    let git_dir = path_str(&repo.path)?;
    for b in 0..branches {
        run_git(
            None,
            &["--git-dir", git_dir, "branch", &format!("b-{b:03}"), "main"],
        )?;
    }
    Ok(())
}

/// Warms every replica's mirror (a clone of the large fixture) outside the timing.
fn warm(replicas: &[TugServer], repo: &ServedRepo, bump: &ImageBump) -> Result<()> {
    for (i, replica) in replicas.iter().enumerate() {
        let endpoint = format!("{}/api/v1/deploy", replica.http_url());
        let run = run_clients_on(
            &[endpoint],
            1,
            vec![body(&repo.url, bump, &format!("warm-{i}"), "main")],
        )?;
        if let Some(o) = run.outcomes.iter().find(|o| !o.succeeded) {
            bail!("warm-up failed: {}", o.error.as_deref().unwrap_or("?"));
        }
    }
    Ok(())
}

pub(crate) fn run(config: &Config) -> Result<Report> {
    let fixture = Fixture::load(&config.fixtures_dir, &config.fixture)?;
    let load_start = load_average();
    let mut http = SmartHttpServer::start()?;
    let most = config
        .requests
        .max(config.store_requests)
        .max(config.chaos_requests);
    let bumps = fixture.image_bumps(1..=most.min(2000))?;
    let bump = |k: usize| &bumps[k % bumps.len()];
    let mut runs = Vec::new();

    // One branch: SQLite against PostgreSQL, alternating over two rounds so that both see the
    // same machine load; each row sums its rounds.
    let mut store_runs: Vec<(String, LoadRun)> = Vec::new();
    let mut store_logs: Vec<(String, String)> = Vec::new();
    for round in 0..2 {
        for store in ["sqlite", "postgres"] {
            let postgres = (store == "postgres")
                .then(Postgres::start_durable)
                .transpose()?;
            let database = postgres
                .as_ref()
                .map(|pg| pg.create_database("tug"))
                .transpose()?;
            let repo = http.publish(&fixture, &format!("store-{store}-{round}"))?;
            let server = start(config, &repo, database.as_deref())?;
            warm(std::slice::from_ref(&server), &repo, bump(0))?;
            let requests = config.store_requests / 2;
            eprintln!(
                "store {store}, round {round}: {requests} requests, {} clients, one branch",
                config.clients
            );
            let bodies = (0..requests)
                .map(|k| body(&repo.url, bump(k), &format!("s{round}-{k}"), "main"))
                .collect();
            let run = run_clients_on(
                &[format!("{}/api/v1/deploy", server.http_url())],
                config.clients,
                bodies,
            )?;
            let name = format!("{store}, 1 replica, 1 branch");
            match store_logs.iter_mut().find(|(n, _)| *n == store) {
                Some((_, logs)) => logs.push_str(&server.logs()),
                None => store_logs.push((store.to_owned(), server.logs())),
            }
            match store_runs.iter_mut().find(|(n, _)| *n == name) {
                Some((_, total)) => {
                    total.outcomes.extend(run.outcomes);
                    total.wall += run.wall;
                }
                None => store_runs.push((name, run)),
            }
            drop(server);
            http.unpublish(&repo)?;
        }
    }
    runs.extend(store_runs.into_iter().map(|(name, run)| Run { name, run }));

    // Many branches: one replica against three (none with `branches` 0).
    let spread: &[usize] = if config.branches == 0 { &[] } else { &[1, 3] };
    for &replicas in spread {
        let postgres = Postgres::start_durable()?;
        let database = postgres.create_database("tug")?;
        let repo = http.publish(&fixture, &format!("spread-{replicas}"))?;
        make_branches(&repo, config.branches)?;
        let servers = (0..replicas)
            .map(|_| start(config, &repo, Some(&database)))
            .collect::<Result<Vec<_>>>()?;
        warm(&servers, &repo, bump(0))?;
        eprintln!(
            "spread: {replicas} replica(s), {} branches, {} requests, {} clients",
            config.branches, config.requests, config.clients
        );
        let bodies = (0..config.requests)
            .map(|k| {
                let branch = format!("b-{:03}", k % config.branches);
                body(&repo.url, bump(k), &format!("p{k}"), &branch)
            })
            .collect();
        let endpoints: Vec<String> = servers
            .iter()
            .map(|s| format!("{}/api/v1/deploy", s.http_url()))
            .collect();
        let run = run_clients_on(&endpoints, config.clients, bodies)?;
        runs.push(Run {
            name: format!(
                "postgres, {replicas} replica{}, {} branches",
                if replicas == 1 { "" } else { "s" },
                config.branches
            ),
            run,
        });
        drop(servers);
        http.unpublish(&repo)?;
    }

    let chaos = if config.chaos_requests > 0 {
        Some(chaos(config, &fixture, &mut http, &bumps)?)
    } else {
        None
    };
    let header = format!(
        "replicas: fixture {} ({} overlays), {}; load before {load_start}, after {}\n",
        fixture.name,
        fixture.service_dirs,
        http.describe(),
        load_average()
    );
    let batches = store_logs
        .into_iter()
        .map(|(store, logs)| (store, crate::server::batch_log_summary(&logs)))
        .collect();
    Ok(Report {
        header,
        runs,
        batches,
        chaos,
    })
}

/// Milliseconds since the Unix epoch, as the job store writes them.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn chaos(
    config: &Config,
    fixture: &Fixture,
    http: &mut SmartHttpServer,
    bumps: &[ImageBump],
) -> Result<Chaos> {
    let postgres = Postgres::start_durable()?;
    let database = postgres.create_database("tug")?;
    let repo = http.publish(fixture, "chaos")?;
    make_branches(&repo, 10)?;
    let mut servers = (0..3)
        .map(|_| start(config, &repo, Some(&database)))
        .collect::<Result<Vec<_>>>()?;
    warm(&servers, &repo, &bumps[0])?;
    let addresses: Vec<SocketAddr> = servers.iter().map(TugServer::http_addr).collect();
    eprintln!(
        "chaos: 3 replicas, {} requests, {} clients, the hot branch's writer killed every {:?}, \
         the git server restarted once, a person pushing to the hot branch every {:?}",
        config.chaos_requests, config.chaos_clients, config.kill_every, config.human_every
    );
    let human = config
        .human_every
        .map(|every| HumanPusher::start(&repo.url, "main", every))
        .transpose()
        .context("start the person pushing to the hot branch")?;
    let floor = config
        .human_every
        .map(|_| HumanPusher::start_as("plain-writer", &repo.url, "main", FLOOR_WRITER_EVERY))
        .transpose()
        .context("start the plain git writer")?;
    let done = AtomicBool::new(false);
    let started = Instant::now();
    let (results, kills) = std::thread::scope(|scope| -> Result<_> {
        let killer = scope.spawn(|| -> Result<Vec<i64>> {
            let mut kills = Vec::new();
            let mut next = Instant::now() + config.kill_every;
            // Once, between the first two kills: every connection to the git host drops.
            let mut restart_git = Some(next + config.kill_every / 2);
            while !done.load(Ordering::SeqCst) {
                if restart_git.is_some_and(|at| Instant::now() >= at) {
                    http.restart()?;
                    restart_git = None;
                }
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                next = Instant::now() + config.kill_every;
                let owner = postgres.psql(
                    "tug",
                    &format!(
                        "SELECT owner FROM branch_leases WHERE repository = '{REPOSITORY}' \
                         AND branch = 'main' AND expires_at > {}",
                        now_ms()
                    ),
                )?;
                let holder = servers.iter().position(|s| {
                    std::fs::read_to_string(s.data_dir().join("writer-owner"))
                        .is_ok_and(|o| !owner.is_empty() && o.trim() == owner)
                });
                let Some(holder) = holder else { continue };
                kills.push(now_ms());
                servers[holder].kill9()?;
                servers[holder].restart()?;
            }
            Ok(kills)
        });
        let clients: Vec<_> = (0..config.chaos_clients)
            .map(|c| {
                let (addresses, url) = (&addresses, &repo.url);
                scope.spawn(move || -> Result<Vec<(String, usize)>> {
                    (c..config.chaos_requests)
                        .step_by(config.chaos_clients)
                        .map(|k| {
                            let branch = if k.is_multiple_of(2) {
                                "main".to_owned()
                            } else {
                                format!("b-{:03}", (k / 2) % 10)
                            };
                            let body =
                                body(url, &bumps[k % bumps.len()], &format!("c{k}"), &branch);
                            deploy_until_done(addresses, &body, k)
                        })
                        .collect()
                })
            })
            .collect();
        let mut results = Vec::new();
        let mut failure = None;
        for client in clients {
            match client.join() {
                Ok(Ok(r)) => results.extend(r),
                Ok(Err(e)) => failure = Some(e),
                Err(_) => failure = Some(anyhow::anyhow!("a chaos client panicked")),
            }
        }
        done.store(true, Ordering::SeqCst);
        let kills = killer
            .join()
            .map_err(|_| anyhow::anyhow!("the killer thread panicked"))??;
        if let Some(e) = failure {
            return Err(e);
        }
        Ok((results, kills))
    })?;
    let wall = started.elapsed();
    // Kept for a look at what the writers did (the batch lines, lost races, takeovers).
    for (i, server) in servers.iter().enumerate() {
        let path = std::env::temp_dir().join(format!("tug-bench-chaos-replica-{i}.log"));
        std::fs::write(&path, server.logs())
            .with_context(|| format!("write {}", path.display()))?;
    }
    eprintln!(
        "chaos: the replicas' logs are in {}/tug-bench-chaos-replica-*.log",
        std::env::temp_dir().display()
    );
    let mut human = human
        .map(HumanPusher::stop)
        .transpose()
        .context("stop the person pushing")?
        .unwrap_or_default();
    let floor = floor
        .map(HumanPusher::stop)
        .transpose()
        .context("stop the plain git writer")?
        .unwrap_or_default();
    human.commits.extend(floor.commits.iter().cloned());
    let on_main = run_git(Some(&repo.path), &["rev-list", "--first-parent", "main"])?;
    let on_main = String::from_utf8_lossy(&on_main);
    let human_lost = human
        .commits
        .iter()
        .filter(|c| !on_main.contains(c.as_str()))
        .count();
    let merges = run_git(Some(&repo.path), &["rev-list", "--all", "--min-parents=2"])?
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();

    // Exactly once: the Tug-Request trailers on every branch against the acknowledged jobs.
    let mut landed: BTreeMap<String, usize> = BTreeMap::new();
    for id in trailer_values_on_all_branches(&repo.path, "Tug-Request")? {
        *landed.entry(id).or_default() += 1;
    }
    let lost = results
        .iter()
        .filter(|(id, _)| !landed.contains_key(id))
        .count();
    let duplicated = landed.values().filter(|n| **n > 1).count();

    // Failover: from each kill to the hot branch's next task recorded as landed.
    let mut failovers = Vec::new();
    for kill in &kills {
        let next = postgres.psql(
            "tug",
            &format!(
                "SELECT min(updated_at) FROM tasks WHERE repository = '{REPOSITORY}' \
                 AND branch = 'main' AND state = 'succeeded' AND updated_at > {kill}"
            ),
        )?;
        if let Ok(at) = next.parse::<i64>() {
            failovers.push(Duration::from_millis(u64::try_from(at - kill).unwrap_or(0)));
        }
    }
    Ok(Chaos {
        requests: results.len(),
        wall,
        kills: kills.len(),
        retried: results.iter().filter(|(_, tries)| *tries > 1).count(),
        lost,
        duplicated,
        failovers,
        human_commits: human.commits.len(),
        human_lost,
        floor_landing: floor.landing,
        merges,
    })
}

/// Sends request `k` until a replica gives its final result (see
/// [`tug_testkit::deploy_until_done`]): its job id and the number of tries.
fn deploy_until_done(replicas: &[SocketAddr], body: &[u8], k: usize) -> Result<(String, usize)> {
    let key = format!("chaos-{k}");
    let headers = [
        ("Content-Type", "application/json"),
        ("Idempotency-Key", key.as_str()),
    ];
    let landed =
        tug_testkit::deploy_until_done(replicas, &headers, body, k, Duration::from_secs(600))
            .map_err(|e| anyhow::anyhow!("request {k}: {e}"))?;
    Ok((landed.job_id, landed.tries))
}

fn percentile_ms(samples: &[Duration], p: usize) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut v: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    v.sort_by(f64::total_cmp);
    v[(v.len() * p).div_ceil(100).max(1) - 1]
}

impl Report {
    pub(crate) fn render(&self) -> String {
        let mut out = self.header.clone();
        let _ = writeln!(
            out,
            "\n  scenario                              requests  ok      req/s   p50 ms   p99 ms"
        );
        let mut rates = BTreeMap::new();
        for r in &self.runs {
            let ok = r.run.outcomes.iter().filter(|o| o.succeeded).count();
            let lat: Vec<Duration> = r.run.outcomes.iter().map(|o| o.latency).collect();
            let rate = ok as f64 / r.run.wall.as_secs_f64().max(1e-9);
            rates.insert(r.name.clone(), rate);
            let _ = writeln!(
                out,
                "  {:<36}  {:>8}  {:>5}  {:>7.1}  {:>7.0}  {:>7.0}",
                r.name,
                r.run.outcomes.len(),
                ok,
                rate,
                percentile_ms(&lat, 50),
                percentile_ms(&lat, 99)
            );
        }
        let ratio = |a: &str, b: &str| {
            let (a, b) = (
                rates
                    .iter()
                    .find(|(k, _)| k.starts_with(a))
                    .map(|(_, v)| *v),
                rates
                    .iter()
                    .find(|(k, _)| k.starts_with(b))
                    .map(|(_, v)| *v),
            );
            a.zip(b).map(|(a, b)| a / b.max(1e-9))
        };
        if let Some(r) = ratio(
            "postgres, 1 replica, 1 branch",
            "sqlite, 1 replica, 1 branch",
        ) {
            let _ = writeln!(
                out,
                "  PostgreSQL / SQLite, one branch: {r:.2} (target ≥ 0.9)"
            );
            for (store, summary) in &self.batches {
                let _ = write!(out, "  {store} writer:{summary}");
            }
        }
        if let Some(r) = ratio("postgres, 3 replicas", "postgres, 1 replica, 100") {
            let _ = writeln!(out, "  3 replicas / 1 replica, many branches: {r:.2}");
        }
        // Why requests did not succeed, most frequent first.
        for r in &self.runs {
            let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
            for o in r.run.outcomes.iter().filter(|o| !o.succeeded) {
                let reason: String = failure_reason(o.error.as_deref().unwrap_or("?"))
                    .chars()
                    .take(240)
                    .collect();
                *reasons.entry(reason).or_default() += 1;
            }
            let mut reasons: Vec<_> = reasons.into_iter().collect();
            reasons.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
            for (reason, n) in reasons.iter().take(3) {
                let _ = writeln!(out, "  {}: {n} × {reason}", r.name);
            }
        }
        if let Some(c) = &self.chaos {
            let mut f = c.failovers.clone();
            f.sort();
            let p50 = f.get(f.len() / 2).copied().unwrap_or_default();
            let max = f.last().copied().unwrap_or_default();
            let _ = writeln!(
                out,
                "  chaos: {} requests in {:.1} s over 3 replicas, {} kills of the hot branch's \
                 writer, the git server restarted once, {} requests retried by their client; \
                 lost {}, duplicated {}; {} human commits, {} lost; {} merge commits; failover \
                 (kill → the hot branch's next landed task) p50 {:.1} s, max {:.1} s (target ≤ 10 s)",
                c.requests,
                c.wall.as_secs_f64(),
                c.kills,
                c.retried,
                c.lost,
                c.duplicated,
                c.human_commits,
                c.human_lost,
                c.merges,
                p50.as_secs_f64(),
                max.as_secs_f64()
            );
            if !c.floor_landing.is_empty() {
                let mut f = c.floor_landing.clone();
                f.sort();
                let p50 = f[f.len() / 2];
                let max = f[f.len() - 1];
                let over = f.iter().filter(|d| **d > Duration::from_secs(10)).count();
                let _ = writeln!(
                    out,
                    "  floor: a plain git writer (a commit every {:?} from a stale clone, `pull \
                     --rebase` and push again after each lost race) against the same person and \
                     load landed {} commits: p50 {:.1} s, max {:.1} s from first push to landed, \
                     {over} over 10 s",
                    FLOOR_WRITER_EVERY,
                    f.len(),
                    p50.as_secs_f64(),
                    max.as_secs_f64()
                );
            }
        }
        out
    }
}

/// What went wrong, without what differs between requests: for a failed job's final line, the
/// errors of its branches (else its message); anything else as it is.
fn failure_reason(error: &str) -> String {
    let json = error
        .find('{')
        .and_then(|at| serde_json::from_str::<serde_json::Value>(&error[at..]).ok());
    let Some(result) = json.as_ref().map(|v| &v["result"]) else {
        return error.to_owned();
    };
    let errors: Vec<&str> = result["updates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u["error"].as_str())
        .collect();
    if errors.is_empty() {
        result["message"].as_str().unwrap_or(error).to_owned()
    } else {
        errors.join("; ")
    }
}
