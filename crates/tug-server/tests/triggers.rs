//! Inbound triggers against a real server (in process), a real SQLite file and a real bare
//! repository: GitHub, GitLab, Docker Hub and Harbor webhooks with good and bad credentials, a
//! replayed GitHub push that commits nothing twice, and dispatch rules with an allowed and a
//! forbidden branch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tug_server::Config;
use tug_testkit::BareRepo;

const TOKEN: &str = "trigger-test-token";
const GH_SECRET: &str = "github-webhook-secret";
const GL_TOKEN: &str = "gitlab-webhook-token";
const REG_TOKEN: &str = "registry-webhook-token";

fn kustomization(image: &str) -> String {
    format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - deployment.yaml\nimages:\n  - name: {image}\n    newTag: 0.0.1\n"
    )
}

/// Environments, services and triggers; the secrets come from `${VAR}`s.
const RELEASE_AND_TRIGGERS: &str = r#"
environments:
  - { name: dev, repository: platform, branch: main }
  - { name: prod, after: dev }
services:
  - name: api
    path: "apps/{service}/{env}"
    edit: { kind: kustomize, image: registry.example.com/team/api }
  - name: worker
    path: "apps/{service}/{env}"
    edit: { kind: kustomize, image: registry.example.com/team/worker }
triggers:
  token: "${TRIGGER_TOKEN}"
  github: { secret: "${GH_SECRET}" }
  gitlab: { token: "${GL_TOKEN}" }
  registry: { token: "${REG_TOKEN}" }
  sources:
    - { repository: acme/api, service: api, image: registry.example.com/team/api, tag: "{branch}-{short_sha}" }
    - { repository: acme/worker, service: worker, image: registry.example.com/team/worker }
  images:
    "acme/worker": worker
    "harbor.example.com/team/api": api
  dispatch:
    rules:
      - event_type: product
        branch: "{{ payload.baseRef }}"
        allowed_branches: [sandbox, qa, master]
        deploy:
          commitSpec: { CommitMessage: "App commit msg: {{ payload.commitmsg }}" }
          deploySpecs:
            - repository: platform
              updates:
                - branch: main
                  paths:
                    - path: "apps/product/{{ payload.baseRef }}"
                      kustomize: { images: [{ name: registry.example.com/product, newTag: "{{ payload.baseRef }}" }] }
"#;

fn config(data_dir: &Path, url: &str) -> Config {
    let env = |name: &str| match name {
        "TRIGGER_TOKEN" => Some(TOKEN.to_owned()),
        "GH_SECRET" => Some(GH_SECRET.to_owned()),
        "GL_TOKEN" => Some(GL_TOKEN.to_owned()),
        "REG_TOKEN" => Some(REG_TOKEN.to_owned()),
        _ => None,
    };
    common::config_with_env(data_dir, url, TOKEN, RELEASE_AND_TRIGGERS, &env)
}

fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

struct Server {
    _running: tug_server::Running,
    base: String,
    client: reqwest::Client,
}

impl Server {
    async fn start(config: Config) -> Self {
        let running = tug_server::start(config).await.unwrap();
        let base = format!("http://{}", running.http_addr);
        Server {
            _running: running,
            base,
            client: reqwest::Client::new(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let last = text.lines().last().unwrap_or("null");
        (status, serde_json::from_str(last).unwrap_or(Value::Null))
    }

    async fn api(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = match &body {
            Some(body) => self.client.post(format!("{}{path}", self.base)).json(body),
            None => self.client.get(format!("{}{path}", self.base)),
        };
        request = request.bearer_auth(TOKEN);
        self.send(request).await
    }

    async fn hook(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json")
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }

    async fn wait_running(&self, service: &str, env: &str, artifact: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (code, status) = self.api(&format!("/api/v1/status/{service}"), None).await;
            assert_eq!(code, 200, "{status}");
            let found = status["environments"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["environment"] == env)
                .cloned()
                .unwrap();
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

    async fn wait_job(&self, job_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (code, job) = self.api(&format!("/api/v1/jobs/{job_id}"), None).await;
            assert_eq!(code, 200, "{job}");
            if job["status"] == "succeeded" || job["status"] == "failed" {
                return job;
            }
            assert!(Instant::now() < deadline, "job {job_id} never ended: {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn auto_release(server: &Server, service: &str, branch: &str) {
    let (code, applied) = server
        .api(
            &format!("/api/v1/policies/{service}/auto-release"),
            Some(json!({"branch": branch, "env": "dev"})),
        )
        .await;
    assert_eq!(code, 200, "{applied}");
}

fn repo() -> BareRepo {
    let mut files: Vec<(String, String)> = Vec::new();
    for (service, image) in [
        ("api", "registry.example.com/team/api"),
        ("worker", "registry.example.com/team/worker"),
    ] {
        for env in ["dev", "prod"] {
            files.push((
                format!("apps/{service}/{env}/kustomization.yaml"),
                kustomization(image),
            ));
        }
    }
    for env in ["sandbox", "qa", "master", "feature"] {
        files.push((
            format!("apps/product/{env}/kustomization.yaml"),
            kustomization("registry.example.com/product"),
        ));
    }
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_bytes()))
        .collect();
    BareRepo::with_files(&refs).unwrap()
}

fn file(repo: &BareRepo, path: &str) -> String {
    String::from_utf8(repo.read_file("main", path).unwrap().unwrap()).unwrap()
}

fn github_push(sha: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": sha,
        "created": false,
        "deleted": false,
        "forced": false,
        "repository": {"full_name": "acme/api", "html_url": "https://github.com/acme/api"},
        "pusher": {"name": "dev", "email": "dev@example.com"},
        "sender": {"login": "dev"},
        "head_commit": {
            "id": sha, "message": "Fix the login page",
            "author": {"name": "Dev Eloper", "email": "dev@example.com", "username": "dev"},
            "url": format!("https://github.com/acme/api/commit/{sha}"),
        },
        "commits": [],
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signed_github_push_releases_once_even_when_replayed() {
    let repo = repo();
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(config(data.path(), &repo.file_url())).await;
    auto_release(&server, "api", "main").await;

    let sha = "3f786850e387550fdab836ed7e6dc881de23001b";
    let body = github_push(sha);
    let signature = github_signature(GH_SECRET, &body);

    // A wrong signature, and none at all, are refused before anything is stored.
    let wrong = github_signature("not-the-secret", &body);
    for headers in [
        vec![
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", wrong.as_str()),
        ],
        vec![("X-GitHub-Event", "push")],
    ] {
        let (code, refused) = server
            .hook("/api/v1/webhooks/github", &headers, &body)
            .await;
        assert_eq!(code, 401, "{refused}");
    }
    let (_, listed) = server.api("/api/v1/artifacts?service=api", None).await;
    assert_eq!(listed["artifacts"], json!([]));

    let headers = [
        ("X-GitHub-Event", "push"),
        ("X-Hub-Signature-256", signature.as_str()),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
    ];
    let (code, pushed) = server
        .hook("/api/v1/webhooks/github", &headers, &body)
        .await;
    assert_eq!(code, 201, "{pushed}");
    let artifact = &pushed["artifacts"][0];
    assert_eq!(artifact["id"], "main-3f786850e3");
    assert_eq!(artifact["autoReleases"][0]["status"], "queued", "{pushed}");
    let dev = server.wait_running("api", "dev", "main-3f786850e3").await;
    assert_eq!(dev["tag"], "main-3f78685");
    assert_eq!(dev["sourceSha"], sha);
    assert_eq!(dev["author"]["email"], "dev@example.com");
    assert!(file(&repo, "apps/api/dev/kustomization.yaml").contains("newTag: main-3f78685"));
    let commits = repo.commit_count("main").unwrap();

    // The same delivery again: same artifact, same bytes, nothing released.
    let (code, replayed) = server
        .hook("/api/v1/webhooks/github", &headers, &body)
        .await;
    assert_eq!(code, 200, "{replayed}");
    assert_eq!(replayed["artifacts"][0]["unchanged"], true);
    assert_eq!(replayed["artifacts"][0]["autoReleases"], json!([]));
    assert_eq!(repo.commit_count("main").unwrap(), commits);

    // Events tug does not act on are acknowledged, not failed.
    let issue = br#"{"action":"opened"}"#;
    let signature = github_signature(GH_SECRET, issue);
    let (code, ignored) = server
        .hook(
            "/api/v1/webhooks/github",
            &[
                ("X-GitHub-Event", "issues"),
                ("X-Hub-Signature-256", &signature),
            ],
            issue,
        )
        .await;
    assert_eq!(code, 202, "{ignored}");
    assert_eq!(ignored["ignored"], true);
    assert!(ignored["message"].as_str().unwrap().contains("issues"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn github_packages_gitlab_docker_hub_and_harbor_register_artifacts() {
    let repo = repo();
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(config(data.path(), &repo.file_url())).await;
    auto_release(&server, "worker", "main").await;
    auto_release(&server, "api", "v2").await;

    // GitLab: the shared token, then a wrong one.
    let sha = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7";
    let gitlab = serde_json::to_vec(&json!({
        "object_kind": "push", "event_name": "push",
        "before": "95790bf891e76fee5e1747ab589903a6a1f80f22", "after": sha,
        "ref": "refs/heads/main", "checkout_sha": sha,
        "user_name": "John Smith", "user_email": "john@example.com",
        "project": {"path_with_namespace": "acme/worker", "web_url": "https://gitlab.example.com/acme/worker"},
        "commits": [{"id": sha, "message": "Update worker", "author": {"name": "John Smith", "email": "john@example.com"}}],
        "total_commits_count": 1,
    }))
    .unwrap();
    let (code, refused) = server
        .hook(
            "/api/v1/webhooks/gitlab",
            &[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "guess")],
            &gitlab,
        )
        .await;
    assert_eq!(code, 401, "{refused}");
    let (code, pushed) = server
        .hook(
            "/api/v1/webhooks/gitlab",
            &[
                ("X-Gitlab-Event", "Push Hook"),
                ("X-Gitlab-Token", GL_TOKEN),
            ],
            &gitlab,
        )
        .await;
    assert_eq!(code, 201, "{pushed}");
    assert_eq!(pushed["artifacts"][0]["id"], "main-da1560886d");
    let dev = server
        .wait_running("worker", "dev", "main-da1560886d")
        .await;
    assert_eq!(dev["tag"], sha);

    // Docker Hub: the token in the query string; a wrong one, then the right one.
    let hub = serde_json::to_vec(&json!({
        "callback_url": "https://registry.hub.docker.com/u/acme/worker/hook/2141b5bi5i5b02bec211i4eeih0242eg11000a/",
        "push_data": {"pushed_at": 1_417_566_161, "pusher": "trustedbuilder", "tag": "main"},
        "repository": {"repo_name": "acme/worker", "name": "worker", "namespace": "acme", "status": "Active"},
    }))
    .unwrap();
    let (code, _) = server
        .hook("/api/v1/webhooks/dockerhub?token=guess", &[], &hub)
        .await;
    assert_eq!(code, 401);
    let (code, pushed) = server
        .hook(
            &format!("/api/v1/webhooks/dockerhub?token={REG_TOKEN}"),
            &[],
            &hub,
        )
        .await;
    assert_eq!(code, 201, "{pushed}");
    assert_eq!(pushed["artifacts"][0]["id"], "main-1417566161");
    assert_eq!(pushed["artifacts"][0]["service"], "worker");
    // An image nobody mapped is acknowledged and ignored.
    let other = serde_json::to_vec(&json!({
        "push_data": {"pushed_at": 1, "pusher": "x", "tag": "latest"},
        "repository": {"repo_name": "someone/else"},
    }))
    .unwrap();
    let (code, ignored) = server
        .hook(
            &format!("/api/v1/webhooks/dockerhub?token={REG_TOKEN}"),
            &[],
            &other,
        )
        .await;
    assert_eq!(code, 202, "{ignored}");

    // Harbor: the token as its fixed Authorization header; the tag is the artifact's branch.
    let digest = "sha256:457f4aa83fc9a6663ab9d1b0a6e2dce25a12a943ed5bf2c1747c58d48bbb4917";
    let harbor = serde_json::to_vec(&json!({
        "type": "PUSH_ARTIFACT", "occur_at": 1_680_501_893, "operator": "harbor-jobservice",
        "event_data": {
            "resources": [{"digest": digest, "tag": "v2", "resource_url": "harbor.example.com/team/api:v2"}],
            "repository": {"date_created": 1_680_501_893, "name": "api", "namespace": "team", "repo_full_name": "team/api", "repo_type": "private"},
        },
    }))
    .unwrap();
    let (code, _) = server
        .hook(
            "/api/v1/webhooks/harbor",
            &[("Authorization", "Bearer guess")],
            &harbor,
        )
        .await;
    assert_eq!(code, 401);
    let bearer = format!("Bearer {REG_TOKEN}");
    let (code, pushed) = server
        .hook(
            "/api/v1/webhooks/harbor",
            &[("Authorization", &bearer)],
            &harbor,
        )
        .await;
    assert_eq!(code, 201, "{pushed}");
    assert_eq!(pushed["artifacts"][0]["id"], "v2-457f4aa83fc9");
    let dev = server.wait_running("api", "dev", "v2-457f4aa83fc9").await;
    assert_eq!(dev["digest"], digest);
    assert_eq!(dev["image"], "harbor.example.com/team/api");

    // GitHub Packages: a published container version, signed like every GitHub delivery.
    let package = serde_json::to_vec(&json!({
        "action": "published",
        "registry_package": {
            "name": "api", "namespace": "team", "package_type": "CONTAINER",
            "package_version": {
                "version": "sha256:0a1b", "package_url": "harbor.example.com/team/api:v3",
                "container_metadata": {"tag": {"name": "v3", "digest": "sha256:0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"}},
            },
        },
        "sender": {"login": "octocat"},
    }))
    .unwrap();
    let signature = github_signature(GH_SECRET, &package);
    let (code, pushed) = server
        .hook(
            "/api/v1/webhooks/github",
            &[
                ("X-GitHub-Event", "registry_package"),
                ("X-Hub-Signature-256", &signature),
            ],
            &package,
        )
        .await;
    assert_eq!(code, 201, "{pushed}");
    assert_eq!(pushed["artifacts"][0]["id"], "v3-0a1b2c3d4e5f");
    assert_eq!(pushed["artifacts"][0]["branch"], "v3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dispatch_deploys_allowed_branches_and_names_the_rule_that_refuses_others() {
    let repo = repo();
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(config(data.path(), &repo.file_url())).await;

    let (code, accepted) = server
        .api(
            "/api/v1/dispatch",
            Some(json!({"event_type": "product", "client_payload": {"commitmsg": "abc123 Fix checkout", "baseRef": "qa"}})),
        )
        .await;
    assert_eq!(code, 202, "{accepted}");
    let job = server.wait_job(accepted["jobId"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(file(&repo, "apps/product/qa/kustomization.yaml").contains("newTag: qa"));
    let tip = repo.log("main").unwrap().remove(0);
    assert_eq!(tip.subject, "App commit msg: abc123 Fix checkout");
    let commits = repo.commit_count("main").unwrap();

    let (code, refused) = server
        .api(
            "/api/v1/dispatch",
            Some(json!({"event_type": "product", "client_payload": {"commitmsg": "x", "baseRef": "feature"}})),
        )
        .await;
    assert_eq!(code, 403, "{refused}");
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("product") && message.contains("`feature`"),
        "{message}"
    );
    assert_eq!(repo.commit_count("main").unwrap(), commits);

    // A bearer token is required, as for every API call.
    let (code, _) = server
        .send(
            server
                .client
                .post(format!("{}/api/v1/dispatch", server.base))
                .json(&json!({"event_type": "product", "client_payload": {"baseRef": "qa"}})),
        )
        .await;
    assert_eq!(code, 401);
    // A missing payload field is named.
    let (code, missing) = server
        .api(
            "/api/v1/dispatch",
            Some(json!({"event_type": "product", "client_payload": {"baseRef": "qa"}})),
        )
        .await;
    assert_eq!(code, 400, "{missing}");
    assert!(
        missing["message"]
            .as_str()
            .unwrap()
            .contains("client_payload.commitmsg")
    );
}
