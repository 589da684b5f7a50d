//! Checks the kustomize-image cases against kustomize itself: for every case with an expected
//! kustomization, `kubectl kustomize` renders a Deployment with one container per image name,
//! and the edited image must come out as intended (NAME → NEWNAME:TAG@DIGEST) while every other
//! container renders exactly as it did with the input kustomization. Runs in temp dirs only.

mod support;

use serde_json::{Value, json};
use std::fs;
use std::path::Path;
use std::process::Command;
use tug_edit::{Edit, ImageSpec};

/// Kustomization fields that need no files besides the generated Deployment.
const SELF_CONTAINED_FIELDS: [&str; 9] = [
    "apiVersion",
    "kind",
    "resources",
    "images",
    "namespace",
    "commonLabels",
    "commonAnnotations",
    "labels",
    "namePrefix",
];

const ORIGINAL_TAG: &str = "0.0.0-original";

#[test]
fn kustomize_renders_the_intended_images() {
    // An old kustomize renders some cases differently; say so rather than report a mismatch.
    if let Err(e) = kustomize_is_recent_enough() {
        panic!("{e}");
    }
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in support::load_cases() {
        let Edit::KustomizeImage(spec) = &case.edit else {
            continue;
        };
        let Ok(expected) = fs::read(case.dir.join("expected.yaml")) else {
            continue;
        };
        checked += 1;
        if let Err(e) = check_case(&case.input, &expected, spec) {
            failures.push(format!("{}: {e}", case.name));
        }
    }
    assert!(checked >= 20, "only {checked} kustomize cases were checked");
    assert!(
        failures.is_empty(),
        "kustomize disagrees:\n{}",
        failures.join("\n")
    );
}

/// The manifest-image cases against kustomize's image transformer: rendering the input with a
/// kustomization `images:` entry for the spec must give what rendering tug's output gives
/// without one. Images in `ephemeralContainers` are left out of the comparison: kustomize does
/// not transform them, tug does (a documented divergence).
#[test]
fn kustomize_transforms_manifests_as_tug_edits_them() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in support::load_cases() {
        let Edit::ManifestImage(spec) = &case.edit else {
            continue;
        };
        let Ok(expected) = fs::read(case.dir.join("expected.yaml")) else {
            continue;
        };
        // In a kustomization `*` is a literal tag; tug also matches an already renamed image.
        let text = String::from_utf8_lossy(&case.input);
        if spec.has_placeholder() || !text.contains(spec.name.as_str()) {
            continue;
        }
        checked += 1;
        let mut entry = json!({ "name": spec.name });
        for (key, part) in [
            ("newName", &spec.new_name),
            ("newTag", &spec.new_tag),
            ("digest", &spec.digest),
        ] {
            if let Some(v) = part {
                entry[key] = json!(v);
            }
        }
        let transformed = render_manifest(&case.input, Some(entry));
        let edited = render_manifest(&expected, None);
        match (transformed, edited) {
            (Ok(a), Ok(b)) if a == b => {}
            (Ok(a), Ok(b)) => failures.push(format!(
                "{}: kustomize renders\n{}\nbut tug's output renders\n{}",
                case.name,
                serde_json::to_string_pretty(&a).unwrap_or_default(),
                serde_json::to_string_pretty(&b).unwrap_or_default()
            )),
            (Err(e), _) | (_, Err(e)) => failures.push(format!("{}: {e}", case.name)),
        }
    }
    assert!(checked >= 10, "only {checked} manifest cases were checked");
    assert!(
        failures.is_empty(),
        "kustomize disagrees:\n{}",
        failures.join("\n")
    );
}

/// The redeploy cases on kustomizations, read by kustomize itself: the file tug wrote, byte for
/// byte, renders and puts the annotation with exactly the intended value on the pod template
/// (a key or value YAML reads as something else, such as a `<<` merge key, would not).
#[test]
fn kustomize_reads_the_redeploy_annotation() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in support::load_cases() {
        let Edit::Redeploy { key, value, .. } = &case.edit else {
            continue;
        };
        let Ok(expected) = fs::read(case.dir.join("expected.yaml")) else {
            continue;
        };
        if !tug_edit::is_kustomization(&case.input_name, &case.input) {
            continue;
        }
        checked += 1;
        let result = (|| -> Result<(), String> {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            write_deployment(dir.path(), &["app".to_owned()])?;
            fs::write(dir.path().join("kustomization.yaml"), &expected)
                .map_err(|e| e.to_string())?;
            let out = Command::new("kubectl")
                .arg("kustomize")
                .arg(dir.path())
                .output()
                .map_err(|e| format!("cannot run kubectl: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "kubectl kustomize failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let rendered: Value = serde_saphyr::from_str(&String::from_utf8_lossy(&out.stdout))
                .map_err(|e| format!("rendered output does not parse: {e}"))?;
            let got = &rendered["spec"]["template"]["metadata"]["annotations"][key.as_str()];
            if got.as_str() != Some(value.as_str()) {
                return Err(format!(
                    "annotation {key} rendered as {got}, intended {value:?}"
                ));
            }
            Ok(())
        })();
        if let Err(e) = result {
            failures.push(format!("{}: {e}", case.name));
        }
    }
    assert!(checked >= 4, "only {checked} redeploy cases were checked");
    assert!(
        failures.is_empty(),
        "kustomize disagrees:\n{}",
        failures.join("\n")
    );
}

/// Renders a manifest file through `kubectl kustomize`, with an optional `images:` entry, and
/// returns the resources without their `ephemeralContainers`.
fn render_manifest(manifest: &[u8], image: Option<Value>) -> Result<Vec<Value>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    fs::write(dir.path().join("resources.yaml"), manifest).map_err(|e| e.to_string())?;
    let mut kustomization = json!({ "resources": ["resources.yaml"] });
    if let Some(image) = image {
        kustomization["images"] = json!([image]);
    }
    fs::write(
        dir.path().join("kustomization.yaml"),
        kustomization.to_string(),
    )
    .map_err(|e| e.to_string())?;
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir.path())
        .output()
        .map_err(|e| format!("cannot run kubectl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "kubectl kustomize failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .map_err(|e| format!("rendered output does not parse: {e}"))?;
    docs.iter_mut().for_each(drop_ephemeral_containers);
    Ok(docs)
}

fn drop_ephemeral_containers(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("ephemeralContainers");
            map.values_mut().for_each(drop_ephemeral_containers);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_ephemeral_containers),
        _ => {}
    }
}

fn check_case(input: &[u8], expected: &[u8], spec: &ImageSpec) -> Result<(), String> {
    let expected_doc = parse_kustomization(expected)?;
    let input_doc = parse_kustomization(input)?;
    // One container per image name the kustomization knows, plus the edited one.
    let mut names: Vec<String> = image_entries(&expected_doc)
        .iter()
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect();
    if !names.contains(&spec.name) {
        names.push(spec.name.clone());
    }
    let after = render(expected, &expected_doc, &names)?;
    let before = render(input, &input_doc, &names)?;
    let old_entry = image_entries(&input_doc)
        .into_iter()
        .find(|e| e["name"].as_str() == Some(spec.name.as_str()));
    let intended = intended_image(spec, old_entry.as_ref());
    for (i, name) in names.iter().enumerate() {
        let container = format!("c{i}");
        let got = after
            .get(&container)
            .ok_or(format!("no container {container}"))?;
        if *name == spec.name {
            if *got != intended {
                return Err(format!("{name} rendered as {got}, intended {intended}"));
            }
        } else if before.get(&container) != Some(got) {
            return Err(format!(
                "{name} rendered as {got}, but as {:?} before the edit",
                before.get(&container)
            ));
        }
    }
    Ok(())
}

/// What kustomize should render for the edited image, computed from the spec and the input's
/// entry (whose `newName` tug keeps when the spec has no new name).
fn intended_image(spec: &ImageSpec, old: Option<&Value>) -> String {
    let old_field = |k: &str| old.and_then(|e| e[k].as_str()).map(str::to_owned);
    // `*` stands for the entry's current value of that part (absent when it has none).
    let part = |given: &Option<String>, key: &str| match given.as_deref() {
        Some(tug_edit::PRESERVE) => old_field(key),
        _ => given.clone(),
    };
    let spec = &ImageSpec {
        name: spec.name.clone(),
        new_name: part(&spec.new_name, "newName"),
        new_tag: part(&spec.new_tag, "newTag"),
        digest: part(&spec.digest, "digest"),
    };
    let name = spec
        .new_name
        .clone()
        .or_else(|| old_field("newName"))
        .unwrap_or_else(|| spec.name.clone());
    let (tag, digest) = if spec.new_tag.is_some() || spec.digest.is_some() {
        (spec.new_tag.clone(), spec.digest.clone())
    } else {
        (old_field("newTag"), old_field("digest"))
    };
    let mut out = name;
    match (&tag, &digest) {
        (None, None) => out.push_str(&format!(":{ORIGINAL_TAG}")),
        _ => {
            if let Some(tag) = tag {
                out.push_str(&format!(":{tag}"));
            }
            if let Some(digest) = digest {
                out.push_str(&format!("@{digest}"));
            }
        }
    }
    out
}

fn parse_kustomization(bytes: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    serde_saphyr::from_str::<Value>(text).map_err(|e| format!("kustomization does not parse: {e}"))
}

fn image_entries(doc: &Value) -> Vec<Value> {
    doc["images"].as_array().cloned().unwrap_or_default()
}

/// Runs `kubectl kustomize` on the kustomization and returns container name → image.
fn render(
    bytes: &[u8],
    doc: &Value,
    names: &[String],
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    write_deployment(dir.path(), names)?;
    let object = doc.as_object().ok_or("kustomization is not a mapping")?;
    let self_contained = object
        .keys()
        .all(|k| SELF_CONTAINED_FIELDS.contains(&k.as_str()))
        && doc["resources"] == json!(["deployment.yaml"]);
    if self_contained {
        // The file itself, byte for byte: kustomize reads exactly what tug wrote.
        fs::write(dir.path().join("kustomization.yaml"), bytes).map_err(|e| e.to_string())?;
    } else {
        let mut derived = json!({ "resources": ["deployment.yaml"] });
        for key in ["images", "namespace"] {
            if let Some(v) = doc.get(key) {
                derived[key] = v.clone();
            }
        }
        fs::write(dir.path().join("kustomization.yaml"), derived.to_string())
            .map_err(|e| e.to_string())?;
    }
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir.path())
        .output()
        .map_err(|e| format!("cannot run kubectl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "kubectl kustomize failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let rendered: Value = serde_saphyr::from_str(&String::from_utf8_lossy(&out.stdout))
        .map_err(|e| format!("rendered output does not parse: {e}"))?;
    let containers = rendered["spec"]["template"]["spec"]["containers"]
        .as_array()
        .ok_or("rendered Deployment has no containers")?;
    Ok(containers
        .iter()
        .filter_map(|c| {
            Some((
                c["name"].as_str()?.to_owned(),
                c["image"].as_str()?.to_owned(),
            ))
        })
        .collect())
}

fn write_deployment(dir: &Path, names: &[String]) -> Result<(), String> {
    let containers: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| json!({ "name": format!("c{i}"), "image": format!("{n}:{ORIGINAL_TAG}") }))
        .collect();
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "app" },
        "spec": {
            "selector": { "matchLabels": { "app": "app" } },
            "template": {
                "metadata": { "labels": { "app": "app" } },
                "spec": { "containers": containers }
            }
        }
    });
    fs::write(dir.join("deployment.yaml"), deployment.to_string()).map_err(|e| e.to_string())
}

/// The oldest kustomize whose `images` semantics the cases are checked against.
const MIN_KUSTOMIZE_MAJOR: u64 = 5;

/// `Ok` when `kubectl kustomize` is kustomize v5 or newer; else "kubectl kustomize vX is too
/// old; need ≥ v5" and how to get a newer one.
fn kustomize_is_recent_enough() -> Result<(), String> {
    let out = Command::new("kubectl")
        .args(["version", "--client", "-o", "json"])
        .output()
        .map_err(|e| {
            format!("cannot run kubectl: {e}; the kustomize checks need kubectl ≥ 1.27")
        })?;
    let version = kustomize_version(&String::from_utf8_lossy(&out.stdout))?;
    recent_enough(&version)
}

fn recent_enough(version: &str) -> Result<(), String> {
    let major = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse::<u64>().ok())
        .ok_or_else(|| format!("kubectl reports an unreadable kustomize version {version:?}"))?;
    if major < MIN_KUSTOMIZE_MAJOR {
        return Err(format!(
            "kubectl kustomize {version} is too old; need ≥ v{MIN_KUSTOMIZE_MAJOR} (kubectl ≥ \
             1.27, e.g. from https://dl.k8s.io or the pkgs.k8s.io apt repository; Debian's \
             kubernetes-client is 1.20)"
        ));
    }
    Ok(())
}

/// The kustomize version in `kubectl version --client -o json`. kubectl before 1.24 does not
/// report it: 1.14–1.20 embed kustomize v2.0.3, 1.21 v4.0.5, 1.22 v4.2.0, 1.23 v4.4.1.
fn kustomize_version(json_text: &str) -> Result<String, String> {
    let v: Value = serde_json::from_str(json_text)
        .map_err(|e| format!("`kubectl version --client -o json` is not JSON: {e}"))?;
    if let Some(version) = v["kustomizeVersion"].as_str() {
        return Ok(version.to_owned());
    }
    let minor = v["clientVersion"]["minor"]
        .as_str()
        .map(|m| m.trim_end_matches('+'))
        .and_then(|m| m.parse::<u64>().ok())
        .ok_or("kubectl reports neither its kustomize version nor its own")?;
    Ok(match minor {
        0..=20 => "v2.0.3",
        21 => "v4.0.5",
        22 => "v4.2.0",
        _ => "v4.4.1",
    }
    .to_owned())
}

#[test]
fn the_kustomize_version_is_read_from_old_and_new_kubectl() {
    let new = r#"{"clientVersion": {"major": "1", "minor": "32+"}, "kustomizeVersion": "v5.5.0"}"#;
    assert_eq!(kustomize_version(new).unwrap(), "v5.5.0");
    // Debian's kubernetes-client 1.20 does not name the kustomize it embeds.
    let debian = r#"{"clientVersion": {"major": "1", "minor": "20", "gitVersion": "v1.20.5"}}"#;
    assert_eq!(kustomize_version(debian).unwrap(), "v2.0.3");
    let too_old = recent_enough("v2.0.3").unwrap_err();
    assert!(
        too_old.starts_with("kubectl kustomize v2.0.3 is too old; need ≥ v5"),
        "{too_old}"
    );
    assert!(recent_enough("v5.0.1").is_ok());
}

/// A stand-in for `helm` that kustomize's chart inflation calls: `pull` lays out an empty chart
/// where kustomize asks for it, `template` renders one ConfigMap naming the chart directory,
/// which kustomize names `charts/<chart>-<version>/<chart>` after the version it read.
const HELM_SHIM: &str = r#"#!/bin/sh
case "$1" in
  version) echo "v3.14.0+g0000000";;
  pull)
    while [ $# -gt 0 ]; do
      case "$1" in
        --untardir) shift; dir="$1";;
        --repo|--version) shift;;
        pull|--untar) ;;
        *) chart="${1##*/}";;
      esac
      shift
    done
    mkdir -p "$dir/$chart" &&
      printf 'apiVersion: v2\nname: %s\nversion: 0.0.0\n' "$chart" > "$dir/$chart/Chart.yaml" &&
      echo '{}' > "$dir/$chart/values.yaml";;
  template)
    for arg in "$@"; do case "$arg" in */charts/*) path="$arg";; esac; done
    printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: chart-%s\ndata:\n  path: "%s"\n' "$$" "$path";;
esac
"#;

/// The chart-version cases on kustomizations, read by kustomize itself through a `helm` stand-in:
/// the file tug wrote, byte for byte, makes kustomize pull the intended version of the chart
/// (as a string: a version YAML reads as a number fails kustomize), and every other chart at
/// the version it had before.
#[test]
fn kustomize_pulls_the_intended_chart_versions() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in support::load_cases() {
        let Edit::ChartVersion { name, version, .. } = &case.edit else {
            continue;
        };
        let Ok(expected) = fs::read(case.dir.join("expected.yaml")) else {
            continue;
        };
        if !tug_edit::is_kustomization(&case.input_name, &case.input) {
            continue;
        }
        checked += 1;
        let result = (|| -> Result<(), String> {
            let before = pulled_charts(&case.input)?;
            let mut after = pulled_charts(&expected)?;
            let at = after
                .iter()
                .position(|(chart, v)| chart == name && v.as_deref() == Some(version.as_str()))
                .ok_or_else(|| format!("kustomize pulled {after:?}, not {name} {version}"))?;
            after.remove(at);
            after.sort();
            // Whichever entry of the chart was the target, every other one is as it was.
            let others_kept = (0..before.len())
                .filter(|&i| before[i].0 == *name)
                .any(|i| {
                    let mut rest = before.clone();
                    rest.remove(i);
                    rest.sort();
                    rest == after
                });
            if !others_kept {
                return Err(format!(
                    "the other charts changed: {before:?} before, {after:?} besides {name} after"
                ));
            }
            Ok(())
        })();
        if let Err(e) = result {
            failures.push(format!("{}: {e}", case.name));
        }
    }
    assert!(checked >= 8, "only {checked} chart cases were checked");
    assert!(
        failures.is_empty(),
        "kustomize disagrees:\n{}",
        failures.join("\n")
    );
}

/// Runs `kubectl kustomize --enable-helm` on a kustomization with the helm stand-in; returns the
/// charts it pulled, each with the version kustomize read (`None`: unpinned).
fn pulled_charts(kustomization: &[u8]) -> Result<Vec<(String, Option<String>)>, String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let helm = dir.path().join("helm");
    fs::write(&helm, HELM_SHIM).map_err(|e| e.to_string())?;
    fs::set_permissions(&helm, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    let root = dir.path().join("app");
    fs::create_dir(&root).map_err(|e| e.to_string())?;
    fs::write(root.join("kustomization.yaml"), kustomization).map_err(|e| e.to_string())?;
    let out = Command::new("kubectl")
        .args(["kustomize", "--enable-helm", "--helm-command"])
        .arg(&helm)
        .arg(&root)
        .output()
        .map_err(|e| format!("cannot run kubectl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "kubectl kustomize failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let docs: Vec<Value> = serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout))
        .map_err(|e| format!("rendered output does not parse: {e}"))?;
    docs.iter()
        .filter_map(|d| d["data"]["path"].as_str())
        .map(|path| {
            // …/charts/<chart>-<version>/<chart>, or …/charts/<chart> when unpinned.
            let rest = path
                .split_once("/charts/")
                .map(|(_, rest)| rest)
                .ok_or_else(|| format!("unexpected chart path {path}"))?;
            Ok(match rest.rsplit_once('/') {
                Some((pulled, chart)) => (
                    chart.to_owned(),
                    pulled
                        .strip_prefix(chart)
                        .and_then(|v| v.strip_prefix('-'))
                        .map(str::to_owned),
                ),
                None => (rest.to_owned(), None),
            })
        })
        .collect()
}
