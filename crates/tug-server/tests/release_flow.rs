//! Releases end to end against a real server (in process), a real SQLite file and a real bare
//! repository: auto-release, promote, branch restrictions, rollback pins, unpin, status, history,
//! same-tag redeploys, copy-mode services, bad input, and a rebuild of the history from git alone
//! after the database is deleted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{DEPLOYMENT, KUSTOMIZATION, THREE_ENVIRONMENTS};
use serde_json::{Value, json};
use tug_release::{Intent, ReleaseRecord};
use tug_server::Config;
use tug_testkit::BareRepo;

const TOKEN: &str = "release-test-token";

fn config(data_dir: &Path, url: &str) -> Config {
    let rest = THREE_ENVIRONMENTS.replace(
        "policies:",
        "  - name: web\n    edit: { kind: copy }\npolicies:",
    );
    common::config(data_dir, url, TOKEN, &rest)
}

fn artifact(service: &str, id: &str, branch: &str, tag: &str) -> Value {
    json!({
        "id": id,
        "service": service,
        "application": {
            "branch": branch, "sha": format!("{id}-sha"),
            "authorName": "Dev Eloper", "authorEmail": "dev@example.com",
            "committerName": "Dev Eloper", "committerEmail": "dev@example.com",
            "message": format!("build {id}"),
        },
        "ci": { "jobUrl": format!("https://ci.example.com/{id}") },
        "stages": [
            { "id": "push", "name": "Push", "data": { "image": "registry.example.com/api", "tag": tag } }
        ]
    })
}

struct Server {
    running: tug_server::Running,
    base: String,
    client: reqwest::Client,
}

impl Server {
    async fn start(config: Config) -> Self {
        let running = tug_server::start(config).await.unwrap();
        let base = format!("http://{}", running.http_addr);
        Server {
            running,
            base,
            client: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        // NDJSON answers keep their last line: the outcome.
        let last = text.lines().last().unwrap_or("null");
        let value =
            serde_json::from_str(last).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
        (status, value)
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Polls the status of `service` until `env` runs `artifact` (a deadline, not a sleep).
    async fn wait_running(&self, service: &str, env: &str, artifact: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (code, status) = self.get(&format!("/api/v1/status/{service}")).await;
            assert_eq!(code, 200, "{status}");
            let found = environment(&status, env);
            if found["artifactId"] == artifact {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{env} never ran {artifact}: {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn environment(status: &Value, env: &str) -> Value {
    status["environments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["environment"] == env)
        .cloned()
        .unwrap()
}

fn auto_status(pushed: &Value, env: &str) -> String {
    pushed["autoReleases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["environment"] == env)
        .map(|a| a["status"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| "none".to_owned())
}

fn file(repo: &BareRepo, path: &str) -> String {
    String::from_utf8(repo.read_file("main", path).unwrap().unwrap()).unwrap()
}

fn by() -> Value {
    json!({"name": "Alice Example", "email": "alice@example.com"})
}

/// The history as git alone knows it: who, what, when, why and which commit.
fn git_facts(describe: &Value) -> Vec<Value> {
    describe["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            json!([
                r["environment"],
                r["artifactId"],
                r["intent"],
                r["releasedBy"],
                r["releasedAt"],
                r["commit"],
                r["request"]
            ])
        })
        .collect()
}

fn delete_database(data_dir: &Path) {
    for name in ["tug.db", "tug.db-wal", "tug.db-shm"] {
        let path: PathBuf = data_dir.join(name);
        if path.exists() {
            std::fs::remove_file(&path).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn releases_from_artifact_to_rebuilt_history() {
    let repo = BareRepo::with_files(&[
        ("apps/api/dev/kustomization.yaml", KUSTOMIZATION.as_bytes()),
        ("apps/api/dev/deployment.yaml", DEPLOYMENT.as_bytes()),
        (
            "apps/api/staging/kustomization.yaml",
            KUSTOMIZATION.as_bytes(),
        ),
        ("apps/api/staging/deployment.yaml", DEPLOYMENT.as_bytes()),
        ("apps/api/prod/kustomization.yaml", KUSTOMIZATION.as_bytes()),
        ("apps/api/prod/deployment.yaml", DEPLOYMENT.as_bytes()),
    ])
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(config(data.path(), &repo.file_url())).await;

    // Auto-release of main to dev, written to policies/api.json through the writer.
    let (code, applied) = server
        .post(
            "/api/v1/policies/api/auto-release",
            json!({"branch": "main", "env": "dev", "by": by()}),
        )
        .await;
    assert_eq!(code, 200, "{applied}");
    assert_eq!(applied["id"], "auto-release-main-dev");
    assert!(file(&repo, "policies/api.json").contains("auto-release-main-dev"));

    // A new artifact of main reaches dev by itself.
    let (code, pushed) = server
        .post(
            "/api/v1/artifacts",
            artifact("api", "main-1", "main", "1.0.0"),
        )
        .await;
    assert_eq!(code, 201, "{pushed}");
    assert_eq!(auto_status(&pushed, "dev"), "queued", "{pushed}");
    let dev = server.wait_running("api", "dev", "main-1").await;
    assert_eq!(dev["tag"], "1.0.0");
    assert_eq!(dev["intent"]["type"], "auto-release");
    assert_eq!(dev["ciJobUrl"], "https://ci.example.com/main-1");
    assert_eq!(dev["author"]["email"], "dev@example.com");
    assert!(file(&repo, "apps/api/dev/kustomization.yaml").contains("newTag: 1.0.0"));
    let tip = repo.log("main").unwrap().remove(0);
    let record = ReleaseRecord::from_commit_message(&tip.message).unwrap();
    assert_eq!(record.intent, Intent::AutoRelease);
    assert_eq!(record.artifact_id, "main-1");
    assert!(record.request.is_some(), "{}", tip.message);
    assert!(
        tip.subject.starts_with("[dev/api] auto-release main-1 by "),
        "{}",
        tip.subject
    );

    // Promote dev to staging, following the NDJSON stream to the end.
    let (code, promoted) = server
        .post(
            "/api/v1/releases",
            json!({"service": "api", "environments": ["staging"], "intent": "promote", "by": by()}),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(promoted["result"]["status"], "succeeded", "{promoted}");
    let staging = server.wait_running("api", "staging", "main-1").await;
    assert_eq!(
        staging["intent"],
        json!({"type": "promote", "fromEnv": "dev"})
    );
    assert_eq!(staging["releasedBy"]["email"], "alice@example.com");

    // A feature branch may not reach prod: the server's restriction names itself.
    let (code, _) = server
        .post(
            "/api/v1/artifacts",
            artifact("api", "feature-1", "feature/login", "f.1"),
        )
        .await;
    assert_eq!(code, 201);
    let (code, refused) = server
        .post(
            "/api/v1/releases",
            json!({"service": "api", "environments": ["prod"], "artifactId": "feature-1", "by": by()}),
        )
        .await;
    assert_eq!(code, 403, "{refused}");
    assert_eq!(refused["code"], "policy_violation");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("global-branch-restriction-prod"),
        "{refused}"
    );
    // The newest artifact of a branch whose name holds a '/' is found by that name.
    let (code, listed) = server
        .get("/api/v1/artifacts?service=api&branch=feature/login&count=1")
        .await;
    assert_eq!(code, 200);
    assert_eq!(listed["artifacts"][0]["id"], "feature-1");

    // A second build, promoted, then rolled back: the rollback pins staging.
    server
        .post(
            "/api/v1/artifacts",
            artifact("api", "main-2", "main", "1.0.1"),
        )
        .await;
    server.wait_running("api", "dev", "main-2").await;
    let (_, promoted) = server
        .post(
            "/api/v1/releases",
            json!({"service": "api", "environments": ["staging"], "intent": "promote", "by": by()}),
        )
        .await;
    assert_eq!(promoted["result"]["status"], "succeeded", "{promoted}");
    server.wait_running("api", "staging", "main-2").await;
    let (_, rolled) = server
        .post(
            "/api/v1/releases",
            json!({"service": "api", "environments": ["staging"], "intent": "rollback", "by": by()}),
        )
        .await;
    assert_eq!(rolled["result"]["status"], "succeeded", "{rolled}");
    let staging = server.wait_running("api", "staging", "main-1").await;
    assert_eq!(
        staging["intent"],
        json!({"type": "rollback", "ofArtifact": "main-2"})
    );
    assert_eq!(staging["pinned"], true, "{staging}");

    // With an auto-release to staging too, a new artifact reaches dev but not pinned staging.
    let (code, applied) = server
        .post(
            "/api/v1/policies/api/auto-release",
            json!({"branch": "main", "env": "staging"}),
        )
        .await;
    assert_eq!(code, 200, "{applied}");
    let (_, pushed) = server
        .post(
            "/api/v1/artifacts",
            artifact("api", "main-3", "main", "1.0.2"),
        )
        .await;
    assert_eq!(auto_status(&pushed, "dev"), "queued", "{pushed}");
    assert_eq!(auto_status(&pushed, "staging"), "blocked", "{pushed}");
    server.wait_running("api", "dev", "main-3").await;
    assert_eq!(
        server.wait_running("api", "staging", "main-1").await["pinned"],
        true
    );

    // Unpinned, the artifact the pin held back is released, and the next one follows.
    let (code, unpinned) = server
        .post(
            "/api/v1/unpin",
            json!({"service": "api", "env": "staging", "by": by()}),
        )
        .await;
    assert_eq!(code, 200, "{unpinned}");
    assert_eq!(unpinned["autoRelease"]["status"], "queued", "{unpinned}");
    assert_eq!(
        unpinned["autoRelease"]["message"],
        "auto-release of 'main-3' to 'staging' queued"
    );
    let staging = server.wait_running("api", "staging", "main-3").await;
    assert_eq!(staging["pinned"], false, "{staging}");
    assert_eq!(staging["intent"]["type"], "auto-release", "{staging}");
    let (_, pushed) = server
        .post(
            "/api/v1/artifacts",
            artifact("api", "main-4", "main", "1.0.3"),
        )
        .await;
    assert_eq!(auto_status(&pushed, "staging"), "queued", "{pushed}");
    server.wait_running("api", "staging", "main-4").await;
    server.wait_running("api", "dev", "main-4").await;

    // Same tag, another build: the release also bumps the pod-template annotation.
    assert!(!file(&repo, "apps/api/dev/kustomization.yaml").contains("tug.dev/redeployed-at"));
    let (_, pushed) = server
        .post(
            "/api/v1/artifacts",
            artifact("api", "main-5", "main", "1.0.3"),
        )
        .await;
    assert_eq!(auto_status(&pushed, "dev"), "queued", "{pushed}");
    server.wait_running("api", "dev", "main-5").await;
    // main also auto-releases to staging: let that land too before counting commits.
    if auto_status(&pushed, "staging") == "queued" {
        server.wait_running("api", "staging", "main-5").await;
    }
    assert!(
        file(&repo, "apps/api/dev/kustomization.yaml").contains("tug.dev/redeployed-at"),
        "{}",
        file(&repo, "apps/api/dev/kustomization.yaml")
    );

    // Releasing what already runs changes nothing.
    let commits = repo.commit_count("main").unwrap();
    let (_, again) = server
        .post(
            "/api/v1/releases",
            json!({"service": "api", "environments": ["dev"], "artifactId": "main-5", "by": by()}),
        )
        .await;
    assert_eq!(again["result"]["status"], "succeeded", "{again}");
    assert_eq!(again["result"]["updates"][0]["upToDate"], true, "{again}");
    assert_eq!(repo.commit_count("main").unwrap(), commits);

    // Describe: the history of staging, newest first.
    let (code, described) = server
        .get("/api/v1/releases?service=api&env=staging&count=10")
        .await;
    assert_eq!(code, 200, "{described}");
    let history: Vec<(String, String)> = described["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["intent"]["type"].as_str().unwrap().to_owned(),
                r["artifactId"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("auto-release", "main-5"),
        ("auto-release", "main-4"),
        ("auto-release", "main-3"),
        ("rollback", "main-1"),
        ("promote", "main-2"),
        ("promote", "main-1"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(history, expected);
    let status = server.get("/api/v1/status/api").await.1;
    assert_eq!(environment(&status, "prod")["released"], false);
    assert_eq!(
        environment(&status, "staging")["previousArtifactId"],
        "main-4"
    );

    // Bad input is refused, naming the thing at fault.
    let cases = [
        (
            json!({"service": "nope", "environments": ["dev"], "artifactId": "main-1"}),
            404,
            "'nope'",
        ),
        (
            json!({"service": "api", "environments": ["qa"], "artifactId": "main-1"}),
            400,
            "'qa'",
        ),
        (
            json!({"service": "api", "environments": ["dev"], "artifactId": "main-404"}),
            404,
            "'main-404'",
        ),
        (
            json!({"service": "api", "environments": ["dev"], "artifactId": "main-1", "typo": 1}),
            400,
            "typo",
        ),
    ];
    for (body, want, needle) in cases {
        let (code, error) = server.post("/api/v1/releases", body.clone()).await;
        assert_eq!(code, want, "{body}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains(needle),
            "{error}"
        );
    }
    let mut bad_artifact = artifact("api", "main-6", "main", "1.0.4");
    bad_artifact["stages"][0]["data"]["tga"] = json!("x");
    let (code, error) = server.post("/api/v1/artifacts", bad_artifact).await;
    assert_eq!(code, 400);
    assert_eq!(error["details"]["field"], "stages[0].data.tga", "{error}");
    let policy_cases = [
        (
            "/api/v1/policies/api/branch-restriction",
            json!({"env": "dev", "branchRegex": "(unclosed"}),
            400,
            "branch-restriction-dev",
        ),
        (
            "/api/v1/policies/api/branch-restriction",
            json!({"env": "staging", "branchRegex": "^release/"}),
            409,
            "auto-release-main-staging",
        ),
        (
            "/api/v1/policies/api/branch-restriction",
            json!({"env": "prod", "branchRegex": "^dev$"}),
            409,
            "global-branch-restriction-prod",
        ),
        (
            "/api/v1/policies/api/auto-release",
            json!({"branch": "feature/x", "env": "prod"}),
            409,
            "global-branch-restriction-prod",
        ),
    ];
    for (path, body, want, needle) in policy_cases {
        let (code, error) = server.post(path, body.clone()).await;
        assert_eq!(code, want, "{body}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains(needle),
            "{error}"
        );
    }
    let (code, error) = server
        .call(
            reqwest::Method::DELETE,
            "/api/v1/policies/api",
            Some(json!({"ids": ["global-branch-restriction-prod"]})),
        )
        .await;
    assert_eq!(code, 409, "{error}");
    let (code, listed) = server.get("/api/v1/policies/api").await;
    assert_eq!(code, 200);
    assert_eq!(listed["branchRestrictions"][0]["global"], true, "{listed}");
    assert_eq!(
        listed["autoReleases"].as_array().unwrap().len(),
        2,
        "{listed}"
    );
    let (code, deleted) = server
        .call(
            reqwest::Method::DELETE,
            "/api/v1/policies/api",
            Some(json!({"ids": ["auto-release-main-staging"]})),
        )
        .await;
    assert_eq!(code, 200, "{deleted}");
    assert_eq!(deleted["deleted"], json!(["auto-release-main-staging"]));
    assert!(!file(&repo, "policies/api.json").contains("auto-release-main-staging"));

    // History from git alone: stop, delete the database, start again and rebuild.
    let (_, before) = server.get("/api/v1/releases?service=api&count=100").await;
    let status_before = server.get("/api/v1/status/api").await.1;
    server.running.shutdown().await.unwrap();
    delete_database(data.path());
    let server = Server::start(config(data.path(), &repo.file_url())).await;
    let (code, rebuilt) = server.post("/api/v1/reindex", json!({})).await;
    assert_eq!(code, 200, "{rebuilt}");
    let (_, after) = server.get("/api/v1/releases?service=api&count=100").await;
    assert_eq!(git_facts(&after), git_facts(&before));
    assert!(git_facts(&before).len() >= 9, "{before}");
    let status_after = server.get("/api/v1/status/api").await.1;
    for env in ["dev", "staging", "prod"] {
        for key in ["artifactId", "commit", "pinned", "intent", "releasedBy"] {
            assert_eq!(
                environment(&status_after, env)[key],
                environment(&status_before, env)[key],
                "{env} {key}"
            );
        }
    }
    // Artifact details come back when CI registers the artifact again.
    assert_eq!(environment(&status_after, "dev")["artifactKnown"], false);
    server
        .post(
            "/api/v1/artifacts",
            artifact("api", "main-5", "main", "1.0.3"),
        )
        .await;
    assert_eq!(
        server.wait_running("api", "dev", "main-5").await["tag"],
        "1.0.3"
    );
    server.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copy_mode_writes_the_bundle_the_artifact_and_the_flux_kustomization() {
    let repo = BareRepo::with_files(&[("README.md", b"manifests\n".as_slice())]).unwrap();
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(config(data.path(), &repo.file_url())).await;
    let (code, pushed) = server
        .post(
            "/api/v1/artifacts",
            artifact("web", "web-1", "main", "2.0.0"),
        )
        .await;
    assert_eq!(code, 201, "{pushed}");
    let flux = "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: web\nspec:\n  path: ./dev/releases/dev/web\n";
    let (code, uploaded) = server
        .post(
            "/api/v1/artifacts/web-1/bundle",
            json!({"service": "web", "files": {
                "dev/deployment.yaml": "kind: Deployment\n",
                "dev/service.yaml": "kind: Service\n",
                "dev/web-kustomization.yaml": flux,
                "prod/deployment.yaml": "kind: Deployment\n",
            }}),
        )
        .await;
    assert_eq!(code, 200, "{uploaded}");
    let (_, released) = server
        .post(
            "/api/v1/releases",
            json!({"service": "web", "environments": ["dev"], "artifactId": "web-1", "by": by()}),
        )
        .await;
    assert_eq!(released["result"]["status"], "succeeded", "{released}");
    assert_eq!(
        file(&repo, "dev/releases/dev/web/deployment.yaml"),
        "kind: Deployment\n"
    );
    assert_eq!(
        file(&repo, "dev/releases/dev/web/service.yaml"),
        "kind: Service\n"
    );
    assert!(file(&repo, "dev/releases/dev/web/artifact.json").contains("\"web-1\""));
    assert_eq!(file(&repo, "clusters/dev/dev/web.yaml"), flux);
    assert!(
        repo.read_file("main", "dev/releases/dev/web/web-kustomization.yaml")
            .unwrap()
            .is_none()
    );

    // The next artifact's bundle replaces the set: a manifest it no longer has is removed.
    server
        .post(
            "/api/v1/artifacts",
            artifact("web", "web-2", "main", "2.0.1"),
        )
        .await;
    server
        .post(
            "/api/v1/artifacts/web-2/bundle",
            json!({"service": "web", "files": {"dev/deployment.yaml": "kind: Deployment # 2\n"}}),
        )
        .await;
    let (_, released) = server
        .post(
            "/api/v1/releases",
            json!({"service": "web", "environments": ["dev"], "branch": "main", "by": by()}),
        )
        .await;
    assert_eq!(released["result"]["status"], "succeeded", "{released}");
    assert_eq!(
        file(&repo, "dev/releases/dev/web/deployment.yaml"),
        "kind: Deployment # 2\n"
    );
    assert!(
        repo.read_file("main", "dev/releases/dev/web/service.yaml")
            .unwrap()
            .is_none()
    );
    server.wait_running("web", "dev", "web-2").await;

    // An environment without manifests in the bundle is refused before anything is stored.
    let (code, error) = server
        .post(
            "/api/v1/releases",
            json!({"service": "web", "environments": ["staging"], "artifactId": "web-2"}),
        )
        .await;
    assert_eq!(code, 409, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("'staging'"),
        "{error}"
    );
    let (code, error) = server
        .post(
            "/api/v1/artifacts/web-2/bundle",
            json!({"service": "web", "files": {"qa/x.yaml": ""}}),
        )
        .await;
    assert_eq!(code, 400, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("'qa'"),
        "{error}"
    );
    server.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_policy_changes_all_land() {
    let repo = BareRepo::with_files(&[("README.md", b"manifests\n".as_slice())]).unwrap();
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(config(data.path(), &repo.file_url())).await;
    let changes = [
        (
            "/api/v1/policies/api/branch-restriction",
            json!({"env": "dev", "branchRegex": "^(main|feature/.*)$"}),
            "branch-restriction-dev",
        ),
        (
            "/api/v1/policies/api/branch-restriction",
            json!({"env": "staging", "branchRegex": "^main$"}),
            "branch-restriction-staging",
        ),
        (
            "/api/v1/policies/api/auto-release",
            json!({"branch": "main", "env": "dev"}),
            "auto-release-main-dev",
        ),
        (
            "/api/v1/policies/api/auto-release",
            json!({"branch": "main", "env": "staging"}),
            "auto-release-main-staging",
        ),
    ];
    // All at once: each reads the same (missing) file, so all but one find it changed when
    // they commit and must make their change again on the new content.
    let answers = futures::future::join_all(
        changes
            .iter()
            .map(|(path, body, _)| server.post(path, body.clone())),
    )
    .await;
    for (code, answer) in &answers {
        assert_eq!(*code, 200, "{answer}");
    }
    let policies = file(&repo, "policies/api.json");
    for (_, _, id) in &changes {
        assert!(policies.contains(id), "{id} was lost:\n{policies}");
    }
    let history = repo.log("main").unwrap();
    let policy_commits = history
        .iter()
        .filter(|c| c.subject.starts_with("[policies/api]"))
        .count();
    assert_eq!(policy_commits, changes.len(), "{history:?}");
    server.running.shutdown().await.unwrap();
}

/// The files of one directory: name → bytes.
type Files = std::collections::BTreeMap<String, Vec<u8>>;

fn files_in(dir: &Path) -> Files {
    let mut files = Files::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        files.insert(name, std::fs::read(&path).unwrap());
    }
    files
}

/// The files under `dir` on `main`, by their path relative to `dir`.
fn files_at(repo: &BareRepo, dir: &str) -> Files {
    let listing = repo
        .git(&["ls-tree", "-r", "--name-only", "main", &format!("{dir}/")])
        .unwrap();
    String::from_utf8(listing)
        .unwrap()
        .lines()
        .map(|path| {
            let name = path.strip_prefix(&format!("{dir}/")).unwrap().to_owned();
            (name, repo.read_file("main", path).unwrap().unwrap())
        })
        .collect()
}

/// One case of `tests/release_kinds/<name>/`: the service entry, its target directory (with
/// `{env}`), the files there before any release, after a release of 2.0.0 (`first/`) and after
/// one of 2.1.0 (`second/`). A copy-mode case uploads `first/` and `second/` as the bundles.
struct KindCase {
    name: String,
    service: String,
    service_yaml: String,
    dir: String,
    before: Files,
    first: Files,
    second: Files,
    copy: bool,
}

fn kind_cases() -> Vec<KindCase> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/release_kinds");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let service_yaml = std::fs::read_to_string(dir.join("service.yaml")).unwrap();
            let service = service_yaml
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("- name: "))
                .unwrap()
                .to_owned();
            KindCase {
                name: dir.file_name().unwrap().to_string_lossy().into_owned(),
                service,
                copy: service_yaml.contains("kind: copy"),
                dir: std::fs::read_to_string(dir.join("dir"))
                    .unwrap()
                    .trim()
                    .to_owned(),
                service_yaml,
                before: files_in(&dir.join("before")),
                first: files_in(&dir.join("first")),
                second: files_in(&dir.join("second")),
            }
        })
        .collect()
}

fn image_artifact(service: &str, id: &str, tag: &str) -> Value {
    let mut artifact = artifact(service, id, "main", tag);
    artifact["stages"][0]["data"]["image"] = json!(format!("registry.example.com/team/{service}"));
    artifact
}

impl KindCase {
    fn dir(&self, env: &str) -> String {
        self.dir.replace("{env}", env)
    }

    /// The target directory of `env` holds `want`, byte for byte (a copy release adds its
    /// `artifact.json`, naming `artifact`).
    fn check(&self, repo: &BareRepo, env: &str, step: &str, want: &Files, artifact: Option<&str>) {
        let mut found = files_at(repo, &self.dir(env));
        if self.copy
            && let Some(artifact) = artifact
        {
            let json = found.remove("artifact.json").unwrap_or_else(|| {
                panic!(
                    "{}: {step}: no artifact.json in {}",
                    self.name,
                    self.dir(env)
                )
            });
            let json: Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(json["id"], artifact, "{}: {step}", self.name);
        }
        let show = |files: &Files| -> String {
            files
                .iter()
                .map(|(name, bytes)| format!("--- {name}\n{}", String::from_utf8_lossy(bytes)))
                .collect()
        };
        assert!(
            found == *want,
            "{}: {step}: {} differs\nexpected:\n{}\nfound:\n{}",
            self.name,
            self.dir(env),
            show(want),
            show(&found)
        );
    }
}

/// Every edit kind a service may be released with — kustomize with and without a named
/// `image`, helm, yq, manifest with and without `container`, copy — released to dev, promoted
/// to staging, released and promoted again and rolled back, the files checked byte for byte
/// after each step.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_edit_kind_releases_promotes_and_rolls_back_byte_for_byte() {
    let cases = kind_cases();
    assert_eq!(cases.len(), 7, "one case per edit kind");
    let mut seeded: Vec<(String, Vec<u8>)> = Vec::new();
    for case in &cases {
        for env in ["dev", "staging"] {
            for (name, bytes) in &case.before {
                seeded.push((format!("{}/{name}", case.dir(env)), bytes.clone()));
            }
        }
    }
    let seeded: Vec<(&str, &[u8])> = seeded
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    let repo = BareRepo::with_files(&seeded).unwrap();
    let data = tempfile::tempdir().unwrap();
    let services: String = cases
        .iter()
        .flat_map(|c| c.service_yaml.lines().map(|l| format!("  {l}\n")))
        .collect();
    let rest = THREE_ENVIRONMENTS.replace("policies:", &format!("{services}policies:"));
    let server = Server::start(common::config(data.path(), &repo.file_url(), TOKEN, &rest)).await;

    let release = |service: &str, env: &str, body: Value| {
        let mut body = body;
        body["service"] = json!(service);
        body["environments"] = json!([env]);
        body["by"] = by();
        body
    };
    for case in &cases {
        let service = case.service.as_str();
        for (id, tag, files) in [
            (format!("{service}-1"), "2.0.0", &case.first),
            (format!("{service}-2"), "2.1.0", &case.second),
        ] {
            let (code, pushed) = server
                .post("/api/v1/artifacts", image_artifact(service, &id, tag))
                .await;
            assert_eq!(code, 201, "{}: {pushed}", case.name);
            if case.copy {
                let mut bundle = serde_json::Map::new();
                for env in ["dev", "staging"] {
                    for (name, bytes) in files {
                        bundle.insert(
                            format!("{env}/{name}"),
                            json!(String::from_utf8(bytes.clone()).unwrap()),
                        );
                    }
                }
                let (code, uploaded) = server
                    .post(
                        &format!("/api/v1/artifacts/{id}/bundle"),
                        json!({"service": service, "files": bundle}),
                    )
                    .await;
                assert_eq!(code, 200, "{}: {uploaded}", case.name);
            }
        }
        let step = |what: &'static str, env: &'static str, body: Value| {
            let server = &server;
            let body = release(service, env, body);
            async move {
                let (code, answer) = server.post("/api/v1/releases", body).await;
                assert_eq!(code, 200, "{}: {what}: {answer}", case.name);
                assert_eq!(
                    answer["result"]["status"], "succeeded",
                    "{}: {what}: {answer}",
                    case.name
                );
            }
        };
        let first = format!("{service}-1");
        let second = format!("{service}-2");
        case.check(&repo, "dev", "before", &case.before, None);

        step("release", "dev", json!({"artifactId": first})).await;
        case.check(&repo, "dev", "release 2.0.0", &case.first, Some(&first));
        case.check(&repo, "staging", "release 2.0.0 to dev", &case.before, None);

        step("promote", "staging", json!({"intent": "promote"})).await;
        case.check(&repo, "staging", "promote 2.0.0", &case.first, Some(&first));

        step("release", "dev", json!({"artifactId": second})).await;
        case.check(&repo, "dev", "release 2.1.0", &case.second, Some(&second));
        step("promote", "staging", json!({"intent": "promote"})).await;
        case.check(
            &repo,
            "staging",
            "promote 2.1.0",
            &case.second,
            Some(&second),
        );

        step("rollback", "staging", json!({"intent": "rollback"})).await;
        case.check(&repo, "staging", "rollback", &case.first, Some(&first));
        case.check(
            &repo,
            "dev",
            "rollback of staging",
            &case.second,
            Some(&second),
        );
        let status = server.get(&format!("/api/v1/status/{service}")).await.1;
        assert_eq!(
            environment(&status, "staging")["artifactId"],
            first.as_str()
        );
        assert_eq!(environment(&status, "dev")["artifactId"], second.as_str());
    }

    // Releases are strict: an artifact whose image the kustomization does not name is refused,
    // naming the entries there, and nothing is pushed.
    let kustomize = cases.iter().find(|c| c.name == "kustomize").unwrap();
    let mut typo = image_artifact("kz", "kz-typo", "3.0.0");
    typo["stages"][0]["data"]["image"] = json!("registry.example.com/team/kzz");
    let (code, pushed) = server.post("/api/v1/artifacts", typo).await;
    assert_eq!(code, 201, "{pushed}");
    let commits = repo.commit_count("main").unwrap();
    let (code, refused) = server
        .post(
            "/api/v1/releases",
            release("kz", "dev", json!({"artifactId": "kz-typo"})),
        )
        .await;
    assert_eq!(code, 200, "{refused}");
    assert_eq!(refused["result"]["status"], "failed", "{refused}");
    let error = refused["result"]["updates"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("refused (strict): the edit would only add images entry registry.example.com/team/kzz (the kustomization has: registry.example.com/team/kz, redis)"),
        "{error}"
    );
    assert_eq!(repo.commit_count("main").unwrap(), commits);
    kustomize.check(&repo, "dev", "refused release", &kustomize.second, None);
    server.running.shutdown().await.unwrap();
}
