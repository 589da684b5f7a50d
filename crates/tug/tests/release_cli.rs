//! The release commands (`tug artifact`, `release`, `promote`, `rollback`, `unpin`, `status`,
//! `describe`, `policy`, `reindex`) against a real `tug server` process and a real bare
//! repository, run as a CI job or a person runs them: the binary, a clean environment, the token
//! in `TUG_TOKEN`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tug_testkit::{BareRepo, Scratch, TugServer};

const TOKEN: &str = "tug_test_release_0123456789abcdef";
const IMAGE: &str = "registry.example.com/shop/api";

const KUSTOMIZATION: &str = "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - deployment.yaml
images:
  # the api container
  - name: registry.example.com/shop/api
    newTag: 0.0.1
";

fn tug_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tug"))
}

struct World {
    repo: BareRepo,
    server: TugServer,
    /// HOME and working directory of client commands (artifact.json lives here).
    client_dir: Scratch,
}

impl World {
    fn start() -> World {
        let repo = BareRepo::with_files(&[
            ("apps/api/dev/kustomization.yaml", KUSTOMIZATION.as_bytes()),
            (
                "apps/api/staging/kustomization.yaml",
                KUSTOMIZATION.as_bytes(),
            ),
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
  - {{ name: staging, after: dev }}
  - {{ name: prod, after: staging }}
services:
  - name: api
    path: "apps/{{service}}/{{env}}"
    edit: {{ kind: kustomize }}
  - name: web
    edit: {{ kind: copy }}
policies:
  branch_restrictions: ["prod=^main$"]
"#,
            url = repo.file_url(),
            sha = hex::encode(Sha256::digest(TOKEN.as_bytes())),
        );
        let server = TugServer::start(tug_binary(), &config).unwrap();
        World {
            repo,
            server,
            client_dir: Scratch::new().unwrap(),
        }
    }

    /// `tug ARGS…` with the server and token in the environment; stdin is not a terminal.
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

    /// `tug ARGS…`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.tug(args);
        assert!(
            out.status.success(),
            "tug {args:?} failed: {}\nserver log:\n{}",
            stderr(&out),
            self.server.logs()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--service", "api", "-o", "json"])).unwrap()
    }

    /// Polls `tug status` until `env` runs `artifact` (a deadline, not a sleep).
    fn wait_running(&self, env: &str, artifact: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status();
            let found = environment(&status, env);
            if found["artifactId"] == artifact {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{env} never ran {artifact}: {status}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kustomization(&self, env: &str) -> String {
        let path = format!("apps/api/{env}/kustomization.yaml");
        String::from_utf8(self.repo.read_file("main", &path).unwrap().unwrap()).unwrap()
    }

    /// `tug artifact init`, `add build`, `add push`, `add test`, `add scan` and `push`, as CI
    /// runs them; the stdout of the push.
    fn build_and_push(&self, id: &str, branch: &str, tag: &str) -> String {
        self.ok(&[
            "artifact",
            "init",
            "--service",
            "api",
            "--id",
            id,
            "--branch",
            branch,
            "--sha",
            &format!("{id}0123456789"),
            "--author-name",
            "Ann Author",
            "--author-email",
            "ann@example.com",
            "--committer-name",
            "Carl Committer",
            "--committer-email",
            "carl@example.com",
            "--message",
            &format!("build {id}"),
            "--ci-job-url",
            &format!("https://ci.example.com/jobs/{id}"),
        ]);
        for stage in ["build", "push"] {
            self.ok(&["artifact", "add", stage, "--image", IMAGE, "--tag", tag]);
        }
        self.ok(&[
            "artifact",
            "add",
            "test",
            "--passed",
            "12",
            "--failed",
            "0",
            "--skipped",
            "1",
        ]);
        self.ok(&[
            "artifact",
            "add",
            "scan",
            "--high",
            "0",
            "--medium",
            "1",
            "--low",
            "3",
            "--scanner",
            "trivy",
        ]);
        self.ok(&["artifact", "push"])
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn environment(status: &Value, env: &str) -> Value {
    status["environments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["environment"] == env)
        .cloned()
        .unwrap_or_else(|| panic!("no environment {env} in {status}"))
}

#[test]
fn artifact_to_auto_release_promote_refusal_rollback_and_history() {
    let world = World::start();

    let applied = world.ok(&[
        "policy",
        "--service",
        "api",
        "apply",
        "auto-release",
        "--branch",
        "main",
        "--env",
        "dev",
    ]);
    assert!(applied.starts_with("applied policy "), "{applied}");
    let policies = world.ok(&["policy", "--service", "api", "list"]);
    assert!(policies.contains("branch main -> dev"), "{policies}");
    assert!(
        policies.contains("prod only ^main$  (server-wide)"),
        "{policies}"
    );

    // CI registers the first main build: the auto-release policy puts it in dev.
    let pushed = world.build_and_push("main-1", "main", "1.0.1");
    assert!(
        pushed.contains("artifact main-1 of service api registered"),
        "{pushed}"
    );
    assert!(pushed.contains("auto-release to dev: queued"), "{pushed}");
    let dev = world.wait_running("dev", "main-1");
    assert_eq!(dev["tag"], "1.0.1");
    assert_eq!(dev["author"]["name"], "Ann Author");
    assert!(world.kustomization("dev").contains("    newTag: 1.0.1\n"));
    assert!(
        world
            .kustomization("staging")
            .contains("    newTag: 0.0.1\n")
    );

    // Promotion follows the order dev → staging, synchronously.
    let promoted = world.ok(&["promote", "--service", "api", "--env", "staging"]);
    assert!(
        promoted.starts_with("staging main-1 promote succeeded "),
        "{promoted}"
    );
    assert_eq!(world.wait_running("staging", "main-1")["tag"], "1.0.1");
    assert!(
        world
            .kustomization("staging")
            .contains("    newTag: 1.0.1\n")
    );

    world.build_and_push("main-2", "main", "1.0.2");
    world.wait_running("dev", "main-2");
    world.ok(&["promote", "--service", "api", "--env", "staging"]);
    assert!(
        world
            .kustomization("staging")
            .contains("    newTag: 1.0.2\n")
    );

    // A branch prod does not take is refused by the policy (exit 1), even before any artifact
    // of it exists: the refusal, not "no such artifact".
    let refused = world.tug(&[
        "release",
        "--service",
        "api",
        "--env",
        "prod",
        "--branch",
        "feature/y",
    ]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let message = stderr(&refused);
    assert!(
        message.contains("policy_violation") && message.contains("'^main$'"),
        "{message}"
    );
    // The server's log names the refusal with the token's name, service and environment, and
    // every stored release its service, environment, artifact and requester.
    let logs = world.server.logs();
    assert!(
        logs.lines().any(|l| l.contains("release stored")
            && l.contains("service=api")
            && l.contains("environment=staging")
            && l.contains("artifact=main-")
            && l.contains("requested_by=\"ci\"")),
        "{logs}"
    );
    assert!(
        logs.lines().any(|l| l.contains("release refused by policy")
            && l.contains("token=ci")
            && l.contains("service=\"api\"")
            && l.contains("environment=prod")),
        "{logs}"
    );

    // A feature branch is not auto-released, and prod refuses it.
    let feature = world.build_and_push("feature-x-1", "feature/x", "1.1.0-x");
    assert!(!feature.contains("auto-release"), "{feature}");
    let refused = world.tug(&[
        "release",
        "--service",
        "api",
        "--env",
        "prod",
        "--branch",
        "feature/x",
    ]);
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(
        message.contains("global branch-restriction policy")
            && message.contains("allows only branches matching '^main$'"),
        "{message}"
    );
    assert!(world.kustomization("prod").contains("    newTag: 0.0.1\n"));

    // Without a terminal, rollback goes to the previous release and pins staging.
    let rolled = world.ok(&["rollback", "--service", "api", "--env", "staging"]);
    assert!(
        rolled.starts_with("staging main-1 rollback succeeded "),
        "{rolled}"
    );
    assert!(
        world
            .kustomization("staging")
            .contains("    newTag: 1.0.1\n")
    );
    let staging = environment(&world.status(), "staging");
    assert_eq!(staging["artifactId"], "main-1");
    assert_eq!(staging["pinned"], true);
    let text = world.ok(&["status", "--service", "api"]);
    assert!(
        text.contains("staging:\n  Artifact: main-1\n  Tag: 1.0.1 (registry.example.com/shop/api)\n  Author: Ann Author <ann@example.com>\n  Committer: Carl Committer <carl@example.com>\n  Message: build main-1\n"),
        "{text}"
    );
    assert!(
        text.contains("  Link: https://ci.example.com/jobs/main-1\n"),
        "{text}"
    );
    assert!(
        text.contains("  Pinned: yes, rolled back to main-1 by ci"),
        "{text}"
    );
    assert!(
        text.contains("prod:\n  not released\n  Deployed: 0.0.1 (registry.example.com/shop/api), set outside releases in apps/api/prod/kustomization.yaml\n"),
        "{text}"
    );

    // History, newest first.
    let history = world.ok(&[
        "describe",
        "release",
        "--service",
        "api",
        "--env",
        "staging",
    ]);
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 3, "{history}");
    for (line, (artifact, intent)) in lines.iter().zip([
        ("main-1", "rollback"),
        ("main-2", "promote"),
        ("main-1", "promote"),
    ]) {
        assert!(
            line.contains(&format!("  staging  {artifact}  {intent}  by ci")),
            "{history}"
        );
    }
    let artifacts = world.ok(&[
        "describe",
        "artifact",
        "--service",
        "api",
        "--branch",
        "main",
    ]);
    assert_eq!(artifacts.lines().count(), 2, "{artifacts}");
    assert!(!artifacts.contains("feature-x-1"), "{artifacts}");

    // The index rebuilt from git alone still knows the pin; unpin lifts it.
    let reindexed: Value = serde_json::from_str(&world.ok(&["reindex", "-o", "json"])).unwrap();
    assert_eq!(reindexed["branches"][0]["releases"], 5, "{reindexed}");
    assert_eq!(environment(&world.status(), "staging")["pinned"], true);
    let unpinned = world.ok(&["unpin", "--service", "api", "--env", "staging"]);
    assert!(unpinned.contains("was held at main-1"), "{unpinned}");
    assert!(
        unpinned.contains(
            "no auto-release policy of service 'api' targets 'staging'; nothing is released"
        ),
        "{unpinned}"
    );
    assert_eq!(environment(&world.status(), "staging")["pinned"], false);
}

#[test]
fn copy_mode_bundle_uploaded_from_a_directory_then_released() {
    let w = World::start();
    w.ok(&[
        "artifact",
        "init",
        "--service",
        "web",
        "--id",
        "web-7",
        "--branch",
        "main",
    ]);
    w.ok(&[
        "artifact", "add", "push", "--image", IMAGE, "--tag", "7.0.0",
    ]);
    w.ok(&["artifact", "push"]);
    let bundle = w.client_dir.join("rendered");
    std::fs::create_dir_all(bundle.join("dev/extra")).unwrap();
    std::fs::create_dir_all(bundle.join("prod")).unwrap();
    std::fs::write(bundle.join("dev/deployment.yaml"), "kind: Deployment\n").unwrap();
    std::fs::write(bundle.join("dev/extra/service.yaml"), "kind: Service\n").unwrap();
    std::fs::write(bundle.join("prod/deployment.yaml"), "kind: Deployment\n").unwrap();
    let out = w.ok(&["artifact", "bundle", "rendered"]);
    assert!(
        out.contains("bundle of artifact web-7 (3 files) stored"),
        "{out}"
    );
    w.ok(&[
        "release",
        "--service",
        "web",
        "--env",
        "dev",
        "--artifact",
        "web-7",
    ]);
    let read =
        |path: &str| String::from_utf8(w.repo.read_file("main", path).unwrap().unwrap()).unwrap();
    assert_eq!(
        read("dev/releases/dev/web/deployment.yaml"),
        "kind: Deployment\n"
    );
    assert_eq!(
        read("dev/releases/dev/web/extra/service.yaml"),
        "kind: Service\n"
    );
    assert!(read("dev/releases/dev/web/artifact.json").contains("\"web-7\""));

    // A bundle for an artifact the server does not know is refused, naming it.
    w.ok(&["artifact", "init", "--service", "web", "--id", "web-8"]);
    let out = w.tug(&["artifact", "bundle", "rendered"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("web-8"), "{}", stderr(&out));
}

#[test]
fn artifact_json_with_an_unknown_field_is_refused_naming_the_path() {
    let dir = Scratch::new().unwrap();
    let file = dir.join("build/artifact.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let run = |args: &[&str]| {
        TugServer::clean_command(
            tug_binary(),
            dir.path(),
            &[("TUG_ARTIFACT_FILE", file.to_str().unwrap())],
        )
        .args(args)
        .current_dir(dir.path())
        .output()
        .unwrap()
    };
    let init = run(&["artifact", "init", "--service", "api", "--id", "main-1"]);
    assert!(init.status.success(), "{}", stderr(&init));
    let written: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(written["id"], "main-1");
    assert_eq!(written["service"], "api");

    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replacen("\"id\"", "\"imageTag\": \"x\",\n  \"id\"", 1),
    )
    .unwrap();
    let add = run(&[
        "artifact", "add", "push", "--image", IMAGE, "--tag", "1.0.0",
    ]);
    assert!(!add.status.success());
    let message = stderr(&add);
    assert!(
        message.contains(&file.display().to_string()) && message.contains("imageTag"),
        "{message}"
    );

    let bad_tag = run(&["artifact", "init", "--service", "api", "--id", "../escape"]);
    assert!(!bad_tag.status.success());
    assert!(stderr(&bad_tag).contains("id"), "{}", stderr(&bad_tag));
}

#[test]
fn policy_delete_prints_the_deleted_ids_and_names_global_policies_of_an_unknown_id() {
    let world = World::start();
    let applied = world.ok(&[
        "policy",
        "--service",
        "api",
        "apply",
        "auto-release",
        "--branch",
        "main",
        "--env",
        "dev",
    ]);
    let id = applied.trim().strip_prefix("applied policy ").unwrap();
    assert_eq!(id, "auto-release-main-dev");

    let deleted = world.ok(&["policy", "--service", "api", "delete", id]);
    assert_eq!(deleted, "deleted auto-release-main-dev\n");

    let refused = world.tug(&["policy", "--service", "api", "delete", "nosuch"]);
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(
        message.contains(
            "service 'api' has no policy 'nosuch'; it has no policies of its own; the server's global policies (which cannot be deleted) are global-branch-restriction-prod"
        ),
        "{message}"
    );
}

#[test]
fn status_shows_the_image_a_deploy_set_outside_releases() {
    let world = World::start();
    world.ok(&[
        "deploy",
        "--repository",
        "platform",
        "--branch",
        "main",
        "--path",
        "apps/api/staging",
        "--image",
        "registry.example.com/shop/api:9.9.9",
    ]);
    let status = world.status();
    let staging = environment(&status, "staging");
    assert_eq!(staging["released"], false);
    assert_eq!(
        staging["setOutsideReleases"],
        serde_json::json!({
            "image": IMAGE, "tag": "9.9.9",
            "file": "apps/api/staging/kustomization.yaml",
        })
    );
    let text = world.ok(&["status", "--service", "api"]);
    assert!(
        text.contains("staging:\n  not released\n  Deployed: 9.9.9 (registry.example.com/shop/api), set outside releases in apps/api/staging/kustomization.yaml\n"),
        "{text}"
    );

    // Released, then changed by a deploy: both the release and the deployed tag show.
    world.build_and_push("main-1", "main", "1.0.1");
    world.ok(&[
        "release",
        "--service",
        "api",
        "--env",
        "dev",
        "--artifact",
        "main-1",
    ]);
    assert!(environment(&world.status(), "dev")["setOutsideReleases"].is_null());
    world.ok(&[
        "deploy",
        "--repository",
        "platform",
        "--branch",
        "main",
        "--path",
        "apps/api/dev",
        "--image",
        "registry.example.com/shop/api:1.0.1-hotfix",
    ]);
    let dev = environment(&world.status(), "dev");
    assert_eq!(dev["artifactId"], "main-1");
    assert_eq!(dev["setOutsideReleases"]["tag"], "1.0.1-hotfix");
    let text = world.ok(&["status", "--service", "api"]);
    assert!(
        text.contains("dev:\n  Deployed: 1.0.1-hotfix (registry.example.com/shop/api), set outside releases in apps/api/dev/kustomization.yaml\n  Artifact: main-1\n"),
        "{text}"
    );
}

#[test]
fn a_dry_run_shows_what_a_release_and_a_promotion_would_commit_and_pushes_nothing() {
    let world = World::start();
    world.build_and_push("main-1", "main", "1.0.1");
    let commits = world.repo.commit_count("main").unwrap();

    let out = world.ok(&[
        "release",
        "--service",
        "api",
        "--env",
        "dev",
        "--artifact",
        "main-1",
        "--dry-run",
    ]);
    assert!(
        out.starts_with("dev release main-1 would commit to platform main on "),
        "{out}"
    );
    assert!(out.contains("[dev/api] release main-1 by "), "{out}");
    assert!(
        out.contains("-    newTag: 0.0.1\n+    newTag: 1.0.1"),
        "{out}"
    );
    assert_eq!(world.repo.commit_count("main").unwrap(), commits);
    assert!(world.kustomization("dev").contains("    newTag: 0.0.1\n"));

    // Nothing runs in dev, so there is nothing to promote: the dry run says so as the real
    // promotion would, and exits 1.
    let out = world.tug(&[
        "promote",
        "--service",
        "api",
        "--env",
        "staging",
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("dev"), "{}", stderr(&out));

    let json: Value = serde_json::from_str(&world.ok(&[
        "release",
        "--service",
        "api",
        "--env",
        "dev,staging",
        "--artifact",
        "main-1",
        "--dry-run",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(json["dryRun"], true, "{json}");
    let releases = json["releases"].as_array().unwrap();
    assert_eq!(releases.len(), 2, "{json}");
    assert_eq!(releases[1]["environment"], "staging");
    assert_eq!(releases[1]["preview"]["status"], "would_commit");
    assert_eq!(
        releases[1]["preview"]["files"][0]["path"],
        "apps/api/staging/kustomization.yaml"
    );
    assert_eq!(world.repo.commit_count("main").unwrap(), commits);
}
