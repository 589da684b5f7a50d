//! Release notifications and cluster feedback against a real server (in process), a real SQLite
//! file, a real bare repository and a local HTTP server that records what it receives: the Slack
//! message of the environment's channel, the GitHub commit status, the Grafana annotation, a
//! failing sink that does not fail the release, and Argo CD / Flux reports that set the rollout
//! state shown by the status.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::{Value, json};
use tug_server::Config;
use tug_testkit::BareRepo;

const TOKEN: &str = "notify-test-token";
const GH_TOKEN: &str = "ghp_status_token";
const GRAFANA_TOKEN: &str = "glsa_annotation_token";
const SHA: &str = "9fceb02d0ae598e95dc970b74767f19372d61af8";

const KUSTOMIZATION: &str = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nimages:\n  - name: registry.example.com/api\n    newTag: 0.0.1\n";

#[derive(Debug, Clone)]
struct Received {
    path: String,
    authorization: Option<String>,
    body: Value,
}

type Log = Arc<Mutex<Vec<Received>>>;

async fn record(State(log): State<Log>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    log.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        authorization: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned()),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    if uri.path().starts_with("/broken") {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::CREATED
    }
}

/// A receiver on 127.0.0.1 that records every request and answers 201, or 500 under `/broken`.
async fn receiver() -> (String, Log) {
    let log: Log = Arc::default();
    let app = Router::new().fallback(record).with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, log)
}

/// Environments, services and the release notification sinks, all at `SINKS`.
const RELEASE_AND_SINKS: &str = r#"
notify: { max_attempts: 3, base_delay_ms: 10, timeout_ms: 5000 }
environments:
  - { name: dev, repository: platform, branch: main }
  - { name: prod, after: dev }
services:
  - name: api
    path: "apps/{service}/{env}"
    edit: { kind: kustomize }
release_notify:
  slack:
    dev: { webhook_url: "SINKS/slack/dev" }
    prod: { webhook_url: "SINKS/broken/slack/prod" }
  github: { api_url: "SINKS/github", token: "${GH_TOKEN}" }
  grafana: { url: "SINKS/grafana", token: "${GRAFANA_TOKEN}" }
"#;

fn config(data_dir: &Path, url: &str, sinks: &str) -> Config {
    let env = |name: &str| match name {
        "GH_TOKEN" => Some(GH_TOKEN.to_owned()),
        "GRAFANA_TOKEN" => Some(GRAFANA_TOKEN.to_owned()),
        _ => None,
    };
    common::config_with_env(
        data_dir,
        url,
        TOKEN,
        &RELEASE_AND_SINKS.replace("SINKS", sinks),
        &env,
    )
}

struct Server {
    _running: tug_server::Running,
    base: String,
    client: reqwest::Client,
}

impl Server {
    async fn call(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        let request = match &body {
            Some(body) => self.client.post(format!("{}{path}", self.base)).json(body),
            None => self.client.get(format!("{}{path}", self.base)),
        };
        let response = request.bearer_auth(TOKEN).send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let last = text.lines().last().unwrap_or("null");
        (status, serde_json::from_str(last).unwrap())
    }

    async fn environment(&self, env: &str) -> Value {
        let (code, status) = self.call("/api/v1/status/api", None).await;
        assert_eq!(code, 200, "{status}");
        status["environments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["environment"] == env)
            .cloned()
            .unwrap()
    }

    async fn wait_environment(&self, env: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = self.environment(env).await;
            if done(&found) {
                return found;
            }
            assert!(Instant::now() < deadline, "{env} never got there: {found}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Waits until `count` requests whose path starts with `prefix` were received.
async fn wait_received(log: &Log, prefix: &str, count: usize) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found: Vec<Received> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect();
        if found.len() >= count {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{count} requests to {prefix} never arrived: {:?}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn artifact() -> Value {
    json!({
        "id": "main-9fceb02d0a",
        "service": "api",
        "application": {
            "branch": "main", "sha": SHA,
            "authorName": "Dev Eloper", "authorEmail": "dev@example.com",
            "message": "Add checkout", "name": "api", "url": "https://github.com/acme/api",
        },
        "ci": { "jobUrl": "https://ci.example.com/jobs/42" },
        "stages": [
            { "id": "push", "name": "Push", "data": { "image": "registry.example.com/api", "tag": "1.4.0" } }
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn releases_notify_slack_github_and_grafana_and_the_cluster_reports_back() {
    let repo = BareRepo::with_files(&[
        ("apps/api/dev/kustomization.yaml", KUSTOMIZATION.as_bytes()),
        ("apps/api/prod/kustomization.yaml", KUSTOMIZATION.as_bytes()),
    ])
    .unwrap();
    let (sinks, log) = receiver().await;
    let data = tempfile::tempdir().unwrap();
    let running = tug_server::start(config(data.path(), &repo.file_url(), &sinks))
        .await
        .unwrap();
    let server = Server {
        base: format!("http://{}", running.http_addr),
        _running: running,
        client: reqwest::Client::new(),
    };

    let (code, _) = server
        .call(
            "/api/v1/policies/api/auto-release",
            Some(json!({"branch": "main", "env": "dev"})),
        )
        .await;
    assert_eq!(code, 200);
    let (code, pushed) = server.call("/api/v1/artifacts", Some(artifact())).await;
    assert_eq!(code, 201, "{pushed}");
    let dev = server
        .wait_environment("dev", |e| e["artifactId"] == "main-9fceb02d0a")
        .await;
    let dev_commit = dev["commit"].as_str().unwrap().to_owned();

    // Slack: the dev channel, Block Kit, with the release's facts.
    let slack = wait_received(&log, "/slack/dev", 1).await;
    let message = &slack[0].body;
    assert_eq!(message["text"], ":rocket: api released to dev");
    assert_eq!(message["blocks"][0]["type"], "header");
    let fields = message["blocks"][1]["fields"].to_string();
    for fact in [
        "main-9fceb02d0a",
        "auto-release",
        "Dev Eloper",
        "registry.example.com/api:1.4.0",
    ] {
        assert!(fields.contains(fact), "{fact} missing from {fields}");
    }
    let links = message["blocks"][2]["elements"][0]["text"]
        .as_str()
        .unwrap();
    assert!(
        links.contains(&format!("https://github.com/acme/api/commit/{SHA}")),
        "{links}"
    );
    assert!(links.contains("https://ci.example.com/jobs/42"), "{links}");
    assert_eq!(slack[0].authorization, None);

    // GitHub: a commit status on the source commit, authenticated with the configured token.
    let status = wait_received(&log, "/github/", 1).await;
    assert_eq!(
        status[0].path,
        format!("/github/repos/acme/api/statuses/{SHA}")
    );
    assert_eq!(
        status[0].authorization.as_deref(),
        Some(&*format!("Bearer {GH_TOKEN}"))
    );
    assert_eq!(status[0].body["state"], "success");
    assert_eq!(status[0].body["context"], "tug/dev");
    assert_eq!(
        status[0].body["target_url"],
        "https://ci.example.com/jobs/42"
    );
    assert!(
        status[0].body["description"]
            .as_str()
            .unwrap()
            .contains("main-9fceb02d0a")
    );

    // Grafana: an annotation tagged tug, service and environment.
    let annotation = wait_received(&log, "/grafana/api/annotations", 1).await;
    assert_eq!(annotation[0].body["tags"], json!(["tug", "api", "dev"]));
    assert!(annotation[0].body["time"].as_i64().unwrap() > 0);
    assert!(
        annotation[0].body["text"]
            .as_str()
            .unwrap()
            .contains("main-9fceb02d0a")
    );
    assert_eq!(
        annotation[0].authorization.as_deref(),
        Some(&*format!("Bearer {GRAFANA_TOKEN}"))
    );

    // Prod's Slack sink answers 500: it is retried, and the release succeeds all the same.
    let (code, promoted) = server
        .call(
            "/api/v1/releases",
            Some(json!({"service": "api", "environments": ["prod"], "intent": "promote"})),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(promoted["result"]["status"], "succeeded", "{promoted}");
    let broken = wait_received(&log, "/broken/slack/prod", 3).await;
    assert_eq!(broken[0].body["text"], ":rocket: api released to prod");
    let statuses = wait_received(&log, "/github/", 2).await;
    assert!(
        statuses.iter().any(|s| s.body["context"] == "tug/prod"),
        "{statuses:?}"
    );
    let prod = server
        .wait_environment("prod", |e| e["artifactId"] == "main-9fceb02d0a")
        .await;
    let prod_commit = prod["commit"].as_str().unwrap().to_owned();

    // Argo CD reports dev's manifest commit: progressing, then healthy.
    for (health, expected) in [("Progressing", "progressing"), ("Healthy", "healthy")] {
        let (code, recorded) = server
            .call(
                "/api/v1/webhooks/argocd",
                Some(json!({"app": "api-dev", "revision": dev_commit, "syncStatus": "Synced", "healthStatus": health})),
            )
            .await;
        assert_eq!(code, 200, "{recorded}");
        assert_eq!(recorded["environment"], "dev");
        let rollout = server.environment("dev").await["rollout"].clone();
        assert_eq!(rollout["state"], expected, "{rollout}");
        assert_eq!(rollout["revision"], dev_commit);
    }

    // Flux reports prod's commit as `main@sha1:<sha>` with an error: degraded.
    let (code, recorded) = server
        .call(
            "/api/v1/webhooks/flux",
            Some(json!({
                "involvedObject": {"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "name": "api", "namespace": "prod"},
                "severity": "error", "reason": "HealthCheckFailed",
                "message": "Deployment/prod/api not ready",
                "metadata": {"revision": format!("main@sha1:{prod_commit}")},
                "reportingController": "kustomize-controller",
                "timestamp": "2024-05-01T10:00:00Z",
            })),
        )
        .await;
    assert_eq!(code, 200, "{recorded}");
    let rollout = server.environment("prod").await["rollout"].clone();
    assert_eq!(rollout["state"], "degraded", "{rollout}");
    assert!(
        rollout["message"]
            .as_str()
            .unwrap()
            .contains("HealthCheckFailed")
    );
    // Dev's state is its own.
    assert_eq!(
        server.environment("dev").await["rollout"]["state"],
        "healthy"
    );

    // A later revision (here a human commit after the releases) is matched by the object's
    // name to the service and environment, and by ancestry to the release it runs.
    let later = repo
        .human_commit(
            "main",
            "README.md",
            |_| b"notes\n".to_vec(),
            "docs: a human commit after the releases",
        )
        .unwrap();
    let (code, recorded) = server
        .call(
            "/api/v1/webhooks/flux",
            Some(json!({
                "involvedObject": {"kind": "Kustomization", "name": "api-prod", "namespace": "flux-system"},
                "severity": "info", "reason": "ReconciliationSucceeded",
                "message": "Applied revision",
                "metadata": {"revision": format!("main@sha1:{later}")},
            })),
        )
        .await;
    assert_eq!(code, 200, "{recorded}");
    assert_eq!(recorded["environment"], "prod", "{recorded}");
    assert_eq!(recorded["revision"], prod_commit.as_str(), "{recorded}");
    assert_eq!(
        server.environment("prod").await["rollout"]["state"],
        "healthy"
    );
    let (code, recorded) = server
        .call(
            "/api/v1/webhooks/argocd",
            Some(json!({"app": "dev-api", "revision": later, "syncStatus": "Synced", "healthStatus": "Degraded"})),
        )
        .await;
    assert_eq!(code, 200, "{recorded}");
    assert_eq!(recorded["environment"], "dev", "{recorded}");
    assert_eq!(recorded["revision"], dev_commit.as_str(), "{recorded}");
    // A name that stands for no service and environment is not guessed.
    let (code, unmatched) = server
        .call(
            "/api/v1/webhooks/argocd",
            Some(json!({"app": "web-dev", "revision": later, "syncStatus": "Synced", "healthStatus": "Healthy"})),
        )
        .await;
    assert_eq!(code, 202, "{unmatched}");

    // A revision no release made is acknowledged and recorded nowhere.
    let (code, unknown) = server
        .call(
            "/api/v1/webhooks/argocd",
            Some(json!({"app": "x", "revision": "0123456789abcdef0123456789abcdef01234567", "syncStatus": "Synced", "healthStatus": "Healthy"})),
        )
        .await;
    assert_eq!(code, 202, "{unknown}");
    assert_eq!(unknown["recorded"], false);
}
