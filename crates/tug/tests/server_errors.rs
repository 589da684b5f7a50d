//! Requests `tug server` refuses, each with a JSON error that says what is wrong; an edit that
//! fails when applied fails its job alone; invalid configurations stop the server at start with
//! the file, line and field at fault. The server stays up through all of it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod server_common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use server_common::*;
use tug_testkit::{BareRepo, GitDaemon, Scratch, TugServer};

const CI: &str = "tug-ci-token-a81f";
const OTHER_TEAM: &str = "tug-other-team-token-55c2";
const RELEASE_BOT: &str = "tug-release-bot-token-907e";

// Fields drop in order: the server stops before its remote goes away.
struct Fixture {
    server: TugServer,
    _daemon: GitDaemon,
    repo: BareRepo,
    url: String,
    scratch: Scratch,
}

fn start() -> Fixture {
    let repo = overlays_repo(&["api", "web", "worker"]);
    let daemon = GitDaemon::start(repo.root()).expect("start git daemon");
    let url = daemon.url(repo.name());
    let config = format!(
        r#"repositories:
  - name: platform
    url: "{url}"
  - name: other
    url: "file:///srv/git/other.git"
auth:
  tokens:
    - name: ci
      sha256: "{ci}"
      repositories: ["platform"]
    - name: other-team
      sha256: "{other}"
      repositories: ["other"]
    - name: release-bot
      sha256: "{release}"
      repositories: ["platform"]
      branches: ["release/*"]
limits:
  max_paths_per_request: 3
"#,
        ci = token_sha256(CI),
        other = token_sha256(OTHER_TEAM),
        release = token_sha256(RELEASE_BOT),
    );
    let server = TugServer::start(tug_binary(), &config).expect("start tug server");
    Fixture {
        server,
        _daemon: daemon,
        repo,
        url,
        scratch: Scratch::new().unwrap(),
    }
}

/// Posts `request` and expects a JSON error `{code, message, details}` with `status`.
fn refused(f: &Fixture, request: &[u8], token: Option<&str>, status: u16) -> Value {
    let response = f
        .server
        .post_deploy_to("/api/v1/deploy", request, token, None)
        .unwrap();
    assert_eq!(response.status, status, "{}", response.text());
    assert!(
        response
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        response.headers
    );
    let error = response.json().unwrap();
    assert!(error["code"].is_string(), "{error}");
    assert!(error["message"].is_string(), "{error}");
    assert!(error["details"].is_object(), "{error}");
    error
}

fn message(error: &Value) -> &str {
    error["message"].as_str().unwrap()
}

#[test]
fn refused_requests_get_json_errors_and_the_server_stays_up() {
    let f = start();
    let valid = body(&image_deploy(&f.url, "api", "v1.1.0"));

    let e = refused(&f, &valid, None, 401);
    assert_eq!(e["code"], "unauthenticated");
    let e = refused(&f, &valid, Some("not-a-known-token"), 401);
    assert_eq!(e["code"], "unauthenticated");
    let (status, e) = f.server.get_json("/api/v1/jobs", None).unwrap();
    assert_eq!((status, e["code"].as_str()), (401, Some("unauthenticated")));

    let e = refused(&f, &valid, Some(OTHER_TEAM), 403);
    assert_eq!(e["code"], "permission_denied");
    assert!(
        message(&e).contains("`platform`"),
        "names the repository: {e}"
    );
    let e = refused(&f, &valid, Some(RELEASE_BOT), 403);
    assert_eq!(e["code"], "permission_denied");
    assert!(message(&e).contains("`main`"), "names the branch: {e}");

    let malformed = br#"{"commitSpec": {"CommitMessage": "x"},
  "deploySpecs": [{"url": "#;
    let e = refused(&f, malformed, Some(CI), 400);
    assert_eq!(e["code"], "invalid_argument");
    assert!(message(&e).starts_with("request body:2:"), "{e}");

    let mut typo = image_deploy(&f.url, "api", "v1.1.0");
    typo["deploySpecs"][0]["updates"][0]["paths"][0]["kustomise"] = json!({"images": []});
    let e = refused(&f, &body(&typo), Some(CI), 400);
    assert!(message(&e).contains("kustomise"), "{e}");
    assert!(
        e["details"]["field"]
            .as_str()
            .is_some_and(|p| p.starts_with("deploySpecs[0].updates[0].paths[0]")),
        "{e}"
    );

    let unknown = body(&image_deploy(
        "https://git.example.com/nowhere.git",
        "api",
        "v1",
    ));
    let e = refused(&f, &unknown, Some(CI), 400);
    assert_eq!(e["details"]["field"], "deploySpecs[0].url", "{e}");
    assert!(
        message(&e).contains("nowhere.git")
            && message(&e).contains("platform")
            && message(&e).contains("other"),
        "{e}"
    );

    for escaping in ["../x", "/etc", "apps/../../x"] {
        let mut request = image_deploy(&f.url, "api", "v1.1.0");
        request["deploySpecs"][0]["updates"][0]["paths"][0]["path"] = json!(escaping);
        let e = refused(&f, &body(&request), Some(CI), 400);
        assert!(
            e["details"]["field"]
                .as_str()
                .is_some_and(|p| p.contains("paths[0]")),
            "{escaping}: {e}"
        );
    }

    let mut huge = image_deploy(&f.url, "api", "v1.1.0");
    huge["commitSpec"]["CommitMessage"] = json!("x".repeat(1024 * 1024 + 16));
    let e = refused(&f, &body(&huge), Some(CI), 413);
    assert_eq!(e["code"], "payload_too_large");

    let mut many = image_deploy(&f.url, "api", "v1.1.0");
    let one = many["deploySpecs"][0]["updates"][0]["paths"][0].clone();
    many["deploySpecs"][0]["updates"][0]["paths"] = json!([one, one, one, one]);
    let e = refused(&f, &body(&many), Some(CI), 400);
    assert!(message(&e).contains('3'), "{e}");

    // Nothing above reached the repository.
    assert_eq!(f.repo.commit_count("main").unwrap(), 1);
    a_failing_edit_fails_its_job_alone(&f);

    // Refusals and failures are in the server's log, with the token's name, never the token.
    let logs = f.server.logs();
    let refusals: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("request refused"))
        .collect();
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("WARN") && l.contains("status=401")),
        "{logs}"
    );
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("status=403") && l.contains("has no grant for `deploy`")),
        "{logs}"
    );
    assert!(!logs.contains(OTHER_TEAM) && !logs.contains("not-a-known-token"));

    let (status, health) = f.server.get_json("/api/v1/health", None).unwrap();
    assert_eq!((status, health["status"].as_str()), (200, Some("SERVING")));
    assert!(f.server.pid().is_some());
}

/// A job whose edit cannot apply (a key below a scalar) fails with the file and key, and the
/// request that shares its push lands. The first push is held at the remote so that both
/// requests queue behind it and go out together.
fn a_failing_edit_fails_its_job_alone(f: &Fixture) {
    let entered = f.scratch.join("push-entered");
    let release = f.scratch.join("push-release");
    hold_pushes(&f.repo, &entered, &release);
    let metrics = f.server.get("/metrics", None).unwrap().text();
    let (sum_before, count_before) = histogram(&metrics, "tug_batch_size");

    let submit = |request: &Value| {
        let response = f
            .server
            .post_deploy_to("/api/v1/deploy?wait=false", &body(request), Some(CI), None)
            .unwrap();
        assert_eq!(response.status, 202, "{}", response.text());
        response.json().unwrap()["jobId"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let first = submit(&image_deploy(&f.url, "web", "v2.0.0"));
    wait_for(
        Duration::from_secs(30),
        "the first push to reach the remote",
        || entered.exists().then_some(()),
    );
    let broken = submit(&json!({
        "commitSpec": {"CommitMessage": "scale api"},
        "deploySpecs": [{"url": f.url, "updates": [{"branch": "main", "paths": [{
            "path": "apps/api/dev",
            "yq": [{"file": "deployment.yaml", "key": ".spec.replicas.count", "value": 3}],
        }]}]}],
    }));
    let good = submit(&image_deploy(&f.url, "worker", "v2.0.0"));
    let metrics = f.server.get("/metrics", None).unwrap().text();
    assert!(
        metrics.contains("tug_queue_depth{repository=\"platform\",branch=\"main\"} 3"),
        "one task in flight and two queued behind it:\n{metrics}"
    );
    std::fs::write(&release, "").unwrap();

    let timeout = Duration::from_secs(30);
    assert_eq!(
        wait_for_end(&f.server, &first, CI, timeout)["status"],
        "succeeded"
    );
    assert_eq!(
        wait_for_end(&f.server, &good, CI, timeout)["status"],
        "succeeded"
    );
    let failed = wait_for_end(&f.server, &broken, CI, timeout);
    assert_eq!(failed["status"], "failed", "{failed}");
    let error = failed["updates"][0]["error"].as_str().expect("error");
    assert!(
        error.contains("apps/api/dev/deployment.yaml") && error.contains("replicas"),
        "{failed}"
    );

    // The failure is logged at WARN with the job, repository, branch, attempt and cause.
    let logs = f.server.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("job failed") && l.contains(&broken))
        .unwrap_or_else(|| panic!("no `job failed` line for {broken}:\n{logs}"));
    assert!(
        line.contains("WARN")
            && line.contains("repository=platform")
            && line.contains("branch=main")
            && line.contains("attempt=1")
            && line.contains("replicas"),
        "{line}"
    );

    let trailers = request_trailers(&f.repo);
    assert!(trailers.contains(&first) && trailers.contains(&good));
    assert!(
        !trailers.contains(&broken),
        "nothing of the failed job was pushed"
    );
    assert_eq!(f.repo.commit_count("main").unwrap(), 3);

    let metrics = f.server.get("/metrics", None).unwrap().text();
    let (sum_after, count_after) = histogram(&metrics, "tug_batch_size");
    assert_eq!(
        (sum_after - sum_before, count_after - count_before),
        (3.0, 2),
        "the failed and the good request went out in one batch"
    );
}

/// Runs `tug server` on `yaml` and expects it to exit with an error; returns the configuration
/// file (in `scratch`) and the server's stderr.
fn server_refuses_config(scratch: &Scratch, yaml: &str) -> (std::path::PathBuf, String) {
    let path = scratch.join("tug.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut child = TugServer::clean_command(tug_binary(), scratch.path(), &[])
        .arg("server")
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("tug server accepted an invalid configuration:\n{yaml}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{status}: {stderr}");
    (path, stderr)
}

const VALID_AUTH: &str = r#"auth:
  tokens:
    - name: ci
      sha256: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
      repositories: ["*"]
"#;

#[test]
fn an_unknown_configuration_field_stops_the_server_with_file_line_and_field() {
    let yaml = format!(
        "repositories:\n  - name: platform\n    url: \"file:///srv/git/platform.git\"\n    brnach: main\n{VALID_AUTH}"
    );
    let scratch = Scratch::new().unwrap();
    let (path, stderr) = server_refuses_config(&scratch, &yaml);
    assert!(
        stderr.contains(&format!("{}:4:", path.display())),
        "names file and line: {stderr}"
    );
    assert!(stderr.contains("brnach"), "names the field: {stderr}");
}

#[test]
fn an_unset_variable_stops_the_server_naming_file_line_field_and_variable() {
    let yaml = format!(
        "repositories:\n  - name: platform\n    url: \"https://git.example.com/platform.git\"\n    http: {{username: bot, password: \"${{TUG_TEST_UNSET_PASSWORD}}\"}}\n{VALID_AUTH}"
    );
    let scratch = Scratch::new().unwrap();
    let (path, stderr) = server_refuses_config(&scratch, &yaml);
    assert!(
        stderr.contains(&format!("{}:4:", path.display())),
        "names file and line: {stderr}"
    );
    assert!(
        stderr.contains("repositories[0].http.password"),
        "names the field: {stderr}"
    );
    assert!(
        stderr.contains("TUG_TEST_UNSET_PASSWORD"),
        "names the variable: {stderr}"
    );
}

#[test]
fn query_parameters_a_route_does_not_take_are_refused_and_nothing_is_pushed() {
    let f = start();
    let before = f.repo.tip("main").unwrap();
    let request = body(&image_deploy(&f.url, "api", "v9.9.9"));
    let response = f
        .server
        .post_deploy_to("/api/v1/deploy?dryrun=true", &request, Some(CI), None)
        .unwrap();
    assert_eq!(response.status, 400, "{}", response.text());
    let error: Value = serde_json::from_str(&response.text()).unwrap();
    assert_eq!(error["code"], "invalid_argument", "{error}");
    assert_eq!(error["details"]["field"], "dryrun", "{error}");
    assert!(
        message(&error).contains("takes only wait, dryRun"),
        "{}",
        message(&error)
    );
    assert_eq!(f.repo.tip("main").unwrap(), before, "nothing was pushed");

    // The parameters a route does take still work, and every route checks.
    let response = f
        .server
        .post_deploy_to("/api/v1/deploy?wait=false", &request, Some(CI), None)
        .unwrap();
    assert_eq!(response.status, 202, "{}", response.text());
    for path in ["/api/v1/jobs?limit=1&colour=blue", "/metrics?x=1"] {
        let (status, error) = f.server.get_json(path, Some(CI)).unwrap();
        assert_eq!(status, 400, "{path}: {error}");
        assert!(
            message(&error).contains("unknown query parameter"),
            "{error}"
        );
    }
    let (status, jobs) = f.server.get_json("/api/v1/jobs?limit=1", Some(CI)).unwrap();
    assert_eq!(status, 200, "{jobs}");
}

#[test]
fn a_dry_run_shows_the_diff_and_commit_message_and_stores_and_pushes_nothing() {
    let f = start();
    let before = f.repo.tip("main").unwrap();
    let (_, jobs_before) = f.server.get_json("/api/v1/jobs", Some(CI)).unwrap();
    let request = body(&image_deploy(&f.url, "api", "v9.9.9"));
    let response = f
        .server
        .post_deploy_to("/api/v1/deploy?dryRun=true", &request, Some(CI), None)
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let preview: Value = serde_json::from_str(&response.text()).unwrap();
    assert_eq!(preview["dryRun"], true, "{preview}");
    assert_eq!(preview["status"], "succeeded", "{preview}");
    let update = &preview["updates"][0];
    assert_eq!(update["status"], "would_commit", "{preview}");
    assert_eq!(update["branch"], "main");
    assert_eq!(
        update["tip"].as_str(),
        before.as_deref(),
        "computed on the tip"
    );
    assert_eq!(
        update["files"][0]["path"], "apps/api/dev/kustomization.yaml",
        "{preview}"
    );
    let diff = update["files"][0]["diff"].as_str().unwrap();
    assert!(
        diff.contains(
            "--- a/apps/api/dev/kustomization.yaml\n+++ b/apps/api/dev/kustomization.yaml\n"
        ),
        "{diff}"
    );
    assert!(
        diff.contains("-    newTag: v1.0.0\n+    newTag: v9.9.9\n"),
        "{diff}"
    );
    let message = update["commitMessage"].as_str().unwrap();
    assert!(message.starts_with("deploy api v9.9.9"), "{message}");

    // Nothing stored, nothing pushed.
    assert_eq!(f.repo.tip("main").unwrap(), before);
    let (_, jobs_after) = f.server.get_json("/api/v1/jobs", Some(CI)).unwrap();
    assert_eq!(jobs_after["jobs"], jobs_before["jobs"]);

    // The same refusals as a real request: validation (400) and edits that cannot apply.
    let unknown = body(&image_deploy(&f.url, "nosuch", "v1"));
    let response = f
        .server
        .post_deploy_to("/api/v1/deploy?dryRun=true", &unknown, Some(CI), None)
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let preview: Value = serde_json::from_str(&response.text()).unwrap();
    assert_eq!(preview["status"], "failed", "{preview}");
    assert!(
        preview["updates"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("apps/nosuch/dev")),
        "{preview}"
    );
    let response = f
        .server
        .post_deploy_to(
            "/api/v1/deploy?dryRun=true",
            &request,
            Some(OTHER_TEAM),
            None,
        )
        .unwrap();
    assert_eq!(response.status, 403, "{}", response.text());
    assert_eq!(f.repo.tip("main").unwrap(), before);
}

/// Opens a deploy stream on a raw connection and reads until its first NDJSON line (the job is
/// stored and followed); the stream stays open while the returned connection lives.
fn open_stream(server: &TugServer, request: &[u8]) -> std::net::TcpStream {
    try_open_stream(server, request).unwrap_or_else(|status| panic!("{status}"))
}

/// [`open_stream`], or the status line of an answer other than 200.
fn try_open_stream(server: &TugServer, request: &[u8]) -> Result<std::net::TcpStream, String> {
    use std::io::{BufRead, BufReader, Write};
    let mut conn = std::net::TcpStream::connect(server.http_addr()).unwrap();
    // A stream that never ends fails the test instead of hanging it.
    conn.set_read_timeout(Some(Duration::from_secs(90)))
        .unwrap();
    let head = format!(
        "POST /api/v1/deploy HTTP/1.1\r\nHost: tug\r\nConnection: close\r\nAuthorization: Bearer {CI}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        request.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(request).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    if !line.starts_with("HTTP/1.1 200") {
        return Err(line);
    }
    // Past the headers to the first line of the body: the stream is being followed.
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.contains("accepted job") {
            return Ok(conn);
        }
        assert!(!line.is_empty(), "the stream ended before it was accepted");
    }
}

#[test]
fn a_caller_who_hangs_up_frees_its_place_among_the_waiting_streams() {
    // The remote is down: every job stays queued and its caller's stream open.
    let OneStream {
        remote: _remote,
        url,
        server,
        _repo,
    } = one_waiting_stream();
    let first = open_stream(&server, &body(&image_deploy(&url, "api", "v1")));
    let refused = try_open_stream(&server, &body(&image_deploy(&url, "web", "v1")));
    assert!(
        refused.as_ref().is_err_and(|status| status.contains("429")),
        "{refused:?}"
    );

    // The first caller hangs up: its place goes to the next one, though its job still waits.
    drop(first);
    let second = wait_for(
        Duration::from_secs(30),
        "the place of the caller who hung up",
        || try_open_stream(&server, &body(&image_deploy(&url, "web", "v1"))).ok(),
    );
    // And it is taken again.
    let refused = try_open_stream(&server, &body(&image_deploy(&url, "worker", "v1")));
    assert!(
        refused.as_ref().is_err_and(|status| status.contains("429")),
        "{refused:?}"
    );
    drop(second);
}

/// A server allowed one waiting stream, in front of a remote that is down.
struct OneStream {
    remote: Remote,
    url: String,
    server: TugServer,
    _repo: BareRepo,
}

fn one_waiting_stream() -> OneStream {
    let repo = overlays_repo(&["api", "web", "worker"]);
    let mut remote = Remote::start(repo.root());
    let url = remote.url(repo.name());
    remote.stop();
    let config = format!(
        r#"repositories:
  - name: platform
    url: "{url}"
auth:
  tokens:
    - name: ci
      sha256: "{ci}"
      repositories: ["platform"]
limits:
  max_waiting_streams: 1
"#,
        ci = token_sha256(CI),
    );
    let server = TugServer::start(tug_binary(), &config).expect("start tug server");
    OneStream {
        remote,
        url,
        server,
        _repo: repo,
    }
}

#[test]
fn beyond_the_waiting_stream_limit_a_request_is_told_to_retry_and_nothing_is_stored() {
    // The remote is down: the first job stays queued and its caller's stream open.
    let OneStream {
        mut remote,
        url,
        server,
        _repo,
    } = one_waiting_stream();
    let first = open_stream(&server, &body(&image_deploy(&url, "api", "v1")));

    let response = server
        .post_deploy_to(
            "/api/v1/deploy",
            &body(&image_deploy(&url, "web", "v1")),
            Some(CI),
            None,
        )
        .unwrap();
    assert_eq!(response.status, 429, "{}", response.text());
    assert_eq!(response.header("retry-after"), Some("1"));
    let error = response.json().unwrap();
    assert_eq!(error["code"], "resource_exhausted", "{error}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("limits.max_waiting_streams") && m.contains("wait=false")),
        "{error}"
    );
    let (_, jobs) = server.get_json("/api/v1/jobs", Some(CI)).unwrap();
    assert_eq!(
        jobs["jobs"].as_array().unwrap().len(),
        1,
        "only the first job is stored: {jobs}"
    );

    // Not waiting needs no stream: stored as usual.
    let response = server
        .post_deploy_to(
            "/api/v1/deploy?wait=false",
            &body(&image_deploy(&url, "web", "v1")),
            Some(CI),
            None,
        )
        .unwrap();
    assert_eq!(response.status, 202, "{}", response.text());

    // The remote is back: the first job lands, its stream ends and frees its place, and a
    // waiting request is taken again.
    remote.resume();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut &first, &mut rest).unwrap();
    assert!(rest.contains("succeeded"), "{rest}");
    let (status, lines) = server
        .post_deploy(&body(&image_deploy(&url, "worker", "v1")), Some(CI), None)
        .unwrap();
    assert_eq!(status, 200, "{lines:?}");
    assert_eq!(lines.last().unwrap()["result"]["status"], "succeeded");
}
