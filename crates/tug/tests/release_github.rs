//! GitHub deployments from releases, as a user runs them: a real `tug server` process, a real
//! bare repository, CI's `tug artifact` commands and `tug release`, then Argo CD's rollout
//! reports — against a fake GitHub API in the test that checks each request's method, path,
//! headers and required fields the way GitHub's REST API documents them, and records it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tug_testkit::{BareRepo, Scratch, TugServer};

const TOKEN: &str = "tug_test_deployments_0123456789";
const GH_TOKEN: &str = "ghp_deployments_secret_7d3a";
const SHA: &str = "9fceb02d0ae598e95dc970b74767f19372d61af8";
const IMAGE: &str = "registry.example.com/acme/api";
const KUSTOMIZATION: &str = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nimages:\n  - name: registry.example.com/acme/api\n    newTag: 0.0.1\n";

fn tug_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tug"))
}

#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    body: Value,
}

#[derive(Default)]
struct Github {
    calls: Vec<Call>,
    /// Requests GitHub would refuse, with why.
    refused: Vec<String>,
    next_id: u64,
}

type Shared = Arc<Mutex<Github>>;

/// What GitHub's REST API asks of every request, then what each endpoint requires.
fn check(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
    known: u64,
) -> Result<(), String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("accept") != Some("application/vnd.github+json") {
        return Err(format!("Accept: {:?}", header("accept")));
    }
    if header("x-github-api-version") != Some("2022-11-28") {
        return Err(format!(
            "X-GitHub-Api-Version: {:?}",
            header("x-github-api-version")
        ));
    }
    if header("authorization") != Some(&format!("Bearer {GH_TOKEN}")) {
        return Err("Authorization".into());
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if method == Method::GET {
        return match parts.as_slice() {
            ["repos", "acme", "api", "deployments"] => Ok(()),
            _ => Err(format!("no such endpoint GET {path}")),
        };
    }
    if !header("content-type").is_some_and(|c| c.starts_with("application/json")) {
        return Err("Content-Type".into());
    }
    if method != Method::POST {
        return Err(format!("method {method}"));
    }
    match parts.as_slice() {
        ["repos", "acme", "api", "statuses", sha] if *sha == SHA => Ok(()),
        ["repos", "acme", "api", "deployments"] => {
            let fine = body["ref"] == SHA
                && body["environment"].is_string()
                && body["auto_merge"] == false
                && body["required_contexts"] == json!([])
                && body["payload"].is_object();
            fine.then_some(())
                .ok_or_else(|| format!("deployment body {body}"))
        }
        ["repos", "acme", "api", "deployments", id, "statuses"] => {
            let id: u64 = id.parse().map_err(|_| format!("deployment id {id}"))?;
            let states = [
                "error",
                "failure",
                "inactive",
                "in_progress",
                "queued",
                "pending",
                "success",
            ];
            let state = body["state"].as_str().unwrap_or_default();
            if id == 0 || id > known {
                Err(format!("no deployment {id}"))
            } else if !states.contains(&state) {
                Err(format!("state {state}"))
            } else if body["description"]
                .as_str()
                .is_some_and(|d| d.chars().count() > 140)
            {
                Err("description over 140 characters".into())
            } else {
                Ok(())
            }
        }
        _ => Err(format!("no such endpoint {path}")),
    }
}

async fn api(
    State(github): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = uri.path().to_owned();
    let mut github = github.lock().unwrap();
    if let Err(why) = check(&method, &path, &headers, &body, github.next_id) {
        github.refused.push(format!("{method} {path}: {why}"));
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "{\"message\": \"Validation Failed\"}",
        )
            .into_response();
    }
    github.calls.push(Call {
        method: method.to_string(),
        path: path.clone(),
        body: body.clone(),
    });
    if method == Method::GET {
        // List deployments, filtered by `sha` and `environment` as GitHub does.
        let query: Vec<(String, String)> = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let wanted = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let mut listed: Vec<Value> = github
            .calls
            .iter()
            .filter(|c| c.method == "POST" && c.path == "/repos/acme/api/deployments")
            .enumerate()
            .filter(|(_, c)| {
                wanted("sha").is_none_or(|sha| c.body["ref"] == sha)
                    && wanted("environment").is_none_or(|env| c.body["environment"] == env)
            })
            .map(|(i, c)| json!({"id": i + 1, "sha": c.body["ref"], "environment": c.body["environment"], "payload": c.body["payload"]}))
            .collect();
        // Newest first.
        listed.reverse();
        return (StatusCode::OK, axum::Json(Value::Array(listed))).into_response();
    }
    if path.ends_with("/deployments") {
        github.next_id += 1;
        let id = github.next_id;
        return (
            StatusCode::CREATED,
            axum::Json(json!({"id": id, "sha": body["ref"], "environment": body["environment"]})),
        )
            .into_response();
    }
    (StatusCode::CREATED, axum::Json(json!({"id": 1}))).into_response()
}

/// The fake API on a loopback port, served by `runtime`.
fn fake_github(runtime: &tokio::runtime::Runtime) -> (String, Shared) {
    let shared = Shared::default();
    let app = Router::new().fallback(api).with_state(shared.clone());
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, shared)
}

struct World {
    repo: BareRepo,
    server: TugServer,
    client_dir: Scratch,
    github: Shared,
    _runtime: tokio::runtime::Runtime,
}

impl World {
    fn start() -> World {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (api_url, github) = fake_github(&runtime);
        let repo = BareRepo::with_files(&[
            ("apps/api/dev/kustomization.yaml", KUSTOMIZATION.as_bytes()),
            ("apps/api/prod/kustomization.yaml", KUSTOMIZATION.as_bytes()),
        ])
        .unwrap();
        let config = format!(
            r#"repositories:
  - name: platform
    url: "{url}"
auth:
  tokens:
    - name: ci
      sha256: "{sha}"
      repositories: ["*"]
environments:
  - {{ name: dev, repository: platform, branch: main }}
  - {{ name: prod, after: dev }}
services:
  - name: api
    path: "apps/{{service}}/{{env}}"
    edit: {{ kind: kustomize }}
notify: {{ max_attempts: 2, base_delay_ms: 10 }}
release_notify:
  github:
    api_url: "{api_url}"
    token: "${{GITHUB_TOKEN}}"
    repository: acme/api
    deployments:
      environments:
        dev:
          url: "https://dev.api.example.com"
          log_url: "https://argocd.example.com/applications/api-dev"
        prod: {{ production: true }}
"#,
            url = repo.file_url(),
            sha = hex::encode(Sha256::digest(TOKEN.as_bytes())),
        );
        let server =
            TugServer::start_with_env(tug_binary(), &config, &[("GITHUB_TOKEN", GH_TOKEN)])
                .unwrap();
        World {
            repo,
            server,
            client_dir: Scratch::new().unwrap(),
            github,
            _runtime: runtime,
        }
    }

    fn tug(&self, args: &[&str]) -> Output {
        let url = self.server.http_url();
        TugServer::clean_command(
            tug_binary(),
            self.client_dir.path(),
            &[("TUG_SERVER", url.as_str()), ("TUG_TOKEN", TOKEN)],
        )
        .args(args)
        .current_dir(self.client_dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.tug(args);
        assert!(
            out.status.success(),
            "tug {args:?} failed: {}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.server.logs()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Argo CD's notification for the application `app` at `revision`.
    fn argocd(&self, app: &str, revision: &str, health: &str) {
        let body = json!({
            "app": app, "revision": revision, "syncStatus": "Synced", "healthStatus": health,
        });
        let auth = format!("Bearer {TOKEN}");
        let response = self
            .server
            .request(
                "POST",
                "/api/v1/webhooks/argocd",
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                ],
                body.to_string().as_bytes(),
            )
            .unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
    }

    /// Waits until the fake GitHub holds calls for which `done` holds.
    fn wait_calls(&self, what: &str, done: impl Fn(&[Call]) -> bool) -> Vec<Call> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let github = self.github.lock().unwrap();
            assert!(
                github.refused.is_empty(),
                "GitHub would refuse: {:?}",
                github.refused
            );
            if done(&github.calls) {
                return github.calls.clone();
            }
            let calls = github.calls.clone();
            drop(github);
            assert!(
                Instant::now() < deadline,
                "never got {what}; calls: {calls:#?}\nlog:\n{}",
                self.server.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The states sent for deployment `id`, in order.
fn states(calls: &[Call], id: u64) -> Vec<String> {
    let path = format!("/repos/acme/api/deployments/{id}/statuses");
    calls
        .iter()
        .filter(|c| c.path == path)
        .map(|c| c.body["state"].as_str().unwrap().to_owned())
        .collect()
}

fn deployments(calls: &[Call]) -> Vec<&Call> {
    calls
        .iter()
        .filter(|c| c.path == "/repos/acme/api/deployments")
        .collect()
}

#[test]
fn a_release_is_a_github_deployment_whose_status_follows_the_rollout() {
    let mut world = World::start();
    world.ok(&[
        "artifact",
        "init",
        "--service",
        "api",
        "--id",
        "main-9fceb02",
        "--branch",
        "main",
        "--sha",
        SHA,
        "--author-name",
        "Ann Author",
        "--author-email",
        "ann@example.com",
        "--message",
        "fix the checkout",
        "--ci-job-url",
        "https://ci.example.com/jobs/7",
    ]);
    world.ok(&[
        "artifact", "add", "push", "--image", IMAGE, "--tag", "9fceb02",
    ]);
    world.ok(&["artifact", "push"]);
    world.ok(&[
        "release",
        "--service",
        "api",
        "--env",
        "dev",
        "--branch",
        "main",
    ]);
    let release_commit = world.repo.tip("main").unwrap().unwrap().to_string();

    // The deployment of the artifact's commit to dev, then `in_progress`: the commit landed.
    let calls = world.wait_calls("dev's in_progress status", |calls| {
        states(calls, 1) == ["in_progress"]
    });
    let created = deployments(&calls);
    assert_eq!(created.len(), 1, "{calls:#?}");
    let deployment = &created[0].body;
    assert_eq!(created[0].method, "POST");
    assert_eq!(deployment["ref"], SHA);
    assert_eq!(deployment["environment"], "dev");
    assert_eq!(deployment["task"], "deploy");
    assert_eq!(deployment["payload"]["service"], "api");
    assert_eq!(deployment["payload"]["artifactId"], "main-9fceb02");
    assert_eq!(deployment["payload"]["manifestCommit"], release_commit);
    assert!(deployment.get("production_environment").is_none());
    let status = calls
        .iter()
        .find(|c| c.path == "/repos/acme/api/deployments/1/statuses")
        .unwrap();
    assert_eq!(
        status.body["environment_url"],
        "https://dev.api.example.com"
    );
    assert_eq!(
        status.body["log_url"],
        "https://argocd.example.com/applications/api-dev"
    );
    assert_eq!(status.body["environment"], "dev");
    // The commit status is still sent next to the deployment.
    assert!(
        calls
            .iter()
            .any(|c| c.path == format!("/repos/acme/api/statuses/{SHA}"))
    );

    // Argo CD: still progressing (no new status), then healthy.
    world.argocd("api-dev", &release_commit, "Progressing");
    world.argocd("api-dev", &release_commit, "Healthy");
    let calls = world.wait_calls("dev's success status", |calls| {
        states(calls, 1) == ["in_progress", "success"]
    });
    let success = calls
        .iter()
        .filter(|c| c.path == "/repos/acme/api/deployments/1/statuses")
        .nth(1)
        .unwrap();
    assert_eq!(
        success.body["environment_url"],
        "https://dev.api.example.com"
    );

    // A promotion to prod is a second deployment; a degraded rollout fails it.
    world.ok(&["promote", "--service", "api", "--env", "prod"]);
    let prod_commit = world.repo.tip("main").unwrap().unwrap().to_string();
    assert_ne!(prod_commit, release_commit);
    let calls = world.wait_calls("prod's in_progress status", |calls| {
        states(calls, 2) == ["in_progress"]
    });
    let prod = deployments(&calls)[1].body.clone();
    assert_eq!(prod["environment"], "prod");
    assert_eq!(prod["ref"], SHA);
    assert_eq!(prod["production_environment"], true);
    // tug restarts (an upgrade, a crash) before Argo CD reports: the deployment is found on
    // GitHub by the artifact's commit, the environment and the manifest commit.
    world.server.restart().unwrap();
    world.argocd("api-prod", &prod_commit, "Degraded");
    let calls = world.wait_calls("prod's failure status", |calls| {
        states(calls, 2) == ["in_progress", "failure"]
    });
    assert!(
        calls.iter().any(|c| c.method == "GET"),
        "the restarted server looked the deployment up"
    );
    // dev's deployment was left alone, and nothing logged the token.
    assert_eq!(states(&calls, 1), ["in_progress", "success"]);
    assert!(!world.server.logs().contains(GH_TOKEN));
}
