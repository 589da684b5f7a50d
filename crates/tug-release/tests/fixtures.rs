//! Data-driven checks against files in `tests/fixtures/`: every valid artifact or policies file
//! must parse and be written back byte for byte; every invalid one must fail with the message in
//! its `.expected` file, which names the JSON path, policy or field at fault.

use std::fs;
use std::path::{Path, PathBuf};

use tug_release::{Artifact, ServicePolicies};

fn fixtures(dir: &str, extension: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            entry
                .map(|e| e.path())
                .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        })
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no *.{extension} fixtures in {}",
        dir.display()
    );
    files
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn expected_error(json: &Path) -> String {
    read(&json.with_extension("expected"))
        .trim_end_matches('\n')
        .to_owned()
}

fn stem(path: &Path) -> &str {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
}

#[test]
fn valid_artifacts_parse_and_write_back_unchanged() {
    for path in fixtures("artifacts/valid", "json") {
        let text = read(&path);
        let artifact =
            Artifact::from_json(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            artifact.to_json().unwrap(),
            text,
            "{} does not round-trip",
            path.display()
        );
    }
}

#[test]
fn invalid_artifacts_fail_naming_the_path_at_fault() {
    let mut failures = Vec::new();
    for path in fixtures("artifacts/invalid", "json") {
        let expected = expected_error(&path);
        match Artifact::from_json(&read(&path)) {
            Ok(_) => failures.push(format!(
                "{}: parsed, expected error\n  {expected}",
                path.display()
            )),
            Err(e) if e.to_string() == expected => {}
            Err(e) => failures.push(format!(
                "{}:\n  got      {e}\n  expected {expected}",
                path.display()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_seed_artifact_reads_as_the_release_manager_wrote_it() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/artifacts/valid/release-manager-seed.json");
    let artifact = Artifact::from_json(&read(&path)).unwrap();
    assert_eq!(artifact.branch(), Some("master"));
    assert_eq!(
        artifact.image_reference().unwrap().to_string(),
        "quay.io/lunarway/example:master-0017d995e3-67e9d69164"
    );
    let vulnerabilities = artifact.vulnerabilities();
    assert_eq!(
        (
            vulnerabilities.high,
            vulnerabilities.medium,
            vulnerabilities.low
        ),
        (1, 1, 3)
    );
    let start = artifact.ci.start.unwrap();
    assert_eq!(
        start.timestamp.to_string(),
        "2019-03-29T12:47:15.259380775Z"
    );
    assert_eq!(artifact.shuttle.unwrap().shuttle_version, "v0.6.0");
}

#[test]
fn valid_policies_parse_and_write_back_unchanged() {
    for path in fixtures("policies/valid", "json") {
        let text = read(&path);
        let policies = ServicePolicies::from_json(stem(&path), &text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            policies.to_json().unwrap(),
            text,
            "{} does not round-trip",
            path.display()
        );
    }
}

#[test]
fn invalid_policies_fail_naming_the_policy_at_fault() {
    let mut failures = Vec::new();
    for path in fixtures("policies/invalid", "json") {
        let expected = expected_error(&path);
        match ServicePolicies::from_json(stem(&path), &read(&path)) {
            Ok(_) => failures.push(format!(
                "{}: parsed, expected error\n  {expected}",
                path.display()
            )),
            Err(e) if e.to_string() == expected => {}
            Err(e) => failures.push(format!(
                "{}:\n  got      {e}\n  expected {expected}",
                path.display()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
