//! The git environment tug builds does not depend on the caller's environment, and the object
//! reader survives the death of its git process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::*;
use tug_git::{LandResult, MirrorOptions, land};
use tug_testkit::{BareRepo, Scratch};

fn land_one_change() {
    let remote = BareRepo::with_files(&[(KUSTOMIZATION, MANIFEST.as_bytes())]).unwrap();
    let data = Scratch::new().unwrap();
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    let change = SetLine::new(KUSTOMIZATION, "newTag", "\"8.0.0\"", "req-env");
    let report = land(&mirror, "main", &[&change], &options()).unwrap();
    let LandResult::Committed { commit } = report.results[0] else {
        panic!("{:?}", report.results)
    };
    assert_eq!(remote.tip("main").unwrap(), Some(commit.to_hex()));
}

#[test]
fn lands_in_a_plain_environment() {
    land_one_change();
}

#[test]
fn git_variables_of_the_calling_process_do_not_reach_git() {
    // Run `lands_in_a_plain_environment` again in a child of this test binary whose environment
    // carries what a git hook or CI job exports; each of these breaks git if it leaks through.
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lands_in_a_plain_environment",
            "--test-threads=1",
            "--nocapture",
        ])
        .env("GIT_OBJECT_DIRECTORY", "/nonexistent/objects")
        .env("GIT_DIR", "/nonexistent/.git")
        .env("GIT_INDEX_FILE", "/nonexistent/index")
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "url.file:///nonexistent/.insteadOf")
        .env("GIT_CONFIG_VALUE_0", "file://")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
}

#[test]
fn a_dead_object_reader_is_restarted() {
    let remote = BareRepo::with_files(&[(KUSTOMIZATION, MANIFEST.as_bytes())]).unwrap();
    let data = Scratch::new().unwrap();
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    let tip = mirror.branch_tip("main").unwrap().unwrap();
    assert!(mirror.tree_at(tip).is_ok());
    let readers = cat_file_processes(mirror.path());
    assert_eq!(readers.len(), 1, "one long-running reader per mirror");
    assert!(
        Command::new("kill")
            .arg("-KILL")
            .arg(readers[0].to_string())
            .status()
            .unwrap()
            .success()
    );

    let change = SetLine::new(KUSTOMIZATION, "newTag", "\"8.1.0\"", "req-restart");
    let report = land(&mirror, "main", &[&change], &options()).unwrap();
    assert!(
        matches!(report.results[0], LandResult::Committed { .. }),
        "{:?}",
        report.results
    );
    let now = cat_file_processes(mirror.path());
    assert_eq!(now.len(), 1);
    assert_ne!(now[0], readers[0]);
    drop(mirror);
    assert!(
        cat_file_processes(data.path()).is_empty(),
        "the reader ends with its mirror"
    );
}

/// Live `git cat-file` processes whose command line mentions `path`.
fn cat_file_processes(path: &std::path::Path) -> Vec<u32> {
    let needle = path.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let zombie = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                == Some("Z");
            (!zombie && cmdline.contains("cat-file") && cmdline.contains(&needle)).then_some(pid)
        })
        .collect()
}
