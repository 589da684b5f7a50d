//! A busy manifest repository: a person pushes an unrelated commit to `main` every 100 ms while
//! 32 CI clients send 400 deploy requests to the same branch through one `tug server`. Every
//! push tug loses to the person (rejected by git push's lease check, or by the remote's ref
//! lock when the person lands between the advertisement and the update) is re-applied: every
//! request succeeds exactly once, every human commit is kept, history stays linear. Run over
//! git daemon, smart HTTP and SSH.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod server_common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use server_common::*;
use tug_testkit::{BareRepo, GitDaemon, HumanPusher, SmartHttp, Sshd, TugServer};

const TOKEN: &str = "tug-race-token-91d2";
const CLIENTS: usize = 32;
const REQUESTS: usize = 400;
const HUMAN_INTERVAL: Duration = Duration::from_millis(100);

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn services() -> Vec<String> {
    (0..CLIENTS).map(|i| format!("svc-{i:02}")).collect()
}

fn repo() -> BareRepo {
    let services = services();
    let names: Vec<&str> = services.iter().map(String::as_str).collect();
    overlays_repo(&names)
}

fn server(repository_yaml: &str) -> TugServer {
    let config = format!(
        "repositories:\n{repository_yaml}auth:\n  tokens:\n    - name: ci\n      sha256: \"{sha}\"\n      repositories: [\"platform\"]\n",
        sha = token_sha256(TOKEN),
    );
    TugServer::start(tug_binary(), &config).expect("start tug server")
}

/// Runs the load and checks the outcome; returns a line for the test log. The person pushes
/// through `human_url`.
fn deploy_under_human_pushes(
    server: &TugServer,
    repo: &BareRepo,
    url: &str,
    human_url: &str,
) -> String {
    // One load at a time: three at once on a small machine measure the machine, not tug.
    let _one_at_a_time = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = repo.commit_count("main").unwrap();
    let metrics_before = server.get("/metrics", None).unwrap().text();
    let human = HumanPusher::start(human_url, "main", HUMAN_INTERVAL).unwrap();
    let started = Instant::now();
    let results: Vec<(usize, u16, Vec<Value>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|client| {
                scope.spawn(move || {
                    (client..REQUESTS)
                        .step_by(CLIENTS)
                        .map(|k| {
                            let request = body(&image_deploy(
                                url,
                                &format!("svc-{client:02}"),
                                &format!("v{k}"),
                            ));
                            let (status, lines) =
                                server.post_deploy(&request, Some(TOKEN), None).unwrap();
                            (k, status, lines)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let elapsed = started.elapsed();
    let human = human.stop().unwrap();

    let mut failed = Vec::new();
    let mut ids = BTreeSet::new();
    for (k, status, lines) in &results {
        let result = &lines.last().expect("a final NDJSON line")["result"];
        if *status != 200 || result["status"] != "succeeded" {
            failed.push(format!("request {k}: {status} {lines:?}"));
        } else {
            ids.insert(result["jobId"].as_str().unwrap().to_owned());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {REQUESTS} requests failed; first: {}",
        failed.len(),
        failed[0]
    );
    assert_eq!(ids.len(), REQUESTS);

    // Each request exactly once.
    let mut landed: BTreeMap<String, usize> = BTreeMap::new();
    for trailer in request_trailers(repo) {
        *landed.entry(trailer).or_default() += 1;
    }
    let duplicated: Vec<_> = landed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "landed twice: {duplicated:?}");
    let landed: BTreeSet<String> = landed.into_keys().collect();
    assert_eq!(landed, ids, "the commits on main are exactly the requests");

    // Every human commit kept, nothing else added, history linear.
    assert!(!human.commits.is_empty());
    let first_parent =
        String::from_utf8(repo.git(&["rev-list", "--first-parent", "main"]).unwrap()).unwrap();
    let on_main: BTreeSet<&str> = first_parent.lines().collect();
    for commit in &human.commits {
        assert!(
            on_main.contains(commit.as_str()),
            "human commit {commit} lost"
        );
    }
    assert_eq!(
        repo.commit_count("main").unwrap(),
        before + REQUESTS + human.commits.len()
    );
    assert!(
        repo.git(&["rev-list", "--min-parents=2", "main"])
            .unwrap()
            .is_empty(),
        "history is linear"
    );
    // The last tag each client asked for is what its overlay holds.
    for client in 0..CLIENTS {
        let last = (client..REQUESTS).step_by(CLIENTS).next_back().unwrap();
        let file = repo
            .read_file(
                "main",
                &format!("apps/svc-{client:02}/dev/kustomization.yaml"),
            )
            .unwrap()
            .unwrap();
        let file = String::from_utf8(file).unwrap();
        assert!(file.contains(&format!("newTag: v{last}\n")), "{file}");
    }

    let metrics = server.get("/metrics", None).unwrap().text();
    let (_, batches_before) = histogram(&metrics_before, "tug_batch_size");
    let (_, batches) = histogram(&metrics, "tug_batch_size");
    let conflicts = counter(&metrics, "tug_push_conflicts_total") as u64
        - counter(&metrics_before, "tug_push_conflicts_total") as u64;
    let pushes = batches - batches_before;
    let attempts = pushes + conflicts;
    format!(
        "{REQUESTS} requests in {:.1} s, {} human commits ({} human pushes rejected), {pushes} \
         landed pushes, {conflicts} lost races: {:.2} push attempts per landed push, {:.3} per commit",
        elapsed.as_secs_f64(),
        human.commits.len(),
        human.rejected_pushes,
        attempts as f64 / pushes.max(1) as f64,
        attempts as f64 / REQUESTS as f64,
    )
}

/// The sum of a counter family's samples.
fn counter(metrics: &str, family: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(family) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn every_request_lands_once_while_a_person_pushes_over_git_daemon() {
    let repo = repo();
    let daemon = GitDaemon::start(repo.root()).unwrap();
    let url = daemon.url(repo.name());
    let server = server(&format!("  - name: platform\n    url: \"{url}\"\n"));
    // The person pushes to the same git daemon.
    let summary = deploy_under_human_pushes(&server, &repo, &url, &url);
    eprintln!("git daemon: {summary}");
}

#[test]
fn every_request_lands_once_while_a_person_pushes_over_smart_http() {
    let repo = repo();
    let http = SmartHttp::start(repo.root(), None).unwrap();
    let url = http.url(repo.name());
    let server = server(&format!("  - name: platform\n    url: \"{url}\"\n"));
    // The person pushes to the same web server.
    let summary = deploy_under_human_pushes(&server, &repo, &url, &url);
    eprintln!("smart HTTP: {summary}");
}

#[test]
fn every_request_lands_once_while_a_person_pushes_over_ssh() {
    let repo = repo();
    let sshd = Sshd::start().unwrap();
    let url = sshd.url(repo.path());
    let server = server(&format!(
        "  - name: platform\n    url: \"{url}\"\n    ssh:\n      private_key_file: \"{key}\"\n      known_hosts_file: \"{known}\"\n",
        key = sshd.client_key().display(),
        known = sshd.known_hosts().display(),
    ));
    // The person pushes from a shell on the git host (no key of theirs in this test).
    let summary = deploy_under_human_pushes(&server, &repo, &url, &repo.file_url());
    eprintln!("SSH: {summary}");
}
