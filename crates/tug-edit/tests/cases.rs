//! Runs every case under `tests/cases/`: applies the `edit` to the input file and compares the
//! result with `expected.yaml` (exact bytes) or `expected.err` (the exact error message), and,
//! where the case has an `expected.created`, the additions the outcome reports (one a line).
//! `UPDATE_EXPECT=1 cargo test -p tug-edit --test cases` rewrites the expected files after an
//! intentional change; review the diff before keeping it.

mod support;

use similar::TextDiff;
use std::fs;

#[test]
fn edit_cases() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1");
    let cases = support::load_cases();
    assert!(
        cases.len() >= 60,
        "expected at least 60 cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let result = tug_edit::apply(&case.input_name, &case.input, &case.edit);
        let expected_yaml = case.dir.join("expected.yaml");
        let expected_err = case.dir.join("expected.err");
        if update {
            let _ = fs::remove_file(&expected_yaml);
            let _ = fs::remove_file(&expected_err);
            let _ = fs::remove_file(case.dir.join("expected.created"));
            match &result {
                Ok(outcome) => {
                    fs::write(&expected_yaml, &outcome.output).unwrap();
                    if !outcome.created.is_empty() {
                        let lines: String =
                            outcome.created.iter().map(|c| format!("{c}\n")).collect();
                        fs::write(case.dir.join("expected.created"), lines).unwrap();
                    }
                }
                Err(e) => fs::write(&expected_err, format!("{e}\n")).unwrap(),
            }
            continue;
        }
        if let (Ok(want), Ok(outcome)) = (
            fs::read_to_string(case.dir.join("expected.created")),
            &result,
        ) {
            let got: String = outcome.created.iter().map(|c| format!("{c}\n")).collect();
            if got != want {
                failures.push(format!(
                    "{}: created\n  expected: {want:?}\n  actual:   {got:?}",
                    case.name
                ));
            }
        }
        let want_ok = fs::read(&expected_yaml).ok();
        let want_err = fs::read_to_string(&expected_err).ok();
        let got = match &result {
            Ok(outcome) => {
                // A successful edit either changes the file or says it did not.
                if outcome.changed == (outcome.output == case.input) {
                    failures.push(format!(
                        "{}: changed={} but output {} input",
                        case.name,
                        outcome.changed,
                        if outcome.output == case.input {
                            "equals"
                        } else {
                            "differs from"
                        }
                    ));
                }
                String::from_utf8_lossy(&outcome.output).into_owned()
            }
            Err(e) => format!("error: {e}\n"),
        };
        let want = match (&want_ok, &want_err) {
            (Some(bytes), None) => String::from_utf8_lossy(bytes).into_owned(),
            (None, Some(err)) => format!("error: {err}"),
            _ => {
                failures.push(format!(
                    "{}: needs exactly one of expected.yaml and expected.err",
                    case.name
                ));
                continue;
            }
        };
        let exact = match (&result, &want_ok) {
            (Ok(outcome), Some(bytes)) => outcome.output == *bytes,
            _ => got == want,
        };
        if !exact {
            let diff = TextDiff::from_lines(&want, &got)
                .unified_diff()
                .header("expected", "actual")
                .to_string();
            failures.push(format!(
                "{} ({}):\n{}",
                case.name,
                case.edit_line,
                if diff.is_empty() {
                    "(differs only in bytes the diff does not show, e.g. line endings)".to_owned()
                } else {
                    diff
                }
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} edit cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Applying an edit to its own output changes nothing: edits are idempotent, which is what lets
/// the server re-apply requests to a new tip after a rejected push.
#[test]
fn edits_are_idempotent() {
    let mut failures = Vec::new();
    for case in support::load_cases() {
        if matches!(case.edit, tug_edit::Edit::Redeploy { .. }) {
            continue;
        }
        let Ok(first) = tug_edit::apply(&case.input_name, &case.input, &case.edit) else {
            continue;
        };
        match tug_edit::apply(&case.input_name, &first.output, &case.edit) {
            Ok(second) if !second.changed && second.output == first.output => {}
            Ok(second) => failures.push(format!(
                "{}: second run changed the file: {}",
                case.name, second.summary
            )),
            Err(e) => failures.push(format!("{}: second run failed: {e}", case.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "not idempotent:\n{}",
        failures.join("\n")
    );
}

/// Every edit of every case applied to every other case's input either succeeds or is refused
/// with an error; the engine never panics on files it was not written for.
#[test]
fn every_edit_on_every_input_succeeds_or_refuses() {
    let cases = support::load_cases();
    let mut applied = 0;
    for input in &cases {
        for edit in &cases {
            let result = std::panic::catch_unwind(|| {
                tug_edit::apply(&input.input_name, &input.input, &edit.edit)
            });
            assert!(
                result.is_ok(),
                "edit of {} panicked on the input of {}",
                edit.name,
                input.name
            );
            applied += 1;
        }
    }
    assert_eq!(applied, cases.len() * cases.len());
}

/// Every chart-version case's output, read by another YAML reader (serde-saphyr, which resolves
/// scalars by the YAML 1.2 core schema), pins the chart at the intended version as a string:
/// `1.10` or `2` written plain would read back as a number.
#[test]
fn chart_versions_read_back_as_strings() {
    use serde_json::Value;
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in support::load_cases() {
        let tug_edit::Edit::ChartVersion { name, version, .. } = &case.edit else {
            continue;
        };
        let Ok(expected) = fs::read_to_string(case.dir.join("expected.yaml")) else {
            continue;
        };
        checked += 1;
        let docs: Vec<Value> = match serde_saphyr::from_multiple(&expected) {
            Ok(docs) => docs,
            Err(e) => {
                failures.push(format!("{}: does not parse: {e}", case.name));
                continue;
            }
        };
        let mut pinned = Vec::new();
        for doc in &docs {
            for list in ["helmCharts", "dependencies"] {
                for entry in doc[list].as_array().into_iter().flatten() {
                    if entry["name"].as_str() == Some(name.as_str()) {
                        pinned.push(entry["version"].clone());
                    }
                }
            }
            let spec = &doc["spec"]["chart"]["spec"];
            if doc["kind"] == "HelmRelease" && spec["chart"].as_str() == Some(name.as_str()) {
                pinned.push(spec["version"].clone());
            }
        }
        if !pinned.contains(&Value::String(version.clone())) {
            failures.push(format!(
                "{}: {name} is pinned at {pinned:?}, not the string {version:?}",
                case.name
            ));
        }
    }
    assert!(checked >= 15, "only {checked} chart cases were checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
