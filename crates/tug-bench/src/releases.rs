//! The release benchmarks: `GET /api/v1/status/{service}` on a server that knows every
//! service of the large fixture in three environments, and one promotion from request to push
//! against a bare `git push`.
//!
//! The release index is seeded from git alone: one release commit per service and environment
//! (written with `ReleaseRecord::to_commit_message`, so its trailers are the ones the server
//! writes) is appended to a copy of the fixture, and `POST /api/v1/reindex` rebuilds the index
//! from that history.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tug_release::{Intent, Person, ReleaseRecord};
use tug_testkit::TugServer;

use crate::fixture::{Fixture, ImageBump, path_str};
use crate::servers::{ServedRepo, SmartHttpServer};
use crate::stats::{Summary, load_average, ms, summarize};
use crate::targets::FLOOR_FACTOR;
use crate::worktree::WorkTree;

const ENVIRONMENTS: [&str; 3] = ["dev", "staging", "prod"];
const TARGET_STATUS_MS: f64 = 50.0;
const PROMOTION_ALLOWANCE_MS: f64 = 10.0;

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub fixtures_dir: PathBuf,
    pub fixture: String,
    pub tug: PathBuf,
    /// `GET /status` calls timed.
    pub status_calls: usize,
    /// Promotions timed (each alternated with a floor push).
    pub promotions: usize,
}

pub(crate) struct Report {
    header: String,
    services: usize,
    seeded: usize,
    reindex: Duration,
    indexed: String,
    status: Vec<Duration>,
    floor: Vec<Duration>,
    promote: Vec<Duration>,
}

fn by() -> Value {
    json!({"name": "Release Bench", "email": "bench@example.invalid"})
}

pub(crate) fn run(config: &Config) -> Result<Report> {
    let fixture = Fixture::load(&config.fixtures_dir, &config.fixture)?;
    let load_start = load_average();
    let http = SmartHttpServer::start()?;
    let tug_repo = http.publish(&fixture, "releases-tug")?;
    let floor_repo = http.publish(&fixture, "releases-floor")?;
    eprintln!("appending {} release commits", fixture.services.len() * 3);
    let seeded = seed_release_commits(&fixture, &tug_repo)?;

    let server = start_server(config, &fixture, &tug_repo)?;
    let base = server.http_url();
    let runtime = crate::load::client_runtime()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .context("build the HTTP client")?;

    eprintln!("reindexing (the server clones its mirror first)");
    let started = Instant::now();
    let indexed = runtime.block_on(call(
        &client,
        reqwest::Method::POST,
        &format!("{base}/api/v1/reindex"),
        None,
    ))?;
    let reindex = started.elapsed();
    let indexed = indexed.to_string();

    // Status of services spread over the fixture; the first call of each is not special (the
    // index is built), but one warm-up call primes the connection.
    let services = &fixture.services;
    runtime.block_on(call(
        &client,
        reqwest::Method::GET,
        &format!("{base}/api/v1/status/{}", services[0]),
        None,
    ))?;
    let mut status = Vec::new();
    for i in 0..config.status_calls {
        let service = &services[(i * 37 + 11) % services.len()];
        let started = Instant::now();
        let answer = runtime.block_on(call(
            &client,
            reqwest::Method::GET,
            &format!("{base}/api/v1/status/{service}"),
            None,
        ))?;
        status.push(started.elapsed());
        let runs = answer["environments"].as_array().map_or(0, |envs| {
            envs.iter().filter(|e| e["artifactId"].is_string()).count()
        });
        if runs != 3 {
            bail!("status of {service} shows {runs} of 3 environments released: {answer}");
        }
    }

    // Promotions: an artifact released to dev (untimed), then the timed promotion to staging,
    // alternated with a floor push to its own copy of the fixture.
    eprintln!(
        "promotions: {} × (floor push, promote dev → staging)",
        config.promotions
    );
    let (floor_tree, _) = WorkTree::clone(&floor_repo.url)?;
    let bumps = fixture.image_bumps(1..=config.promotions + 1)?;
    let mut floor = Vec::new();
    let mut promote = Vec::new();
    for (i, bump) in bumps.iter().enumerate() {
        let counted = i > 0;
        let service = bump
            .dir
            .split('/')
            .nth(1)
            .context("bump directory is not apps/<service>/<env>")?
            .to_owned();
        let artifact_id = format!("bench-{service}-{i}");
        let tag = format!("6.0.{i}");
        runtime.block_on(async {
            let pushed = call(
                &client,
                reqwest::Method::POST,
                &format!("{base}/api/v1/artifacts"),
                Some(artifact(&service, &artifact_id, &bump.image, &tag)),
            )
            .await?;
            if pushed.get("code").is_some() {
                bail!("artifact {artifact_id} refused: {pushed}");
            }
            let released = call(
                &client,
                reqwest::Method::POST,
                &format!("{base}/api/v1/releases"),
                Some(json!({"service": service, "environments": ["dev"], "artifactId": artifact_id, "by": by()})),
            )
            .await?;
            if released["result"]["status"] != "succeeded" {
                bail!("release of {artifact_id} to dev failed: {released}");
            }
            Ok(())
        })?;
        let floor_first = i % 2 == 0;
        if floor_first {
            let d = floor_push(&floor_tree, bump, &tag)?;
            if counted {
                floor.push(d);
            }
        }
        let started = Instant::now();
        let promoted = runtime.block_on(call(
            &client,
            reqwest::Method::POST,
            &format!("{base}/api/v1/releases"),
            Some(json!({"service": service, "environments": ["staging"], "intent": "promote", "by": by()})),
        ))?;
        let took = started.elapsed();
        if promoted["result"]["status"] != "succeeded" {
            bail!("promotion of {service} to staging failed: {promoted}");
        }
        if counted {
            promote.push(took);
        }
        if !floor_first {
            let d = floor_push(&floor_tree, bump, &tag)?;
            if counted {
                floor.push(d);
            }
        }
    }
    drop(server);
    for repo in [&tug_repo, &floor_repo] {
        http.unpublish(repo)?;
    }
    let header = format!(
        "tug release benchmark on {}: {} services × 3 environments, {} commits\nserver: {}\nload average at start {load_start}, at end {}\n",
        fixture.name,
        fixture.services.len(),
        fixture.commits,
        http.describe(),
        load_average()
    );
    Ok(Report {
        header,
        services: fixture.services.len(),
        seeded,
        reindex,
        indexed,
        status,
        floor,
        promote,
    })
}

fn artifact(service: &str, id: &str, image: &str, tag: &str) -> Value {
    json!({
        "id": id,
        "service": service,
        "application": {
            "branch": "main", "sha": format!("{id}-sha"),
            "authorName": "Dev Eloper", "authorEmail": "dev@example.invalid",
            "committerName": "Dev Eloper", "committerEmail": "dev@example.invalid",
            "message": format!("build {id}"),
        },
        "ci": { "jobUrl": format!("https://ci.example.invalid/{id}") },
        "stages": [
            { "id": "push", "name": "Push", "data": { "image": image, "tag": tag } }
        ]
    })
}

/// Sends a request and returns the last JSON line of the answer (the outcome of an NDJSON
/// stream, or the whole body of a plain JSON answer).
async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value> {
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("request {url}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .with_context(|| format!("read {url}"))?;
    let last = text
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("null");
    let value: Value =
        serde_json::from_str(last).with_context(|| format!("{url} answered {status}: {text}"))?;
    if !status.is_success() {
        bail!("{url} answered {status}: {text}");
    }
    Ok(value)
}

fn start_server(config: &Config, fixture: &Fixture, repo: &ServedRepo) -> Result<TugServer> {
    let mut yaml = format!(
        "log:\n  level: warn\nrepositories:\n  - name: manifests\n    url: \"{}\"\nauth:\n  mode: none\nenvironments:\n  - {{ name: dev, repository: manifests, branch: main }}\n  - {{ name: staging, after: dev }}\n  - {{ name: prod, after: staging }}\nservices:\n",
        repo.url
    );
    for service in &fixture.services {
        let _ = writeln!(
            yaml,
            "  - {{ name: {service}, path: \"apps/{{service}}/{{env}}\", edit: {{ kind: kustomize }} }}"
        );
    }
    TugServer::start(&config.tug, &yaml)
        .with_context(|| format!("start {} server", config.tug.display()))
}

/// Appends one release commit per service and environment (no file change: the index reads the
/// trailers) with `git fast-import`; returns how many.
fn seed_release_commits(fixture: &Fixture, repo: &ServedRepo) -> Result<usize> {
    let mut stream = Vec::new();
    let mut n = 0usize;
    let mut ts = 1_700_000_000u64;
    for service in &fixture.services {
        for env in ENVIRONMENTS {
            let record = ReleaseRecord {
                service: service.clone(),
                environment: env.to_owned(),
                artifact_id: format!("seed-{service}-{env}"),
                intent: Intent::Release,
                released_by: Person {
                    name: "Release Bench".to_owned(),
                    email: "bench@example.invalid".to_owned(),
                },
                request: None,
            };
            let message = record
                .to_commit_message()
                .with_context(|| format!("release commit message of {service}/{env}"))?;
            ts += 1;
            let _ = write!(
                stream,
                "commit refs/heads/main\ncommitter Release Bench <bench@example.invalid> {ts} +0000\ndata {}\n{message}\n",
                message.len()
            );
            if n == 0 {
                let _ = writeln!(stream, "from refs/heads/main^0");
            }
            n += 1;
        }
    }
    let _ = writeln!(stream, "done");
    let mut child = Command::new("git")
        .args([
            "--git-dir",
            path_str(&repo.path)?,
            "fast-import",
            "--quiet",
            "--done",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .context("start git fast-import")?;
    child
        .stdin
        .take()
        .context("fast-import has no stdin")?
        .write_all(&stream)
        .context("write the release commits to fast-import")?;
    let status = child.wait().context("wait for git fast-import")?;
    if !status.success() {
        bail!("git fast-import of the release commits failed: {status}");
    }
    Ok(n)
}

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

fn row(out: &mut String, label: &str, s: Option<Summary>) {
    if let Some(s) = s {
        let _ = writeln!(
            out,
            "  {label:<36}{:>5}{:>9}{:>10}{:>10}",
            s.n,
            ms(s.median_ms),
            ms(s.p95_ms),
            ms(s.mean_ms)
        );
    }
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

impl Report {
    pub(crate) fn render(&self) -> String {
        let mut out = self.header.clone();
        let _ = writeln!(
            out,
            "seeded {} release commits; POST /api/v1/reindex took {:.1} s (includes the mirror clone): {}",
            self.seeded,
            self.reindex.as_secs_f64(),
            self.indexed
        );
        let _ = writeln!(
            out,
            "\n  ms                                    n   median       p95      mean"
        );
        let status = summarize(&self.status);
        let floor = summarize(&self.floor);
        let promote = summarize(&self.promote);
        row(
            &mut out,
            &format!("GET /api/v1/status/{{service}} ({} svc)", self.services),
            status,
        );
        row(&mut out, "floor: git push", floor);
        row(&mut out, "promote dev → staging (to pushed)", promote);
        let _ = writeln!(out, "\ntargets:");
        if let Some(s) = status {
            let _ = writeln!(
                out,
                "  status ≤ {TARGET_STATUS_MS} ms: median {} ms, p95 {} ms = {:.2} of target  {}",
                ms(s.median_ms),
                ms(s.p95_ms),
                s.p95_ms / TARGET_STATUS_MS,
                verdict(s.p95_ms <= TARGET_STATUS_MS)
            );
        }
        if let (Some(f), Some(p)) = (floor, promote) {
            let bound = FLOOR_FACTOR * f.median_ms + PROMOTION_ALLOWANCE_MS;
            let _ = writeln!(
                out,
                "  promotion / (1.2×push + 10ms) = {} / (1.2×{} + 10) = {:.2}  {}",
                ms(p.median_ms),
                ms(f.median_ms),
                p.median_ms / bound,
                verdict(p.median_ms <= bound)
            );
        }
        out
    }
}
