//! What survives a crash, an outage of the remote and a shutdown: every accepted job lands
//! exactly once. The remote is a `git daemon` the tests stop and resume on the same port, with a
//! pre-receive hook where a test needs a push held in flight.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod server_common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use server_common::*;
use tug_testkit::{BareRepo, Scratch, TugServer};

const TOKEN: &str = "tug-durability-token-31d9";
const JOB_TIMEOUT: Duration = Duration::from_secs(40);

// Fields drop in order: the server stops before its remote goes away.
struct Fixture {
    server: TugServer,
    remote: Remote,
    repo: BareRepo,
    url: String,
    scratch: Scratch,
}

fn start(services: &[&str]) -> Fixture {
    start_with(services, "")
}

/// A server whose configuration ends with `extra`.
fn start_with(services: &[&str], extra: &str) -> Fixture {
    let repo = overlays_repo(services);
    let remote = Remote::start(repo.root());
    let url = remote.url(repo.name());
    let config = format!(
        r#"repositories:
  - name: platform
    url: "{url}"
auth:
  tokens:
    - name: ci
      sha256: "{sha}"
      repositories: ["*"]
{extra}"#,
        sha = token_sha256(TOKEN),
    );
    let server = TugServer::start(tug_binary(), &config).expect("start tug server");
    Fixture {
        server,
        remote,
        repo,
        url,
        scratch: Scratch::new().unwrap(),
    }
}

/// Stores a job without waiting for it: `?wait=false` answers 202 with the job id.
fn submit(f: &Fixture, service: &str, tag: &str) -> String {
    let response = f
        .server
        .post_deploy_to(
            "/api/v1/deploy?wait=false",
            &body(&image_deploy(&f.url, service, tag)),
            Some(TOKEN),
            None,
        )
        .unwrap();
    assert_eq!(response.status, 202, "{}", response.text());
    let job = response.json().unwrap();
    job["jobId"].as_str().expect("jobId").to_owned()
}

fn assert_landed_once(repo: &BareRepo, ids: &[String]) {
    let trailers = request_trailers(repo);
    for id in ids {
        let n = trailers.iter().filter(|t| *t == id).count();
        assert_eq!(n, 1, "job {id} has {n} commits; trailers: {trailers:?}");
    }
}

#[test]
fn jobs_queued_before_a_kill_9_land_exactly_once_after_restart() {
    let services: Vec<String> = (0..10).map(|i| format!("svc-{i}")).collect();
    let names: Vec<&str> = services.iter().map(String::as_str).collect();
    let mut f = start(&names);
    let initial = f.repo.commit_count("main").unwrap();
    f.remote.stop();

    let ids: Vec<String> = names.iter().map(|s| submit(&f, s, "v9.9.9")).collect();
    let (status, list) = f
        .server
        .get_json("/api/v1/jobs?repository=platform&limit=100", Some(TOKEN))
        .unwrap();
    assert_eq!(status, 200, "{list}");
    let stored: BTreeSet<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["jobId"].as_str().unwrap())
        .collect();
    assert_eq!(stored, ids.iter().map(String::as_str).collect());
    for job in list["jobs"].as_array().unwrap() {
        assert_ne!(job["status"], "succeeded", "the remote is down: {job}");
    }

    f.server.kill9().unwrap();
    f.remote.resume();
    f.server.restart().unwrap();

    for id in &ids {
        let job = wait_for_end(&f.server, id, TOKEN, JOB_TIMEOUT);
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    assert_eq!(f.repo.commit_count("main").unwrap(), initial + ids.len());
    let newest: BTreeSet<String> = request_trailers(&f.repo)
        .into_iter()
        .take(ids.len())
        .collect();
    assert_eq!(newest, ids.iter().cloned().collect::<BTreeSet<_>>());
    assert_landed_once(&f.repo, &ids);
}

#[test]
fn jobs_wait_while_the_remote_is_down_and_land_when_it_is_back() {
    let mut f = start(&["api"]);
    f.remote.stop();
    let id = submit(&f, "api", "v2.0.0");

    let pending = wait_for(JOB_TIMEOUT, "job to be pending with an error", || {
        let job = job(&f.server, &id, TOKEN);
        (job["status"] == "pending" && job["updates"][0]["error"].is_string()).then_some(job)
    });
    let error = pending["updates"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("cannot reach remote") && error.contains(&f.url),
        "{pending}"
    );
    assert_eq!(pending["updates"][0]["status"], "pending");

    f.remote.resume();
    let done = wait_for_end(&f.server, &id, TOKEN, JOB_TIMEOUT);
    assert_eq!(done["status"], "succeeded", "{done}");
    let events: Vec<&str> = done["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|m| m.starts_with("[WARN]") && m.contains("retrying in")),
        "{events:?}"
    );
    // The server's log says so too: job, repository, branch, attempt, next retry and cause.
    let logs = f.server.logs();
    let retried = logs
        .lines()
        .find(|l| l.contains("push failed; retrying") && l.contains(&id))
        .unwrap_or_else(|| panic!("no retry line for {id}:\n{logs}"));
    assert!(
        retried.contains("WARN")
            && retried.contains("branch=main")
            && retried.contains("attempt=1")
            && retried.contains("next_retry_in_s=")
            && retried.contains("cannot reach remote"),
        "{retried}"
    );
    assert_eq!(
        done["updates"][0]["commit"].as_str(),
        f.repo.tip("main").unwrap().as_deref()
    );
    assert_landed_once(&f.repo, &[id]);
}

#[test]
fn sigterm_with_a_push_in_flight_exits_cleanly_and_the_job_lands_once() {
    let mut f = start(&["api"]);
    let entered = f.scratch.join("push-entered");
    let release = f.scratch.join("push-release");
    hold_pushes(&f.repo, &entered, &release);
    let before = f.repo.commit_count("main").unwrap();

    let request = body(&image_deploy(&f.url, "api", "v3.0.0"));
    let (status, lines) = std::thread::scope(|scope| {
        let client = scope.spawn(|| f.server.post_deploy(&request, Some(TOKEN), None).unwrap());
        wait_for(JOB_TIMEOUT, "the push to reach the remote", || {
            entered.exists().then_some(())
        });
        f.server.send_sigterm().unwrap();
        // It stops accepting at once, but waits for the push it started, however long the
        // remote takes.
        wait_for(JOB_TIMEOUT, "the listener to close", || {
            std::net::TcpStream::connect(f.server.http_addr())
                .is_err()
                .then_some(())
        });
        assert!(f.server.is_running(), "exited with its push in flight");
        std::fs::write(&release, "").unwrap();
        client.join().unwrap()
    });
    let exit = f.server.wait_exit(Duration::from_secs(30)).unwrap();
    assert!(
        exit.success(),
        "exit status {exit}; log:\n{}",
        f.server.logs()
    );
    assert_eq!(status, 200, "{lines:?}");
    let id = lines[0]["result"]["message"]
        .as_str()
        .and_then(|m| m.strip_prefix("[INFO] accepted job "))
        .expect("first line names the job")
        .to_owned();
    let last: &Value = &lines.last().unwrap()["result"];
    assert!(
        last["status"] == "succeeded"
            || last["message"]
                .as_str()
                .is_some_and(|m| m.contains("shutting down")),
        "{lines:?}"
    );

    f.server.restart().unwrap();
    let job = wait_for_end(&f.server, &id, TOKEN, JOB_TIMEOUT);
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(f.repo.commit_count("main").unwrap(), before + 1);
    assert_landed_once(&f.repo, &[id]);
}

#[test]
fn a_push_that_landed_before_a_crash_is_recorded_not_repeated() {
    let mut f = start(&["api"]);
    let entered = f.scratch.join("push-entered");
    let release = f.scratch.join("push-release");
    hold_pushes(&f.repo, &entered, &release);
    let before_tip = f.repo.tip("main").unwrap();
    let before = f.repo.commit_count("main").unwrap();

    let id = submit(&f, "api", "v4.0.0");
    wait_for(JOB_TIMEOUT, "the push to reach the remote", || {
        entered.exists().then_some(())
    });
    // The server dies while the remote holds its push; the push itself (a separate git process)
    // goes on and lands, so the only record of it is the commit's Tug-Request trailer.
    f.server.kill9().unwrap();
    std::fs::write(&release, "").unwrap();
    let landed = wait_for(JOB_TIMEOUT, "the orphaned push to land", || {
        let tip = f.repo.tip("main").unwrap();
        (tip != before_tip).then_some(tip)
    });
    assert_eq!(f.repo.commit_count("main").unwrap(), before + 1);

    f.server.restart().unwrap();
    let job = wait_for_end(&f.server, &id, TOKEN, JOB_TIMEOUT);
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["updates"][0]["commit"].as_str(), landed.as_deref());
    let recovered = job["events"].as_array().unwrap().iter().any(|e| {
        e["message"]
            .as_str()
            .unwrap()
            .contains("was already pushed")
    });
    assert!(recovered, "{job}");
    assert_eq!(f.repo.commit_count("main").unwrap(), before + 1);
    assert_landed_once(&f.repo, &[id]);
}

/// The pushes to a fixture's remote, each held in its `pre-receive` hook until let through.
struct Gate(PathBuf);

impl Gate {
    fn install(f: &Fixture) -> Gate {
        let dir = f.scratch.join("gate");
        std::fs::create_dir_all(&dir).unwrap();
        gate_each_push(&f.repo, &dir);
        Gate(dir)
    }

    /// Lets push `k` (from 1) through.
    fn open(&self, k: usize) {
        std::fs::write(self.0.join(format!("release-{k}")), "").unwrap();
    }

    /// Waits until push `k` reached the remote's hook.
    fn entered(&self, k: usize) {
        let path = self.0.join(format!("entered-{k}"));
        wait_for(
            JOB_TIMEOUT,
            &format!("push {k} to reach the remote"),
            || path.exists().then_some(()),
        )
    }

    fn pushes(&self) -> usize {
        let count = std::fs::read_to_string(self.0.join("count")).unwrap();
        count.trim().parse().unwrap()
    }
}

/// Deploys `v2` of every service, the first alone in push 1 and the rest queued behind it with
/// `batch_max: 2`, and returns with push 2 held once the writer has claimed more than push 2
/// takes: without looking ahead only push 2's own two would be running. (Push 2 takes one or
/// two: the writer may have looked ahead during push 1 before all were queued.)
fn hold_push_2_with_a_batch_claimed_ahead(
    f: &Fixture,
    gate: &Gate,
    services: &[&str],
) -> Vec<String> {
    let first = submit(f, services[0], "v2");
    gate.entered(1);
    let rest: Vec<String> = services[1..].iter().map(|s| submit(f, s, "v2")).collect();
    gate.open(1);
    gate.entered(2);
    wait_for(
        JOB_TIMEOUT,
        "a third job to be claimed during push 2",
        || {
            let running = rest
                .iter()
                .filter(|id| job(&f.server, id, TOKEN)["status"] == "running")
                .count();
            (running >= 3).then_some(())
        },
    );
    std::iter::once(first).chain(rest).collect()
}

const SERVICES: [&str; 5] = ["api", "web", "auth", "cart", "mail"];

/// A server with `batch_max: 2` and every push gated, held at push 2 with a batch claimed
/// ahead (see [`hold_push_2_with_a_batch_claimed_ahead`]); the job ids in request order.
fn held_at_push_2_with_a_batch_claimed_ahead() -> (Fixture, Gate, Vec<String>) {
    let f = start_with(&SERVICES, "limits:\n  batch_max: 2\n");
    let gate = Gate::install(&f);
    let ids = hold_push_2_with_a_batch_claimed_ahead(&f, &gate, &SERVICES);
    (f, gate, ids)
}

/// `tug_push_conflicts_total`, summed over its labels.
fn push_conflicts(f: &Fixture) -> f64 {
    f.server
        .get("/metrics", None)
        .unwrap()
        .text()
        .lines()
        .filter(|l| l.starts_with("tug_push_conflicts_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every job succeeded, one commit each in request order, no merges, every service at `v2`.
fn assert_landed_in_order(f: &Fixture, ids: &[String], services: &[&str]) {
    for id in ids {
        let job = wait_for_end(&f.server, id, TOKEN, JOB_TIMEOUT);
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    let mut landed = request_trailers(&f.repo);
    landed.truncate(ids.len());
    landed.reverse();
    assert_eq!(landed, ids, "in order, one commit each");
    let log = f.repo.log("main").unwrap();
    assert!(
        log.iter().all(|entry| entry.parents.len() <= 1),
        "no merges"
    );
    for service in services {
        let file = f
            .repo
            .read_file("main", &format!("apps/{service}/dev/kustomization.yaml"))
            .unwrap()
            .unwrap();
        assert!(
            String::from_utf8(file).unwrap().contains("newTag: v2\n"),
            "{service}"
        );
    }
}

#[test]
fn the_next_batch_is_claimed_while_a_push_is_in_flight_and_lands_right_after_it() {
    let (f, gate, ids) = held_at_push_2_with_a_batch_claimed_ahead();
    assert!(!gate.0.join("entered-3").exists());
    for k in 2..=SERVICES.len() {
        gate.open(k);
    }
    assert_landed_in_order(&f, &ids, &SERVICES);
    let pushes = gate.pushes();
    assert!((3..=4).contains(&pushes), "{pushes} pushes");
}

#[test]
fn a_batch_built_on_a_push_that_lost_its_race_is_built_again_on_the_new_tip() {
    let (f, gate, ids) = held_at_push_2_with_a_batch_claimed_ahead();
    // Someone else's push lands first: push 2 loses its race, so the commit the batch claimed
    // ahead was built on never reaches the remote.
    let human = std::thread::scope(|scope| {
        let pushing = scope.spawn(|| {
            f.repo
                .human_commit(
                    "main",
                    "README.md",
                    |_| b"maintained by hand\n".to_vec(),
                    "docs: a note",
                )
                .unwrap()
        });
        gate.entered(3);
        gate.open(3);
        pushing.join().unwrap()
    });
    for k in 2..=12 {
        gate.open(k);
    }
    assert_landed_in_order(&f, &ids, &SERVICES);
    let log = f.repo.log("main").unwrap();
    assert!(
        log.iter().any(|entry| entry.commit == human),
        "the other push is kept"
    );
    assert_eq!(
        f.repo.read_file("main", "README.md").unwrap().unwrap(),
        b"maintained by hand\n"
    );
    let conflicts = push_conflicts(&f);
    assert_eq!(
        conflicts, 1.0,
        "push 2 lost its race once: the stale batch was built again"
    );
}

/// The commits `git_dir` holds that no ref reaches.
fn unreachable_commits(git_dir: &std::path::Path) -> Vec<String> {
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(git_dir)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let reachable: BTreeSet<String> = git(&["rev-list", "--all"])
        .lines()
        .map(str::to_owned)
        .collect();
    git(&[
        "cat-file",
        "--batch-all-objects",
        "--batch-check=%(objecttype) %(objectname)",
    ])
    .lines()
    .filter_map(|line| line.strip_prefix("commit "))
    .filter(|commit| !reachable.contains(*commit))
    .map(str::to_owned)
    .collect()
}

/// The bare repositories under the server's mirror directory.
fn mirrors(f: &Fixture) -> Vec<PathBuf> {
    let root = f.server.data_dir().join("mirrors");
    let mut found = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        if dir.join("objects").is_dir() && dir.join("HEAD").is_file() {
            found.push(dir);
            continue;
        }
        for entry in std::fs::read_dir(&dir).unwrap().filter_map(Result::ok) {
            if entry.path().is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    found
}

#[test]
fn a_batch_that_gave_up_on_a_busy_branch_lands_before_the_batch_claimed_behind_it() {
    let (f, gate, ids) = held_at_push_2_with_a_batch_claimed_ahead();
    // Someone else's push lands before every attempt of push 2's batch, until the writer gives
    // up on the branch for now (8 lost races). Its tasks go again at once, and are older than
    // the batch claimed ahead during push 2, which was built on a commit that never landed.
    let mut held = 2;
    for round in 0..8 {
        std::thread::scope(|scope| {
            let person = scope.spawn(|| {
                f.repo
                    .human_commit(
                        "main",
                        "README.md",
                        |_| format!("edited by hand, round {round}\n").into_bytes(),
                        "docs: a note",
                    )
                    .unwrap()
            });
            gate.entered(held + 1);
            gate.open(held + 1);
            person.join().unwrap();
        });
        gate.open(held);
        held += 2;
        if round < 7 {
            gate.entered(held);
        }
    }
    for k in held..=held + 12 {
        gate.open(k);
    }
    assert_landed_in_order(&f, &ids, &SERVICES);
    let log = f.repo.log("main").unwrap();
    let by_hand = log.iter().filter(|e| e.subject == "docs: a note").count();
    assert_eq!(by_hand, 8, "every push of the person's is kept");
    assert_eq!(
        f.repo.read_file("main", "README.md").unwrap().unwrap(),
        b"edited by hand, round 7\n"
    );
    let conflicts = push_conflicts(&f);
    // Eight lost races, none after: the tasks that went again are looked for on the fetched
    // branch first (they might have landed), so the batch they fell in behind is built on the
    // person's last commit.
    assert_eq!(conflicts, 8.0);
    // Neither the lost attempts nor the batch built ahead on one of them left their commits
    // in the mirror.
    let mirrors = mirrors(&f);
    assert_eq!(mirrors.len(), 1, "{mirrors:?}");
    assert_eq!(unreachable_commits(&mirrors[0]), Vec::<String>::new());
}

/// Hands the branch lease of `platform/main` to another owner, as a replica that found it
/// lapsed would, for `seconds` (written with Python's `sqlite3`, a second process on the file).
fn take_the_lease_for(f: &Fixture, seconds: u32) {
    let db = f.server.data_dir().join("tug.db");
    let script = format!(
        "import sqlite3, time\n\
         db = sqlite3.connect({db:?}, timeout=30)\n\
         n = db.execute(\"UPDATE branch_leases SET owner = 'another-replica', \
         expires_at = ?, epoch = epoch + 1\", (int(time.time() * 1000) + {ms},)).rowcount\n\
         db.commit()\n\
         print(n)\n",
        db = db.display().to_string(),
        ms = u64::from(seconds) * 1000,
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1",
        "one lease taken"
    );
}

#[test]
fn a_writer_that_loses_its_lease_with_a_batch_built_ahead_leaves_no_commits_behind() {
    let (f, gate, ids) = held_at_push_2_with_a_batch_claimed_ahead();
    // Another replica takes the branch while push 2 is in flight: the writer learns it at its
    // next heartbeat and stops after that push. The batch it claimed ahead was built on push 2
    // but will not be pushed by it; its tasks wait for the lease to lapse and land then.
    take_the_lease_for(&f, 3);
    wait_for(JOB_TIMEOUT, "the writer to notice the lost lease", || {
        f.server
            .logs()
            .contains("lost the branch lease during a batch")
            .then_some(())
    });
    for k in 2..=12 {
        gate.open(k);
    }
    assert_landed_in_order(&f, &ids, &SERVICES);
    let mirrors = mirrors(&f);
    assert_eq!(mirrors.len(), 1, "{mirrors:?}");
    assert_eq!(unreachable_commits(&mirrors[0]), Vec::<String>::new());
}
