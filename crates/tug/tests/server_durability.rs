//! What survives a crash, an outage of the remote and a shutdown: every accepted job lands
//! exactly once. The remote is a `git daemon` the tests stop and resume on the same port, with a
//! pre-receive hook where a test needs a push held in flight.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod server_common;

use std::collections::BTreeSet;
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

#[test]
fn the_next_batch_is_claimed_while_a_push_is_in_flight_and_lands_right_after_it() {
    let services = ["api", "web", "auth", "cart", "mail"];
    let f = start_with(&services, "limits:\n  batch_max: 2\n");
    let gate = f.scratch.join("gate");
    std::fs::create_dir_all(&gate).unwrap();
    gate_each_push(&f.repo, &gate);
    let open = |k: usize| std::fs::write(gate.join(format!("release-{k}")), "").unwrap();
    let entered = |k: usize| {
        let path = gate.join(format!("entered-{k}"));
        wait_for(
            JOB_TIMEOUT,
            &format!("push {k} to reach the remote"),
            || path.exists().then_some(()),
        )
    };
    let status = |id: &str| {
        job(&f.server, id, TOKEN)["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    // Push 1 (api) is held; four more requests queue behind it, two per batch.
    let first = submit(&f, "api", "v2");
    entered(1);
    let rest: Vec<String> = services[1..].iter().map(|s| submit(&f, s, "v2")).collect();
    open(1);
    // Push 2 takes the next one or two (the writer may have looked ahead during push 1 before
    // all four were queued) and is held. More are claimed meanwhile, not after push 2 returns:
    // without looking ahead only push 2's own two would be running.
    entered(2);
    wait_for(
        JOB_TIMEOUT,
        "a third job to be claimed during push 2",
        || {
            let running = rest.iter().filter(|id| status(id) == "running").count();
            (running >= 3).then_some(())
        },
    );
    assert!(!gate.join("entered-3").exists());
    for k in 2..=services.len() {
        open(k);
    }

    for id in std::iter::once(&first).chain(&rest) {
        let job = wait_for_end(&f.server, id, TOKEN, JOB_TIMEOUT);
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    let mut landed = request_trailers(&f.repo);
    landed.truncate(services.len());
    landed.reverse();
    let expected: Vec<String> = std::iter::once(first).chain(rest).collect();
    assert_eq!(landed, expected, "in order, one commit each");
    let pushes: usize = std::fs::read_to_string(gate.join("count"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((3..=4).contains(&pushes), "{pushes} pushes");
    let log = f.repo.log("main").unwrap();
    assert!(log.iter().all(|entry| entry.parents.len() <= 1));
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
fn a_batch_built_on_a_push_that_lost_its_race_is_built_again_on_the_new_tip() {
    let services = ["api", "web", "auth", "cart", "mail"];
    let f = start_with(&services, "limits:\n  batch_max: 2\n");
    let gate = f.scratch.join("gate");
    std::fs::create_dir_all(&gate).unwrap();
    gate_each_push(&f.repo, &gate);
    let open = |k: usize| std::fs::write(gate.join(format!("release-{k}")), "").unwrap();
    let entered = |k: usize| {
        let path = gate.join(format!("entered-{k}"));
        wait_for(
            JOB_TIMEOUT,
            &format!("push {k} to reach the remote"),
            || path.exists().then_some(()),
        )
    };
    let status = |id: &str| {
        job(&f.server, id, TOKEN)["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    let first = submit(&f, "api", "v2");
    entered(1);
    let rest: Vec<String> = services[1..].iter().map(|s| submit(&f, s, "v2")).collect();
    open(1);
    // Push 2 is held while the batch after it is claimed and built on push 2's commit.
    entered(2);
    wait_for(
        JOB_TIMEOUT,
        "a third job to be claimed during push 2",
        || {
            let running = rest.iter().filter(|id| status(id) == "running").count();
            (running >= 3).then_some(())
        },
    );
    // Someone else's push lands first: push 2 loses its race, so the commit the next batch
    // was built on never reaches the remote.
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
        entered(3);
        open(3);
        pushing.join().unwrap()
    });
    for k in 2..=12 {
        open(k);
    }

    for id in std::iter::once(&first).chain(&rest) {
        let job = wait_for_end(&f.server, id, TOKEN, JOB_TIMEOUT);
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    let mut landed = request_trailers(&f.repo);
    landed.truncate(services.len());
    landed.reverse();
    let expected: Vec<String> = std::iter::once(first).chain(rest).collect();
    assert_eq!(landed, expected, "in order, one commit each");
    let log = f.repo.log("main").unwrap();
    assert!(
        log.iter().all(|entry| entry.parents.len() <= 1),
        "no merges"
    );
    assert!(
        log.iter().any(|entry| entry.commit == human),
        "the other push is kept"
    );
    assert_eq!(
        f.repo.read_file("main", "README.md").unwrap().unwrap(),
        b"maintained by hand\n"
    );
    let metrics = f.server.get("/metrics", None).unwrap().text();
    let conflicts: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("tug_push_conflicts_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(conflicts, 1.0, "push 2 lost its race once");
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
