//! `tug server` end to end over REST: the Delivery server's curl request, idempotency, the jobs
//! API, group commit under 64 concurrent requests, metrics and the OpenAPI document. The GitOps
//! repository is served over smart HTTP behind basic auth, with the password given to the server
//! through an environment variable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod server_common;

use std::collections::BTreeSet;

use serde_json::Value;
use server_common::*;
use tug_testkit::{BareRepo, BasicAuth, SmartHttp, TugServer};

const TOKEN: &str = "tug-ci-token-0c6f41";
const GIT_PASSWORD: &str = "git-pass-5e0b7d93a1";
const CONCURRENT: usize = 64;

/// The request body of the Delivery server's user guide, byte for byte except the repository URL.
const SEED_BODY: &str = r#"{
    "commitSpec": {
      "CommitMessage": "update image tag to v1.2.3"
    },
    "deploySpecs": [
      {
        "url": "https://gitlab.example.com/infra/platform",
        "updates": [
          {
            "branch": "main",
            "paths": [
              {
                "path": "apps/my-app/dev",
                "kustomize": {
                  "images": [
                    {
                      "name": "registry.example.com/my-app",
                      "newName": "registry.example.com/my-app",
                      "newTag": "v1.2.3"
                    }
                  ]
                }
              }
            ]
          }
        ]
      }
    ]
  }"#;

// Fields drop in order: the server stops before its remote goes away.
struct Fixture {
    server: TugServer,
    _git: SmartHttp,
    repo: BareRepo,
    url: String,
}

fn start() -> Fixture {
    start_with("")
}

/// A server whose configuration also holds `extra` (top-level YAML keys).
fn start_with(extra: &str) -> Fixture {
    let mut services = vec!["my-app".to_owned()];
    services.extend((0..CONCURRENT).map(|i| format!("svc-{i:02}")));
    let names: Vec<&str> = services.iter().map(String::as_str).collect();
    let repo = overlays_repo(&names);
    let git = SmartHttp::start(
        repo.root(),
        Some(BasicAuth {
            username: "tug-bot".to_owned(),
            password: GIT_PASSWORD.to_owned(),
        }),
    )
    .expect("start smart HTTP");
    let url = git.url(repo.name());
    let config = format!(
        r#"repositories:
  - name: platform
    url: "{url}"
    http: {{username: tug-bot, password: "${{GIT_PASS}}"}}
auth:
  tokens:
    - name: ci
      sha256: "{sha}"
      repositories: ["platform"]
{extra}"#,
        sha = token_sha256(TOKEN),
    );
    let server = TugServer::start_with_env(tug_binary(), &config, &[("GIT_PASS", GIT_PASSWORD)])
        .expect("start tug server");
    Fixture {
        repo,
        server,
        _git: git,
        url,
    }
}

/// `main` gained one commit per request, `requests` of them since `before` commits, and no merge.
fn one_commit_each_in_a_line(f: &Fixture, before: usize, requests: usize) {
    assert_eq!(
        f.repo.commit_count("main").unwrap(),
        before + requests,
        "one commit per request"
    );
    let merges = f
        .repo
        .git(&["rev-list", "--min-parents=2", "main"])
        .unwrap();
    assert!(merges.is_empty(), "history is linear");
}

fn final_result(lines: &[Value]) -> &Value {
    &lines.last().expect("at least one NDJSON line")["result"]
}

// One scenario per test, each on its own server, so one failure hides none of the others.

#[test]
fn a_deploy_lands_streams_progress_leaves_no_secret_and_shows_in_the_jobs_api() {
    let f = start();
    let job_id = seed_request_lands_and_streams_progress(&f);
    no_secret_in_data_dir_or_logs(&f);
    // A second, newer job (with an idempotency key), which the listing must put first.
    idempotency_key_gives_one_job_and_one_commit(&f);
    jobs_api_shows_the_job_with_its_events(&f, &job_id);
}

#[test]
fn the_same_idempotency_key_gives_one_job_and_one_commit() {
    idempotency_key_gives_one_job_and_one_commit(&start());
}

#[test]
fn concurrent_requests_share_pushes() {
    concurrent_requests_on_one_branch_share_pushes(&start());
}

#[test]
fn callers_coming_back_have_their_requests_built_as_they_arrive_and_land_in_order() {
    const CALLERS: usize = 16;
    const ROUNDS: usize = 4;
    let f = start_with("log:\n  level: info,tug_service::writer=debug\n");
    let before_commits = f.repo.commit_count("main").unwrap();
    // A closed loop: each caller sends its next request once its last one has landed, so
    // after the first round the writer waits for the callers of the batch it just landed.
    std::thread::scope(|scope| {
        for i in 0..CALLERS {
            let f = &f;
            scope.spawn(move || {
                for round in 1..=ROUNDS {
                    let service = format!("svc-{i:02}");
                    let request = body(&image_deploy(&f.url, &service, &format!("v9.{round}.0")));
                    let (status, lines) =
                        f.server.post_deploy(&request, Some(TOKEN), None).unwrap();
                    assert_eq!(status, 200, "{lines:?}");
                    assert_eq!(final_result(&lines)["status"], "succeeded", "{lines:?}");
                }
            });
        }
    });
    one_commit_each_in_a_line(&f, before_commits, CALLERS * ROUNDS);
    for i in 0..CALLERS {
        let file = f
            .repo
            .read_file("main", &format!("apps/svc-{i:02}/dev/kustomization.yaml"))
            .unwrap()
            .unwrap();
        let file = String::from_utf8(file).unwrap();
        assert!(
            file.contains(&format!("newTag: v9.{ROUNDS}.0")),
            "svc-{i:02}: {file}"
        );
    }
    // Each caller's requests landed in the order it sent them.
    let subjects = String::from_utf8(
        f.repo
            .git(&["log", "--reverse", "--format=%s", "main"])
            .unwrap(),
    )
    .unwrap();
    for i in 0..CALLERS {
        let service = format!("svc-{i:02}");
        let tags: Vec<&str> = subjects
            .lines()
            .filter(|s| s.starts_with(&format!("deploy {service} ")))
            .collect();
        assert_eq!(tags.len(), ROUNDS, "{service}: {tags:?}\n{subjects}");
        let sent: Vec<String> = (1..=ROUNDS)
            .map(|round| format!("deploy {service} v9.{round}.0"))
            .collect();
        assert_eq!(tags, sent, "{service}");
    }
    // The batches after the first were built on the branch's tip while their callers came
    // back, and landed as built.
    let logs = f.server.logs();
    let gathered: Vec<usize> = logs
        .lines()
        .filter(|l| l.contains("built a batch while its requests arrived"))
        .filter_map(|l| l.split(" tasks=").nth(1))
        .filter_map(|v| v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .filter(|&tasks| tasks > 0)
        .collect();
    assert!(
        !gathered.is_empty(),
        "no batch built while its callers came back:\n{logs}"
    );
    assert!(
        logs.lines().filter(|l| l.contains("landed batch")).count() < CALLERS * ROUNDS,
        "requests shared pushes"
    );
}

#[test]
fn one_request_after_another_leaves_the_mirror_few_packs() {
    let f = start();
    // Each request is a batch of its own, and each batch adds a pack to the mirror.
    for n in 0..24 {
        let (status, lines) = f
            .server
            .post_deploy(
                &body(&image_deploy(&f.url, "my-app", &format!("v0.{n}"))),
                Some(TOKEN),
                None,
            )
            .unwrap();
        assert_eq!(status, 200, "{lines:?}");
        assert_eq!(final_result(&lines)["status"], "succeeded", "{lines:?}");
    }
    let packs = || -> usize {
        let mirrors = f.server.data_dir().join("mirrors");
        std::fs::read_dir(&mirrors)
            .unwrap()
            .filter_map(Result::ok)
            .filter_map(|m| std::fs::read_dir(m.path().join("objects/pack")).ok())
            .flat_map(|packs| packs.filter_map(Result::ok))
            .filter(|p| p.file_name().to_string_lossy().ends_with(".pack"))
            .count()
    };
    // The repack runs in the background once the writer finds nothing waiting (here after the
    // last request); the server says when it is done.
    wait_for(
        std::time::Duration::from_secs(30),
        "the mirror repacked",
        || {
            f.server
                .logs()
                .contains("repacked the mirror")
                .then_some(())
        },
    );
    let logs = f.server.logs();
    let after: usize = logs
        .lines()
        .find(|l| l.contains("repacked the mirror"))
        .and_then(|l| l.split("packs_after=").nth(1))
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no pack count in the log:\n{logs}"));
    assert!(after <= 4, "{after} packs right after the repack");
    // Batches after the repack add packs again, up to the threshold of the next one.
    let left = packs();
    assert!(left <= 17, "{left} packs after 24 batches");
}

#[test]
fn metrics_openapi_and_health_are_served() {
    let f = start();
    // The job metrics exist once a job finished.
    seed_request_lands_and_streams_progress(&f);
    metrics_and_openapi_are_served(&f);
}

#[test]
fn request_ids_name_the_job_in_the_log() {
    request_ids_tie_log_lines_to_the_request(&start());
}

fn request_ids_tie_log_lines_to_the_request(f: &Fixture) {
    let body = SEED_BODY
        .replace("https://gitlab.example.com/infra/platform", &f.url)
        .replace("v1.2.3", "v1.2.9");
    let auth = format!("Bearer {TOKEN}");
    let headers = [
        ("Content-Type", "application/json"),
        ("Authorization", auth.as_str()),
        ("X-Request-Id", "ci-run-4711"),
    ];
    let response = f
        .server
        .request("POST", "/api/v1/deploy", &headers, body.as_bytes())
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-request-id"), Some("ci-run-4711"));
    let lines = response.ndjson().unwrap();
    let job_id = final_result(&lines)["jobId"].as_str().unwrap().to_owned();
    let logs = f.server.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("request_id=ci-run-4711") && l.contains(&job_id)),
        "no log line names both the request id and job {job_id}:\n{logs}"
    );

    // Without one (or with one that would garble a log line), the server makes its own.
    let headers = [("X-Request-Id", "two words")];
    let response = f
        .server
        .request("GET", "/api/v1/jobs/no-such-job", &headers, b"")
        .unwrap();
    let id = response.header("x-request-id").unwrap().to_owned();
    assert_ne!(id, "two words");
    assert!(uuid_like(&id), "{id}");
}

fn uuid_like(id: &str) -> bool {
    id.len() == 36 && id.split('-').map(str::len).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
}

fn seed_request_lands_and_streams_progress(f: &Fixture) -> String {
    let body = SEED_BODY.replace("https://gitlab.example.com/infra/platform", &f.url);
    let (status, lines) = f
        .server
        .post_deploy(body.as_bytes(), Some(TOKEN), None)
        .unwrap();
    assert_eq!(status, 200, "{lines:?}");
    assert!(lines.len() >= 2, "progress and a final line: {lines:?}");
    for line in &lines {
        assert!(
            line["result"]["message"].is_string(),
            "every line carries result.message: {line}"
        );
    }
    let result = final_result(&lines);
    assert_eq!(result["status"], "succeeded", "{lines:?}");
    // The Delivery server's own progress lines, in its order and wording: scripts grep them.
    let messages: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["result"]["message"].as_str())
        .collect();
    let delivery = [
        format!("[INFO] try updating the {} repository", f.url),
        "[INFO] the kustomize command to modify the registry.example.com/my-app image was successful".to_owned(),
        format!(
            "[INFO] the push to commit updates to branch main in repository {} was successful",
            f.url
        ),
    ];
    let positions: Vec<Option<usize>> = delivery
        .iter()
        .map(|want| messages.iter().position(|m| m.starts_with(want.as_str())))
        .collect();
    assert!(
        positions.iter().all(Option::is_some) && positions.is_sorted(),
        "{delivery:#?} in order among {messages:#?}"
    );
    let tip = f.repo.tip("main").unwrap().expect("main exists");
    assert_eq!(result["updates"][0]["commit"], tip.as_str(), "{result}");
    let kustomization = f
        .repo
        .read_file("main", "apps/my-app/dev/kustomization.yaml")
        .unwrap()
        .unwrap();
    assert_eq!(
        String::from_utf8(kustomization).unwrap(),
        // The tag changes in place (comment kept); the missing newName is added to the entry.
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - deployment.yaml\nimages:\n  # the application container\n  - name: registry.example.com/my-app\n    newTag: v1.2.3\n    newName: registry.example.com/my-app\n"
    );
    let head = &f.repo.log("main").unwrap()[0];
    assert_eq!(head.subject, "update image tag to v1.2.3");
    let job_id = result["jobId"].as_str().expect("jobId").to_owned();
    assert!(
        head.trailers
            .contains(&("Tug-Request".to_owned(), job_id.clone())),
        "{:?}",
        head.trailers
    );
    job_id
}

fn no_secret_in_data_dir_or_logs(f: &Fixture) {
    fn scan(dir: &std::path::Path, needle: &[u8], hits: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                scan(&path, needle, hits);
            } else if meta.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(path.display().to_string());
                }
            }
        }
    }
    let mut hits = Vec::new();
    scan(f.server.data_dir(), GIT_PASSWORD.as_bytes(), &mut hits);
    assert!(hits.is_empty(), "the git password is stored in {hits:?}");
    assert!(!f.server.logs().contains(GIT_PASSWORD));
    assert!(!f.server.logs().contains(TOKEN));
}

fn idempotency_key_gives_one_job_and_one_commit(f: &Fixture) {
    let before = f.repo.commit_count("main").unwrap();
    let request = body(&image_deploy(&f.url, "my-app", "v1.2.4"));
    let (s1, first) = f
        .server
        .post_deploy(&request, Some(TOKEN), Some("pipeline-981-deploy"))
        .unwrap();
    let (s2, second) = f
        .server
        .post_deploy(&request, Some(TOKEN), Some("pipeline-981-deploy"))
        .unwrap();
    assert_eq!((s1, s2), (200, 200), "{first:?} {second:?}");
    let (a, b) = (final_result(&first), final_result(&second));
    assert_eq!(a["status"], "succeeded", "{first:?}");
    assert_eq!(a["jobId"], b["jobId"], "the same key names the same job");
    assert_eq!(a["updates"][0]["commit"], b["updates"][0]["commit"]);
    assert!(
        second[0]["result"]["message"]
            .as_str()
            .unwrap()
            .contains("already accepted"),
        "{second:?}"
    );
    assert_eq!(f.repo.commit_count("main").unwrap(), before + 1);

    // Without waiting: the stored job is returned, 200 rather than 202 since nothing was created.
    let again = f
        .server
        .post_deploy_to(
            "/api/v1/deploy?wait=false",
            &request,
            Some(TOKEN),
            Some("pipeline-981-deploy"),
        )
        .unwrap();
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json().unwrap()["jobId"], a["jobId"]);
    assert_eq!(f.repo.commit_count("main").unwrap(), before + 1);
}

fn jobs_api_shows_the_job_with_its_events(f: &Fixture, job_id: &str) {
    let job = job(&f.server, job_id, TOKEN);
    assert_eq!(job["jobId"], job_id);
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["requestedBy"], "ci");
    assert!(job["createdAt"].is_string() && job["updatedAt"].is_string());
    let update = &job["updates"][0];
    assert_eq!(update["repository"], "platform");
    assert_eq!(update["branch"], "main");
    assert_eq!(update["status"], "succeeded");
    assert_eq!(update["commit"].as_str().map(str::len), Some(40), "{job}");
    let events = job["events"].as_array().expect("events");
    assert!(!events.is_empty());
    for e in events {
        assert!(e["seq"].is_i64() && e["at"].is_string() && e["level"].is_string());
        assert!(e["message"].is_string());
    }
    assert!(
        events
            .iter()
            .any(|e| e["message"].as_str().unwrap().contains("was successful")),
        "{events:?}"
    );

    let (status, missing) = f
        .server
        .get_json("/api/v1/jobs/no-such-job", Some(TOKEN))
        .unwrap();
    assert_eq!(status, 404, "{missing}");
    assert_eq!(missing["code"], "not_found");

    let (status, list) = f
        .server
        .get_json(
            "/api/v1/jobs?repository=platform&status=succeeded&limit=1",
            Some(TOKEN),
        )
        .unwrap();
    assert_eq!(status, 200, "{list}");
    let jobs = list["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 1, "{list}");
    assert_eq!(jobs[0]["status"], "succeeded");
    assert_eq!(jobs[0]["updates"][0]["repository"], "platform");
    assert_eq!(
        jobs[0]["idempotencyKey"], "pipeline-981-deploy",
        "newest first"
    );
    let (status, none) = f
        .server
        .get_json("/api/v1/jobs?repository=elsewhere", Some(TOKEN))
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(none["jobs"].as_array().map(Vec::len), Some(0), "{none}");
}

fn concurrent_requests_on_one_branch_share_pushes(f: &Fixture) {
    let before_commits = f.repo.commit_count("main").unwrap();
    let metrics = f.server.get("/metrics", None).unwrap().text();
    let (sum_before, count_before) = histogram(&metrics, "tug_batch_size");

    let results: Vec<(u16, Vec<Value>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CONCURRENT)
            .map(|i| {
                let request = body(&image_deploy(&f.url, &format!("svc-{i:02}"), "v2.0.0"));
                let server = &f.server;
                scope.spawn(move || server.post_deploy(&request, Some(TOKEN), None).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ids = BTreeSet::new();
    for (status, lines) in &results {
        assert_eq!(*status, 200, "{lines:?}");
        let result = final_result(lines);
        assert_eq!(result["status"], "succeeded", "{lines:?}");
        ids.insert(result["jobId"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), CONCURRENT);
    one_commit_each_in_a_line(f, before_commits, CONCURRENT);
    let trailers: BTreeSet<String> = request_trailers(&f.repo)
        .into_iter()
        .take(CONCURRENT)
        .collect();
    assert_eq!(trailers, ids, "each commit names its request");
    for i in [0, CONCURRENT / 2, CONCURRENT - 1] {
        let file = f
            .repo
            .read_file("main", &format!("apps/svc-{i:02}/dev/kustomization.yaml"))
            .unwrap()
            .unwrap();
        assert!(String::from_utf8(file).unwrap().contains("newTag: v2.0.0"));
    }

    let metrics = f.server.get("/metrics", None).unwrap().text();
    let (sum_after, count_after) = histogram(&metrics, "tug_batch_size");
    let pushes = count_after - count_before;
    assert_eq!(
        sum_after - sum_before,
        CONCURRENT as f64,
        "every request went into a batch"
    );
    assert!(
        pushes < CONCURRENT as u64,
        "{CONCURRENT} requests took {pushes} pushes: no grouping"
    );
}

fn metrics_and_openapi_are_served(f: &Fixture) {
    let response = f.server.get("/metrics", None).unwrap();
    assert_eq!(response.status, 200);
    assert!(
        response.header("content-type").is_some_and(|c| c
            .starts_with("application/openmetrics-text")
            || c.starts_with("text/plain")),
        "{:?}",
        response.headers
    );
    let text = response.text();
    for family in [
        "tug_batch_size_count",
        "tug_push_duration_seconds_count",
        "tug_job_duration_seconds_count",
        "tug_jobs_total{status=\"succeeded\"}",
    ] {
        assert!(text.contains(family), "/metrics lacks {family}:\n{text}");
    }

    let (status, doc) = f.server.get_json("/api/v1/openapi.json", None).unwrap();
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')));
    assert!(doc["paths"]["/api/v1/deploy"]["post"].is_object(), "{doc}");
    assert!(doc["paths"]["/api/v1/jobs/{id}"].is_object(), "{doc}");

    // The Delivery server's health check, as its user guide writes it.
    for path in ["/api/v1/health", "/api/v1/health?service=delivery"] {
        let (status, health) = f.server.get_json(path, None).unwrap();
        assert_eq!(
            (status, health["status"].as_str()),
            (200, Some("SERVING")),
            "{path}"
        );
    }
}
