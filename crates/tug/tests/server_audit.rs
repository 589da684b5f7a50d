//! The audit trail against a real `tug server`: a deploy, a deploy refused for the token's scope,
//! an artifact push and a release are recorded with who, what, where, the request id and the
//! result; `GET /api/v1/audit` filters and pages them, `tug audit` prints them, and the landed
//! commits name their actor in a `Tug-Actor` trailer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Output, Stdio};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tug_testkit::{BareRepo, Scratch, TugServer};

const CI_TOKEN: &str = "tug_test_audit_ci_0123456789abcdef";
const NARROW_TOKEN: &str = "tug_test_audit_narrow_0123456789ab";
const IMAGE: &str = "registry.example.com/shop/api";

const KUSTOMIZATION: &str = "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
images:
  - name: registry.example.com/shop/api
    newTag: 0.0.1
";

fn tug_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tug"))
}

struct World {
    repo: BareRepo,
    server: TugServer,
    client_dir: Scratch,
}

impl World {
    fn start() -> World {
        let repo = BareRepo::with_files(&[
            ("apps/api/dev/kustomization.yaml", KUSTOMIZATION.as_bytes()),
            ("apps/web/dev/kustomization.yaml", KUSTOMIZATION.as_bytes()),
        ])
        .unwrap();
        let sha = |token: &str| hex::encode(Sha256::digest(token.as_bytes()));
        let config = format!(
            r#"repositories:
  - name: platform
    url: "{url}"
auth:
  tokens:
    - name: ci
      sha256: "{ci}"
      repositories: ["*"]
    - name: narrow
      sha256: "{narrow}"
      repositories: ["platform"]
      branches: ["release/*"]
environments:
  - {{ name: dev, repository: platform, branch: main }}
services:
  - name: api
    path: "apps/{{service}}/{{env}}"
    edit: {{ kind: kustomize }}
"#,
            url = repo.file_url(),
            ci = sha(CI_TOKEN),
            narrow = sha(NARROW_TOKEN),
        );
        let server = TugServer::start(tug_binary(), &config).unwrap();
        World {
            repo,
            server,
            client_dir: Scratch::new().unwrap(),
        }
    }

    fn tug(&self, args: &[&str]) -> Output {
        let url = self.server.http_url();
        TugServer::clean_command(
            tug_binary(),
            self.client_dir.path(),
            &[("TUG_SERVER", url.as_str()), ("TUG_TOKEN", CI_TOKEN)],
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

    /// `POST /api/v1/deploy` of the web image tag with `token` and the request id `id`; the
    /// status and the NDJSON lines.
    fn deploy(&self, token: &str, id: &str, tag: &str) -> (u16, Vec<Value>) {
        let body = json!({
            "commitSpec": {"CommitMessage": format!("web {tag}")},
            "deploySpecs": [{
                "url": self.repo.file_url(),
                "updates": [{
                    "branch": "main",
                    "paths": [{
                        "path": "apps/web/dev",
                        "kustomize": {"images": [{"name": IMAGE, "newTag": tag}]}
                    }]
                }]
            }]
        })
        .to_string();
        let auth = format!("Bearer {token}");
        let response = self
            .server
            .request(
                "POST",
                "/api/v1/deploy",
                &[
                    ("Content-Type", "application/json"),
                    ("Authorization", &auth),
                    ("X-Request-Id", id),
                ],
                body.as_bytes(),
            )
            .unwrap();
        assert_eq!(response.header("x-request-id"), Some(id));
        (response.status, response.ndjson().unwrap())
    }

    fn audit(&self, query: &str) -> Value {
        let (status, body) = self
            .server
            .get_json(&format!("/api/v1/audit{query}"), Some(CI_TOKEN))
            .unwrap();
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The message of the newest commit on main whose subject contains `subject`.
    fn commit_message(&self, subject: &str) -> String {
        let log = self.repo.log("main").unwrap();
        log.iter()
            .find(|c| c.subject.contains(subject))
            .unwrap_or_else(|| panic!("no commit {subject:?} in {log:#?}"))
            .message
            .clone()
    }
}

fn records(body: &Value) -> Vec<&Value> {
    body["records"].as_array().unwrap().iter().collect()
}

fn summary(body: &Value) -> Vec<String> {
    records(body)
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r["actor"].as_str().unwrap(),
                r["action"].as_str().unwrap(),
                r["result"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn state_changing_calls_are_audited_and_commits_name_their_actor() {
    let world = World::start();

    // An accepted deploy, then one refused for the token's scope.
    let (status, lines) = world.deploy(CI_TOKEN, "audit-deploy-1", "1.0.0");
    assert_eq!(status, 200, "{lines:?}");
    assert!(
        lines.last().unwrap().to_string().contains("succeeded")
            || lines.iter().any(|l| l.to_string().contains("commit")),
        "{lines:?}"
    );
    let (status, lines) = world.deploy(NARROW_TOKEN, "audit-deploy-2", "2.0.0");
    assert_eq!(status, 403, "{lines:?}");

    // An artifact push and a release, through the CLI.
    world.ok(&[
        "artifact",
        "init",
        "--service",
        "api",
        "--id",
        "main-1",
        "--branch",
        "main",
        "--sha",
        "0123456789abcdef",
        "--author-name",
        "Ann",
        "--author-email",
        "ann@example.com",
        "--committer-name",
        "Ann",
        "--committer-email",
        "ann@example.com",
        "--message",
        "build main-1",
        "--ci-job-url",
        "https://ci.example.com/1",
    ]);
    for stage in ["build", "push"] {
        world.ok(&["artifact", "add", stage, "--image", IMAGE, "--tag", "1.0.1"]);
    }
    world.ok(&["artifact", "push"]);
    let released = world.ok(&[
        "release",
        "--service",
        "api",
        "--env",
        "dev",
        "--artifact",
        "main-1",
    ]);
    assert!(released.contains("succeeded"), "{released}");

    // Every landed commit names its actor, once, next to its request.
    for subject in ["web 1.0.0", "main-1"] {
        let message = world.commit_message(subject);
        let actors: Vec<&str> = message
            .lines()
            .filter_map(|l| l.strip_prefix("Tug-Actor: "))
            .collect();
        assert_eq!(actors, ["ci"], "{message}");
        assert!(message.contains("Tug-Request: "), "{message}");
    }

    // Newest first: the release, the push, the refusal, the deploy.
    let all = world.audit("");
    assert_eq!(
        summary(&all),
        [
            "ci release accepted",
            "ci artifact.push accepted",
            "narrow deploy refused",
            "ci deploy accepted",
        ],
        "{all:#}"
    );
    assert!(all.get("next").is_none(), "one page: {all}");

    let deploys = world.audit("?action=deploy");
    let [refused, accepted] = records(&deploys)[..] else {
        panic!("{deploys:#}")
    };
    assert_eq!(refused["code"], "permission_denied");
    assert_eq!(refused["requestId"], "audit-deploy-2");
    assert!(
        refused["message"].as_str().unwrap().contains("narrow"),
        "{refused}"
    );
    assert_eq!(accepted["requestId"], "audit-deploy-1");
    assert_eq!(accepted["repository"], "platform");
    assert_eq!(accepted["branch"], "main");
    assert_eq!(accepted["code"], Value::Null);

    let release = world.audit("?service=api&environment=dev&action=release");
    let [release] = records(&release)[..] else {
        panic!("{release:#}")
    };
    assert_eq!(release["actor"], "ci");
    assert_eq!(release["branch"], "main");
    assert!(
        release["requestId"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );

    assert_eq!(
        summary(&world.audit("?actor=narrow")),
        ["narrow deploy refused"]
    );
    assert_eq!(summary(&world.audit("?actor=nobody")), Vec::<String>::new());
    assert_eq!(
        summary(&world.audit("?until=2000-01-01T00:00:00Z")),
        Vec::<String>::new()
    );
    assert_eq!(
        summary(&world.audit("?since=2000-01-01T00:00:00Z&action=artifact.push")),
        ["ci artifact.push accepted"]
    );

    // Paging: two pages of two, the second continuing below the first's `next`.
    let first = world.audit("?limit=2");
    let next = first["next"].as_i64().expect("a next page");
    let second = world.audit(&format!("?limit=2&before={next}"));
    assert_eq!([summary(&first), summary(&second)].concat(), summary(&all));
    let rest = world.audit(&format!(
        "?limit=2&before={}",
        second["next"].as_i64().unwrap()
    ));
    assert_eq!(summary(&rest), Vec::<String>::new());

    // The query is checked: an unknown parameter, a bad time, no token.
    let (status, body) = world
        .server
        .get_json("/api/v1/audit?who=ci", Some(CI_TOKEN))
        .unwrap();
    assert_eq!(
        (status, body["details"]["field"].clone()),
        (400, json!("who"))
    );
    let (status, body) = world
        .server
        .get_json("/api/v1/audit?since=yesterday", Some(CI_TOKEN))
        .unwrap();
    assert_eq!(
        (status, body["details"]["field"].clone()),
        (400, json!("since"))
    );
    let (status, _) = world.server.get_json("/api/v1/audit", None).unwrap();
    assert_eq!(status, 401);

    // `tug audit`: text and JSON, with filters.
    let text = world.ok(&["audit", "--action", "deploy"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    // A refused deploy never got as far as a branch it may write to.
    assert!(
        lines[0].contains("  narrow  deploy  -  refused (permission_denied)  token `narrow` "),
        "{text}"
    );
    assert!(
        lines[1].contains("  ci  deploy  platform@main  accepted  job "),
        "{text}"
    );
    let json: Value =
        serde_json::from_str(&world.ok(&["audit", "--actor", "ci", "--limit", "1", "-o", "json"]))
            .unwrap();
    assert_eq!(summary(&json), ["ci release accepted"]);
    let older = world.tug(&["audit", "--actor", "ci", "--limit", "1"]);
    assert!(
        String::from_utf8_lossy(&older.stderr).contains("older records: tug audit --before "),
        "{older:?}"
    );

    // A write without a valid token is refused before it runs, and audited all the same.
    let response = world
        .server
        .request(
            "POST",
            "/api/v1/releases",
            &[("Content-Type", "application/json")],
            br#"{"service": "api", "environments": ["dev"]}"#,
        )
        .unwrap();
    assert_eq!(response.status, 401);
    let unknown = world.audit("?actor=unknown");
    assert_eq!(
        summary(&unknown),
        ["unknown release refused"],
        "{unknown:#}"
    );
    assert_eq!(records(&unknown)[0]["code"], "unauthenticated");
}
