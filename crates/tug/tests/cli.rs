//! What every command shares: a closed stdout is not a crash, the exit status follows one table,
//! `-o json` always prints one JSON document (an error object on failure) with camelCase names.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

use std::process::{Command, Stdio};

use serde_json::Value;
use util::Dir;

/// Every object key in `v`, recursively, that is not camelCase.
fn not_camel_case(v: &Value, at: &str, found: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k.contains('_') || k.contains('-') || k.starts_with(char::is_uppercase) {
                    found.push(format!("{at}.{k}"));
                }
                not_camel_case(v, &format!("{at}.{k}"), found);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                not_camel_case(v, &format!("{at}[{i}]"), found);
            }
        }
        _ => {}
    }
}

fn assert_camel_case(v: &Value) {
    let mut found = Vec::new();
    not_camel_case(v, "", &mut found);
    assert!(found.is_empty(), "not camelCase: {found:?} in {v}");
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let (reader, writer) = std::io::pipe().unwrap();
    // Closed before tug writes a byte: every write fails with EPIPE, as under `| head -1` once
    // head has exited.
    drop(reader);
    let dir = Dir::new();
    let out = Command::new(env!("CARGO_BIN_EXE_tug"))
        .args(["completion", "bash"])
        .env_clear()
        .env("HOME", dir.home())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn json_failures_print_an_error_object_on_stdout() {
    let dir = Dir::new();
    // The work failed (no such file): 1.
    let run = dir
        .tug(&["edit", "set", "nope.yaml", ".a", "1", "-o", "json"])
        .run();
    assert_eq!(run.status.code(), Some(1), "{run}");
    let v = run.json();
    assert_eq!(v["error"]["code"], "failed", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nope.yaml"),
        "{v}"
    );
    assert!(run.stderr.contains("tug: error: "), "{run}");

    // An edit that cannot be made: 1, code edit_failed.
    dir.write(
        "deployment.yaml",
        "kind: Pod\nspec:\n  containers:\n    - name: app\n      image: r/app:1\n",
    );
    let run = dir
        .tug(&[
            "edit",
            "image",
            "deployment.yaml",
            "other/app:2",
            "-o",
            "json",
        ])
        .run();
    assert_eq!(run.status.code(), Some(1), "{run}");
    assert_eq!(run.json()["error"]["code"], "edit_failed", "{run}");

    // Transport: nothing listens there; 2, code unavailable.
    let port = tug_testkit::free_port().unwrap();
    let server = format!("http://127.0.0.1:{port}");
    let run = dir
        .tug(&[
            "status",
            "--service",
            "api",
            "--server",
            &server,
            "-o",
            "json",
        ])
        .run();
    assert_eq!(run.status.code(), Some(2), "{run}");
    let v = run.json();
    assert_eq!(v["error"]["code"], "unavailable", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot reach the tug server"),
        "{v}"
    );

    // Usage: a missing flag; 2, JSON too when the arguments asked for it.
    let run = dir.tug(&["status", "-o", "json"]).run();
    assert_eq!(run.status.code(), Some(2), "{run}");
    let v = run.json();
    assert_eq!(v["error"]["code"], "invalid_argument", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--service"),
        "{v}"
    );
    // Without -o json, stdout stays empty.
    let run = dir.tug(&["status"]).run();
    assert_eq!(run.status.code(), Some(2), "{run}");
    assert_eq!(run.stdout, "", "{run}");
}

#[test]
fn json_results_use_camel_case_names() {
    let dir = Dir::new();
    dir.write("values.yaml", "image:\n  repository: r/app\n  tag: \"1\"\n");
    let run = dir
        .tug(&[
            "edit",
            "helm-image",
            "values.yaml",
            "r/app:2",
            "--dry-run",
            "-o",
            "json",
        ])
        .ok();
    let v = run.json();
    assert_eq!(v["dryRun"], true, "{v}");
    assert_camel_case(&v);

    dir.write(
        "specs.yaml",
        "- url: https://git.example.com/x.git\n  updates:\n    - branch: main\n      paths:\n        - path: .\n          yq:\n            - {file: values.yaml, key: .image.tag, value: \"3\"}\n",
    );
    let run = dir
        .tug(&[
            "apply",
            "specs.yaml",
            "--dir",
            ".",
            "--dry-run",
            "-o",
            "json",
        ])
        .ok();
    let v = run.json();
    assert_eq!(v["dryRun"], true, "{v}");
    assert_camel_case(&v);
}

#[test]
fn help_is_printed_with_status_0_and_usage_errors_with_2() {
    let dir = Dir::new();
    let run = dir.tug(&["deploy", "--help"]).ok();
    assert!(run.stdout.contains("Exit status: 0 deployed"), "{run}");
    assert!(run.stdout.contains("DELIVERY_SERVER_ADDR"), "{run}");
    let run = dir.tug(&["edit", "image", "--help"]).ok();
    assert!(
        run.stdout
            .contains("the image repository of the containers to change"),
        "{run}"
    );
    let run = dir.tug(&["no-such-command"]).run();
    assert_eq!(run.status.code(), Some(2), "{run}");
}

/// The subcommands `tug HELP_PATH --help` lists under `Commands:` (without `help`).
fn subcommands(dir: &Dir, path: &[&str]) -> Vec<String> {
    let mut args: Vec<&str> = path.to_vec();
    args.push("--help");
    let help = dir.tug(&args).ok().stdout;
    help.split("\nCommands:\n")
        .nth(1)
        .map(|rest| {
            rest.lines()
                .take_while(|l| !l.trim().is_empty())
                .filter_map(|l| {
                    // Command names are indented by two spaces; wrapped descriptions by more.
                    l.strip_prefix("  ")
                        .filter(|l| !l.starts_with(' '))
                        .and_then(|l| l.split_whitespace().next())
                })
                .filter(|name| *name != "help")
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// `tug --help` and the help of every subcommand, as people read them: a change to any flag or
/// text shows up in review (`cargo insta review`).
#[test]
fn help_of_every_command() {
    let dir = Dir::new();
    let mut pending: Vec<Vec<String>> = vec![Vec::new()];
    let mut seen = 0;
    while let Some(path) = pending.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        for sub in subcommands(&dir, &args) {
            let mut child = path.clone();
            child.push(sub);
            pending.push(child);
        }
        let mut with_help = args.clone();
        with_help.push("--help");
        let help = dir.tug(&with_help).ok().stdout;
        let name = if path.is_empty() {
            "tug".to_owned()
        } else {
            format!("tug-{}", path.join("-"))
        };
        insta::assert_snapshot!(name, help);
        seen += 1;
    }
    assert!(seen >= 25, "only {seen} commands");
}
