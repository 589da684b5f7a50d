//! What `-o json` prints, snapshotted from the real binary against a real `tug server`: deploy
//! results, dry runs, artifact pushes, releases, status, history and errors. Values that differ
//! from run to run (ids, commits, times, ports, scratch paths) are replaced by placeholders that
//! keep which values are equal (`[id-1]` is the same id wherever it appears); every key stays,
//! so a renamed, added or removed field fails the snapshot (`cargo insta review`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support_server;

use std::collections::HashMap;
use std::process::{Output, Stdio};

use regex::Regex;
use serde_json::Value;
use support_server::{CI_TOKEN, DEV_PATH, IMAGE, World};
use tug_testkit::free_port;

/// Releases on the `gitops` repository: `demo` in dev, then prod from `main` builds only.
const RELEASES: &str = r#"environments:
  - { name: dev, repository: gitops, branch: main }
  - { name: prod, repository: gitops, branch: main, after: dev }
services:
  - name: demo
    path: "apps/{service}/{env}"
    edit: { kind: kustomize }
policies:
  branch_restrictions: ["prod=^main$"]
"#;

/// Replaces what changes from run to run, numbering distinct values per kind.
struct Normaliser {
    /// Literal text (URLs, paths) and its placeholder, replaced first.
    literals: Vec<(String, String)>,
    /// Kind, pattern, and the start of a match that stays (the host before a port).
    patterns: Vec<(&'static str, Regex, &'static str)>,
    /// Per kind, the distinct values in the order they were first seen.
    seen: HashMap<&'static str, Vec<String>>,
}

impl Normaliser {
    fn new(world: &World) -> Self {
        let pattern = |kind, re: &str| (kind, Regex::new(re).unwrap(), "");
        Normaliser {
            literals: vec![
                (world.server.http_url(), "[server]".to_owned()),
                (world.gitops.file_url(), "[gitops-url]".to_owned()),
                (world.apps.file_url(), "[apps-url]".to_owned()),
                (
                    world.client_dir.path().display().to_string(),
                    "[client-dir]".to_owned(),
                ),
            ],
            patterns: vec![
                pattern(
                    "id",
                    r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b",
                ),
                pattern("sha", r"\b[0-9a-f]{40}\b"),
                pattern(
                    "time",
                    r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?",
                ),
                (
                    "port",
                    Regex::new(r"127\.0\.0\.1:\d+").unwrap(),
                    "127.0.0.1:",
                ),
            ],
            seen: HashMap::new(),
        }
    }

    fn text(&mut self, text: &str) -> String {
        let mut out = text.to_owned();
        for (literal, placeholder) in &self.literals {
            out = out.replace(literal.as_str(), placeholder);
        }
        for (kind, re, keep) in &self.patterns {
            let found: Vec<String> = re.find_iter(&out).map(|m| m.as_str().to_owned()).collect();
            for value in found {
                let values = self.seen.entry(*kind).or_default();
                let n = match values.iter().position(|v| *v == value) {
                    Some(i) => i + 1,
                    None => {
                        values.push(value.clone());
                        values.len()
                    }
                };
                out = out.replace(&value, &format!("{keep}[{kind}-{n}]"));
            }
        }
        out
    }

    /// `v` with its placeholders numbered from 1: a snapshot does not depend on the commands
    /// run before it.
    fn snapshot(&mut self, v: &Value) -> Value {
        self.seen.clear();
        self.value(v)
    }

    fn value(&mut self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.text(s)),
            Value::Array(items) => Value::Array(items.iter().map(|i| self.value(i)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.value(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// `tug ARGS… -o json` with the server and `token` in the environment: the exit status and
/// stdout, which must be one JSON document.
fn json(world: &World, token: &str, args: &[&str]) -> (Option<i32>, Value) {
    let server = world.server.http_url();
    let out: Output = world
        .tug(args, &[("TUG_SERVER", &server), ("TUG_TOKEN", token)])
        .args(["-o", "json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "tug {args:?}: stdout is not one JSON document ({e}): {stdout}\nstderr: {}\nserver \
             log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            world.server.logs()
        )
    });
    (out.status.code(), value)
}

fn deploy_args(tag: &str) -> Vec<String> {
    [
        "deploy",
        "--repository",
        "gitops",
        "--branch",
        "main",
        "--path",
        DEV_PATH,
        "--image",
        &format!("{IMAGE}:{tag}"),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn deploy_results_and_errors() {
    let world = World::start();
    let mut n = Normaliser::new(&world);

    let mut dry_run = deploy_args("v3.0.0");
    dry_run.push("--dry-run".to_owned());
    let (status, v) = json(&world, CI_TOKEN, &strs(&dry_run));
    assert_eq!(status, Some(0), "{v}");
    insta::assert_json_snapshot!("deploy-dry-run", n.snapshot(&v));

    let mut deploy = deploy_args("v2.0.0");
    deploy.extend(["--project", "shop/demo", "--short-sha", "0a1b2c3"].map(str::to_owned));
    let (status, v) = json(&world, CI_TOKEN, &strs(&deploy));
    assert_eq!(status, Some(0), "{v}");
    insta::assert_json_snapshot!("deploy", n.snapshot(&v));

    let mut failing = deploy_args("v7");
    failing[6] = "apps/missing".to_owned();
    let (status, v) = json(&world, CI_TOKEN, &strs(&failing));
    assert_eq!(status, Some(1), "{v}");
    insta::assert_json_snapshot!("deploy-failed", n.snapshot(&v));

    let (status, v) = json(&world, "not-the-token", &strs(&deploy_args("v4")));
    assert_eq!(status, Some(2), "{v}");
    insta::assert_json_snapshot!("error-unauthenticated", n.snapshot(&v));

    let (status, v) = json(
        &world,
        CI_TOKEN,
        &[
            "deploy",
            "--url",
            "https://git.example.com/nowhere.git",
            "--branch",
            "main",
            "--path",
            DEV_PATH,
            "--image",
            &format!("{IMAGE}:v5"),
        ],
    );
    assert_eq!(status, Some(1), "{v}");
    insta::assert_json_snapshot!("error-invalid-field", n.snapshot(&v));

    let nowhere = format!("http://127.0.0.1:{}", free_port().unwrap());
    let (status, v) = json(
        &world,
        CI_TOKEN,
        &["status", "--service", "demo", "--server", &nowhere],
    );
    assert_eq!(status, Some(2), "{v}");
    insta::assert_json_snapshot!("error-unreachable", n.snapshot(&v));
}

#[test]
fn artifact_release_status_and_history() {
    let world = World::start_with(RELEASES);
    let mut n = Normaliser::new(&world);
    let local = |args: &[&str]| {
        let out = world.tug(args, &[]).output().unwrap();
        assert!(out.status.success(), "tug {args:?}: {out:?}");
    };
    local(&[
        "artifact",
        "init",
        "--service",
        "demo",
        "--id",
        "main-1",
        "--branch",
        "main",
        "--sha",
        "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567",
        "--author-name",
        "Ann Author",
        "--author-email",
        "ann@example.com",
        "--message",
        "build main-1",
        "--ci-job-url",
        "https://ci.example.com/jobs/1",
    ]);
    for stage in ["build", "push"] {
        local(&["artifact", "add", stage, "--image", IMAGE, "--tag", "1.0.1"]);
    }

    let (status, v) = json(&world, CI_TOKEN, &["artifact", "push"]);
    assert_eq!(status, Some(0), "{v}");
    insta::assert_json_snapshot!("artifact-push", n.snapshot(&v));

    let (status, v) = json(
        &world,
        CI_TOKEN,
        &[
            "release",
            "--service",
            "demo",
            "--env",
            "dev",
            "--artifact",
            "main-1",
        ],
    );
    assert_eq!(status, Some(0), "{v}");
    insta::assert_json_snapshot!("release", n.snapshot(&v));

    let (status, v) = json(&world, CI_TOKEN, &["status", "--service", "demo"]);
    assert_eq!(status, Some(0), "{v}");
    insta::assert_json_snapshot!("status", n.snapshot(&v));

    let (status, v) = json(
        &world,
        CI_TOKEN,
        &["describe", "release", "--service", "demo"],
    );
    assert_eq!(status, Some(0), "{v}");
    insta::assert_json_snapshot!("describe-release", n.snapshot(&v));

    let (status, v) = json(
        &world,
        CI_TOKEN,
        &["describe", "artifact", "--service", "demo"],
    );
    assert_eq!(status, Some(0), "{v}");
    insta::assert_json_snapshot!("describe-artifact", n.snapshot(&v));

    let (status, v) = json(
        &world,
        CI_TOKEN,
        &[
            "release",
            "--service",
            "demo",
            "--env",
            "prod",
            "--branch",
            "feature/x",
        ],
    );
    assert_eq!(status, Some(1), "{v}");
    insta::assert_json_snapshot!("error-policy-refusal", n.snapshot(&v));
}
