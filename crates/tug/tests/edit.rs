//! `tug edit …` on files on disk: the file holds exactly the expected bytes afterwards, or is
//! untouched when tug refuses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

use std::os::unix::fs::MetadataExt;

use util::Dir;

const KUSTOMIZATION: &str = "\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - deployment.yaml
images:
  - name: registry.example.com/team/web
    newTag: \"1.0.0\"  # release tag
";

const DEPLOYMENT: &str = "\
# the web deployment
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3  # scaled by HPA
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
          image: registry.example.com/team/web:1.0.0  # deployed by CI
        - name: sidecar
          image: registry.example.com/team/sidecar:2.0.0
";

const VALUES: &str = "\
# Default values for web.
replicaCount: 1

image:
  repository: registry.example.com/team/web
  pullPolicy: IfNotPresent
  # Overrides the image tag whose default is the chart appVersion.
  tag: \"1.19\"

podAnnotations: {}
";

/// Inode and modification time: a rewrite through a temporary file changes the inode, any write
/// changes the mtime.
fn identity(path: &std::path::Path) -> (u64, i64, i64) {
    let m = std::fs::metadata(path).unwrap();
    (m.ino(), m.mtime(), m.mtime_nsec())
}

fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tug-"))
        .collect()
}

#[test]
fn image_in_a_kustomization_directory() {
    let dir = Dir::new();
    dir.write("apps/web/kustomization.yaml", KUSTOMIZATION);
    dir.write("apps/web/deployment.yaml", DEPLOYMENT);
    let run = dir
        .tug(&[
            "edit",
            "image",
            "apps/web",
            "registry.example.com/team/web:1.2.3",
        ])
        .ok();
    assert_eq!(
        dir.read_text("apps/web/kustomization.yaml"),
        KUSTOMIZATION.replace("1.0.0", "1.2.3")
    );
    // The manifest is left to kustomize.
    assert_eq!(dir.read_text("apps/web/deployment.yaml"), DEPLOYMENT);
    assert_eq!(
        run.stdout,
        "apps/web/kustomization.yaml: set image registry.example.com/team/web to registry.example.com/team/web:1.2.3\n"
    );
    assert_eq!(run.stderr, "");
    assert!(leftovers(&dir.path("apps/web")).is_empty());
}

#[test]
fn image_in_a_directory_finds_every_kustomization_name() {
    for name in ["kustomization.yml", "Kustomization"] {
        let dir = Dir::new();
        dir.write(&format!("app/{name}"), KUSTOMIZATION);
        dir.tug(&[
            "edit",
            "image",
            "app",
            "registry.example.com/team/web:2.0.0",
        ])
        .ok();
        assert_eq!(
            dir.read_text(&format!("app/{name}")),
            KUSTOMIZATION.replace("1.0.0", "2.0.0"),
            "{name}"
        );
    }
}

#[test]
fn image_in_a_directory_without_kustomization_is_refused() {
    let dir = Dir::new();
    dir.write("app/deployment.yaml", DEPLOYMENT);
    let run = dir
        .tug(&[
            "edit",
            "image",
            "app",
            "registry.example.com/team/web:2.0.0",
        ])
        .fails();
    assert_eq!(
        run.stderr,
        "tug: error: app: no kustomization file (looked for kustomization.yaml, kustomization.yml, Kustomization)\n"
    );
    assert_eq!(dir.read_text("app/deployment.yaml"), DEPLOYMENT);
}

#[test]
fn image_in_a_manifest_file() {
    let dir = Dir::new();
    dir.write("deployment.yaml", DEPLOYMENT);
    let run = dir
        .tug(&[
            "edit",
            "image",
            "deployment.yaml",
            "registry.example.com/team/web:1.2.3",
        ])
        .ok();
    assert_eq!(
        dir.read_text("deployment.yaml"),
        DEPLOYMENT.replace("web:1.0.0", "web:1.2.3")
    );
    assert!(run.stdout.starts_with("deployment.yaml: "), "{run}");
}

#[test]
fn helm_image_sets_the_tag_of_the_values_file() {
    let dir = Dir::new();
    dir.write("values.yaml", VALUES);
    dir.tug(&[
        "edit",
        "helm-image",
        "values.yaml",
        "registry.example.com/team/web:1.20.1",
    ])
    .ok();
    assert_eq!(
        dir.read_text("values.yaml"),
        VALUES.replace("\"1.19\"", "\"1.20.1\"")
    );
}

#[test]
fn helm_image_with_another_key() {
    let dir = Dir::new();
    let values = "web:\n  image: registry.example.com/team/web:1.0  # pinned\n";
    dir.write("values.yaml", values);
    dir.tug(&[
        "edit",
        "helm-image",
        "values.yaml",
        "registry.example.com/team/web:1.1",
        "--key",
        ".web.image",
    ])
    .ok();
    assert_eq!(
        dir.read_text("values.yaml"),
        "web:\n  image: registry.example.com/team/web:1.1  # pinned\n"
    );
}

#[test]
fn set_detects_the_type_unless_told() {
    let dir = Dir::new();
    dir.write("values.yaml", VALUES);
    dir.tug(&["edit", "set", "values.yaml", ".replicaCount", "3"])
        .ok();
    assert_eq!(
        dir.read_text("values.yaml"),
        VALUES.replace("replicaCount: 1", "replicaCount: 3")
    );
    // `--type string` keeps a number-looking value a string.
    dir.tug(&[
        "edit",
        "set",
        "values.yaml",
        ".replicaCount",
        "4",
        "--type",
        "string",
    ])
    .ok();
    assert_eq!(
        dir.read_text("values.yaml"),
        VALUES.replace("replicaCount: 1", "replicaCount: \"4\"")
    );
    let before = dir.read("values.yaml");
    let run = dir
        .tug(&[
            "edit",
            "set",
            "values.yaml",
            ".replicaCount",
            "many",
            "--type",
            "number",
        ])
        .fails();
    assert!(run.stderr.contains("values.yaml"), "{run}");
    assert!(run.stderr.contains("\"many\""), "{run}");
    assert_eq!(dir.read("values.yaml"), before);
}

#[test]
fn set_creates_missing_keys() {
    let dir = Dir::new();
    dir.write("values.yaml", "image:\n  repository: app  # the app\n");
    dir.tug(&["edit", "set", "values.yaml", ".image.tag", "v2"])
        .ok();
    assert_eq!(
        dir.read_text("values.yaml"),
        "image:\n  repository: app  # the app\n  tag: v2\n"
    );
}

#[test]
fn redeploy_writes_the_given_value() {
    let dir = Dir::new();
    dir.write("deployment.yaml", DEPLOYMENT);
    let run = dir
        .tug(&[
            "edit",
            "redeploy",
            "deployment.yaml",
            "--value",
            "2026-01-01T00:00:00Z",
        ])
        .ok();
    assert_eq!(
        dir.read_text("deployment.yaml"),
        DEPLOYMENT.replace(
            "        app: web\n",
            "        app: web\n      annotations:\n        tug.dev/redeployed-at: \"2026-01-01T00:00:00Z\"\n"
        )
    );
    assert!(run.stdout.starts_with("deployment.yaml: "), "{run}");
}

#[test]
fn redeploy_with_workload_and_annotation() {
    let dir = Dir::new();
    dir.write("deployment.yaml", DEPLOYMENT);
    let run = dir
        .tug(&[
            "edit",
            "redeploy",
            "deployment.yaml",
            "--workload",
            "api",
            "--value",
            "x",
        ])
        .fails();
    assert!(run.stderr.contains("api"), "{run}");
    assert_eq!(dir.read_text("deployment.yaml"), DEPLOYMENT);

    dir.tug(&[
        "edit",
        "redeploy",
        "deployment.yaml",
        "--workload",
        "web",
        "--annotation",
        "example.com/restarted",
        "--value",
        "7",
    ])
    .ok();
    assert_eq!(
        dir.read_text("deployment.yaml"),
        DEPLOYMENT.replace(
            "        app: web\n",
            "        app: web\n      annotations:\n        example.com/restarted: \"7\"\n"
        )
    );
}

#[test]
fn redeploy_without_value_writes_the_current_time() {
    let dir = Dir::new();
    dir.write("deployment.yaml", DEPLOYMENT);
    dir.tug(&["edit", "redeploy", "deployment.yaml"]).ok();
    let text = dir.read_text("deployment.yaml");
    let line = text
        .lines()
        .find(|l| l.contains("tug.dev/redeployed-at"))
        .unwrap();
    let value = line
        .trim()
        .strip_prefix("tug.dev/redeployed-at: \"")
        .and_then(|v| v.strip_suffix('"'))
        .unwrap();
    let stamp: jiff::Timestamp = value.parse().unwrap();
    let age = jiff::Timestamp::now().duration_since(stamp);
    assert!(age.as_secs() >= 0 && age.as_secs() < 300, "{value}");
}

#[test]
fn dry_run_prints_a_unified_diff_and_writes_nothing() {
    let dir = Dir::new();
    let file = dir.write("values.yaml", VALUES);
    let before = identity(&file);
    let run = dir
        .tug(&[
            "edit",
            "set",
            "values.yaml",
            ".image.tag",
            "1.20",
            "--dry-run",
        ])
        .ok();
    assert_eq!(
        run.stdout,
        "\
--- a/values.yaml
+++ b/values.yaml
@@ -5,6 +5,6 @@
   repository: registry.example.com/team/web
   pullPolicy: IfNotPresent
   # Overrides the image tag whose default is the chart appVersion.
-  tag: \"1.19\"
+  tag: \"1.20\"
 
 podAnnotations: {}
"
    );
    assert_eq!(dir.read_text("values.yaml"), VALUES);
    assert_eq!(identity(&file), before);
}

#[test]
fn json_output() {
    let dir = Dir::new();
    dir.write("values.yaml", VALUES);
    let run = dir
        .tug(&[
            "edit",
            "set",
            "values.yaml",
            ".image.tag",
            "1.20",
            "-o",
            "json",
        ])
        .ok();
    let v = run.json();
    assert_eq!(
        v,
        serde_json::json!({
            "file": "values.yaml",
            "changed": true,
            "summary": v["summary"],
            "dryRun": false,
            "diff": null,
        })
    );
    assert!(v["summary"].as_str().unwrap().contains(".image.tag"), "{v}");

    let run = dir
        .tug(&[
            "edit",
            "set",
            "values.yaml",
            ".image.tag",
            "1.21",
            "--output",
            "json",
            "--dry-run",
        ])
        .ok();
    let v = run.json();
    assert_eq!(v["changed"], true);
    assert_eq!(v["dryRun"], true);
    let diff = v["diff"].as_str().unwrap();
    assert!(
        diff.starts_with("--- a/values.yaml\n+++ b/values.yaml\n"),
        "{diff}"
    );
    assert!(
        diff.contains("\n-  tag: \"1.20\"\n+  tag: \"1.21\"\n"),
        "{diff}"
    );

    // Up to date: nothing changed, no diff.
    let run = dir
        .tug(&[
            "edit",
            "set",
            "values.yaml",
            ".image.tag",
            "1.20",
            "-o",
            "json",
        ])
        .ok();
    let v = run.json();
    assert_eq!(v["changed"], false);
    assert_eq!(v["diff"], serde_json::Value::Null);
}

#[test]
fn invalid_yaml_is_refused_with_its_position() {
    let dir = Dir::new();
    let broken = "resources: [deployment.yaml\nimages:\n- name: app\n";
    let file = dir.write("kustomization.yaml", broken);
    let before = identity(&file);
    let run = dir
        .tug(&["edit", "image", "kustomization.yaml", "app:1.1"])
        .fails();
    assert_eq!(
        run.stderr,
        "tug: error: kustomization.yaml:2:7: invalid YAML: illegal placement of ':' indicator\n"
    );
    assert_eq!(run.stdout, "");
    assert_eq!(dir.read_text("kustomization.yaml"), broken);
    assert_eq!(identity(&file), before);
}

#[test]
fn path_syntax_error_is_refused() {
    let dir = Dir::new();
    let file = dir.write("values.yaml", VALUES);
    let before = identity(&file);
    let run = dir
        .tug(&["edit", "set", "values.yaml", ".image..tag", "1"])
        .fails();
    assert_eq!(
        run.stderr,
        "tug: error: values.yaml: invalid path \".image..tag\" at column 8: expected a key after '.'\n"
    );
    assert_eq!(dir.read_text("values.yaml"), VALUES);
    assert_eq!(identity(&file), before);
}

#[test]
fn unknown_image_is_refused() {
    let dir = Dir::new();
    let file = dir.write("deploy/deployment.yaml", DEPLOYMENT);
    let before = identity(&file);
    let run = dir
        .tug(&[
            "edit",
            "image",
            "deploy/deployment.yaml",
            "registry.example.com/team/api:1",
        ])
        .fails();
    assert_eq!(
        run.stderr,
        "tug: error: deploy/deployment.yaml: no container image has repository registry.example.com/team/api (found only registry.example.com/team/web, registry.example.com/team/sidecar)\n"
    );
    assert_eq!(dir.read_text("deploy/deployment.yaml"), DEPLOYMENT);
    assert_eq!(identity(&file), before);
}

#[test]
fn bad_image_spec_is_a_clear_error() {
    let dir = Dir::new();
    dir.write("kustomization.yaml", KUSTOMIZATION);
    let run = dir
        .tug(&["edit", "image", "kustomization.yaml", "Registry/UPPER:1"])
        .fails();
    assert!(
        run.stderr
            .starts_with("tug: error: image spec \"Registry/UPPER:1\""),
        "{run}"
    );
    assert_eq!(dir.read_text("kustomization.yaml"), KUSTOMIZATION);
}

#[test]
fn missing_file_is_named() {
    let dir = Dir::new();
    let run = dir.tug(&["edit", "set", "nope.yaml", ".a", "1"]).fails();
    assert!(
        run.stderr
            .starts_with("tug: error: nope.yaml: cannot read\n"),
        "{run}"
    );
    assert!(!dir.path("nope.yaml").exists());
}

#[test]
fn permissions_survive_the_atomic_write() {
    let dir = Dir::new();
    let file = dir.write("values.yaml", VALUES);
    dir.set_mode("values.yaml", 0o640);
    let (inode, _, _) = identity(&file);
    dir.tug(&["edit", "set", "values.yaml", ".image.tag", "1.20"])
        .ok();
    assert_eq!(dir.mode("values.yaml"), 0o640);
    assert_eq!(
        dir.read_text("values.yaml"),
        VALUES.replace("\"1.19\"", "\"1.20\"")
    );
    // Replaced through a temporary file (a reader never sees half a file), none left behind.
    assert_ne!(identity(&file).0, inode);
    assert!(leftovers(&dir.work()).is_empty());

    dir.set_mode("values.yaml", 0o755);
    dir.tug(&["edit", "set", "values.yaml", ".image.tag", "1.21"])
        .ok();
    assert_eq!(dir.mode("values.yaml"), 0o755);
}

#[test]
fn crlf_and_byte_order_mark_are_kept() {
    let dir = Dir::new();
    let original = b"\xef\xbb\xbfimage:\r\n  repository: app\r\n  tag: v1  # pinned\r\nother: 1";
    dir.write("values.yaml", original);
    dir.tug(&["edit", "set", "values.yaml", ".image.tag", "v2"])
        .ok();
    assert_eq!(
        dir.read("values.yaml"),
        b"\xef\xbb\xbfimage:\r\n  repository: app\r\n  tag: v2  # pinned\r\nother: 1"
    );

    let kustomization = KUSTOMIZATION.replace('\n', "\r\n");
    dir.write("k/kustomization.yaml", format!("\u{feff}{kustomization}"));
    dir.tug(&["edit", "image", "k", "registry.example.com/team/web:3.0.0"])
        .ok();
    assert_eq!(
        dir.read_text("k/kustomization.yaml"),
        format!("\u{feff}{}", kustomization.replace("1.0.0", "3.0.0"))
    );
}

#[test]
fn no_change_means_no_write() {
    let dir = Dir::new();
    let file = dir.write("apps/web/kustomization.yaml", KUSTOMIZATION);
    let before = identity(&file);
    let run = dir
        .tug(&[
            "edit",
            "image",
            "apps/web",
            "registry.example.com/team/web:1.0.0",
        ])
        .ok();
    assert_eq!(
        run.stdout,
        "apps/web/kustomization.yaml: already up to date\n"
    );
    assert_eq!(identity(&file), before);
    assert_eq!(dir.read_text("apps/web/kustomization.yaml"), KUSTOMIZATION);

    let run = dir
        .tug(&[
            "edit",
            "image",
            "apps/web",
            "registry.example.com/team/web:1.0.0",
            "--dry-run",
        ])
        .ok();
    assert_eq!(
        run.stdout,
        "apps/web/kustomization.yaml: already up to date\n"
    );
}

#[test]
fn absolute_paths_work_from_any_directory() {
    let dir = Dir::new();
    let file = dir.write("values.yaml", VALUES);
    let elsewhere = dir.outside("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let run = dir
        .tug(&["edit", "set"])
        .arg(&file)
        .arg(".replicaCount")
        .arg("2")
        .run();
    assert!(run.status.success(), "{run}");
    assert_eq!(
        dir.read_text("values.yaml"),
        VALUES.replace("replicaCount: 1", "replicaCount: 2")
    );
    assert!(
        run.stdout.starts_with(&format!("{}: ", file.display())),
        "{run}"
    );
}

#[test]
fn editing_through_a_symlink_keeps_the_link() {
    let dir = Dir::new();
    dir.write("shared/values.yaml", VALUES);
    std::os::unix::fs::symlink("shared/values.yaml", dir.path("values.yaml")).unwrap();
    dir.tug(&["edit", "set", "values.yaml", ".replicaCount", "5"])
        .ok();
    assert!(
        std::fs::symlink_metadata(dir.path("values.yaml"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link was replaced by a copy"
    );
    assert_eq!(
        dir.read_text("shared/values.yaml"),
        VALUES.replace("replicaCount: 1", "replicaCount: 5")
    );
}

#[test]
fn usage_errors_exit_with_status_2() {
    let dir = Dir::new();
    let run = dir.tug(&["edit", "set", "values.yaml"]).run();
    assert_eq!(run.status.code(), Some(2), "{run}");
    assert!(run.stderr.contains("Usage:"), "{run}");
    let run = dir
        .tug(&["edit", "set", "values.yaml", ".a", "1", "--type", "date"])
        .run();
    assert_eq!(run.status.code(), Some(2), "{run}");
}

#[test]
fn image_placeholders_keep_the_current_parts() {
    let dir = Dir::new();
    let kustomization = "images:\n- name: app\n  newName: mirror.local/app\n  newTag: \"1.0\"\n";
    dir.write("kustomization.yaml", kustomization);
    dir.tug(&["edit", "image", "kustomization.yaml", "app=*:1.1"])
        .ok();
    assert_eq!(
        dir.read_text("kustomization.yaml"),
        kustomization.replace("1.0", "1.1")
    );
    dir.write("deployment.yaml", DEPLOYMENT);
    dir.tug(&[
        "edit",
        "image",
        "deployment.yaml",
        "registry.example.com/team/web=mirror.local/web:*",
    ])
    .ok();
    assert_eq!(
        dir.read_text("deployment.yaml"),
        DEPLOYMENT.replace(
            "registry.example.com/team/web:1.0.0",
            "mirror.local/web:1.0.0"
        )
    );
}

#[test]
fn set_reads_null_and_integer_spellings_as_yaml_1_2_does() {
    let dir = Dir::new();
    dir.write("values.yaml", "a: 1\nb: 2\nc: 3\n");
    dir.tug(&["edit", "set", "values.yaml", ".a", "Null", "--type", "null"])
        .ok();
    dir.tug(&[
        "edit",
        "set",
        "values.yaml",
        ".b",
        "0o17",
        "--type",
        "number",
    ])
    .ok();
    dir.tug(&["edit", "set", "values.yaml", ".c", "0x1A"]).ok();
    assert_eq!(dir.read_text("values.yaml"), "a: null\nb: 15\nc: 0x1A\n");
}

#[test]
fn set_in_a_comment_only_file_creates_the_mapping() {
    let dir = Dir::new();
    dir.write("values.yaml", "# prod overrides\n");
    dir.tug(&["edit", "set", "values.yaml", ".apple", "tree"])
        .ok();
    assert_eq!(
        dir.read_text("values.yaml"),
        "# prod overrides\napple: tree\n"
    );
}

#[test]
fn helm_image_name_layout_is_matched_and_renamed() {
    let dir = Dir::new();
    let values = "image:\n  name: docker.io/bitnami/nginx\n  tag: v0.0.0\n";
    dir.write("values.yaml", values);
    let run = dir
        .tug(&["edit", "helm-image", "values.yaml", "wrong/image:v1.0.0"])
        .fails();
    assert!(
        run.stderr
            .contains(".image.name is docker.io/bitnami/nginx, not wrong/image"),
        "{run}"
    );
    assert_eq!(dir.read_text("values.yaml"), values);
    dir.tug(&[
        "edit",
        "helm-image",
        "values.yaml",
        "docker.io/bitnami/nginx=mirror.local/nginx:v1.0.0",
    ])
    .ok();
    assert_eq!(
        dir.read_text("values.yaml"),
        "image:\n  name: mirror.local/nginx\n  tag: v1.0.0\n"
    );
}

#[test]
fn merge_key_annotations_and_duplicate_keys_are_refused() {
    let dir = Dir::new();
    dir.write("kustomization.yaml", KUSTOMIZATION);
    let run = dir
        .tug(&[
            "edit",
            "redeploy",
            "kustomization.yaml",
            "--annotation",
            "<<",
            "--value",
            "x",
        ])
        .fails();
    assert!(
        run.stderr.contains("invalid annotation key \"<<\""),
        "{run}"
    );
    assert_eq!(dir.read_text("kustomization.yaml"), KUSTOMIZATION);
    let values = "image:\n  tag: v1\n  tag: v2\n";
    dir.write("values.yaml", values);
    let run = dir
        .tug(&["edit", "set", "values.yaml", ".image.tag", "v3"])
        .fails();
    assert!(
        run.stderr
            .contains("values.yaml:3:3: duplicate key \"tag\" (first on line 2)"),
        "{run}"
    );
    assert_eq!(dir.read_text("values.yaml"), values);
}

const CHART_KUSTOMIZATION: &str = "\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
helmCharts:
  - name: podinfo
    repo: https://stefanprodan.github.io/podinfo
    version: 6.5.0  # bumped by CI
    releaseName: podinfo
";

const CHART_YAML: &str = "\
apiVersion: v2
name: shop
version: 1.4.0
dependencies:
  - name: common
    version: \"2.19.0\"
    repository: https://charts.bitnami.com/bitnami
  - name: common
    alias: common-next
    version: 2.19.0
    repository: oci://registry-1.docker.io/bitnamicharts
";

const HELM_RELEASES: &str = "\
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata:
  name: podinfo
spec:
  url: https://stefanprodan.github.io/podinfo
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: podinfo
spec:
  chart:
    spec:
      chart: podinfo
      version: 6.5.0
      sourceRef: {kind: HelmRepository, name: podinfo}
";

#[test]
fn chart_version_in_a_kustomization_is_quoted_when_yaml_would_read_a_number() {
    let dir = Dir::new();
    dir.write("apps/web/kustomization.yaml", CHART_KUSTOMIZATION);
    let run = dir
        .tug(&[
            "edit",
            "chart",
            "apps/web/kustomization.yaml",
            "podinfo",
            "6.10",
        ])
        .ok();
    assert_eq!(
        dir.read_text("apps/web/kustomization.yaml"),
        CHART_KUSTOMIZATION.replace("6.5.0", "\"6.10\"")
    );
    assert_eq!(
        run.stdout,
        "apps/web/kustomization.yaml: set chart podinfo to version 6.10\n"
    );
    assert!(leftovers(&dir.path("apps/web")).is_empty());
    // The same bump again changes nothing.
    let again = dir
        .tug(&[
            "edit",
            "chart",
            "apps/web/kustomization.yaml",
            "podinfo",
            "6.10",
        ])
        .ok();
    assert_eq!(
        again.stdout,
        "apps/web/kustomization.yaml: already up to date\n"
    );
}

#[test]
fn chart_dependency_is_chosen_by_repository() {
    let dir = Dir::new();
    let file = dir.write("charts/shop/Chart.yaml", CHART_YAML);
    let before = identity(&file);
    let run = dir
        .tug(&[
            "edit",
            "chart",
            "charts/shop/Chart.yaml",
            "common",
            "2.20.0",
        ])
        .fails();
    assert_eq!(
        run.stderr,
        "tug: error: charts/shop/Chart.yaml:5:5: 2 charts named common match: dependencies entry common (repository https://charts.bitnami.com/bitnami), dependencies entry common (repository oci://registry-1.docker.io/bitnamicharts); name the repository (repository) to choose one\n"
    );
    assert_eq!(identity(&file), before);
    dir.tug(&[
        "edit",
        "chart",
        "charts/shop/Chart.yaml",
        "common",
        "2.20.0",
        "--repository",
        "oci://registry-1.docker.io/bitnamicharts",
    ])
    .ok();
    assert_eq!(
        dir.read_text("charts/shop/Chart.yaml"),
        CHART_YAML.replace("    version: 2.19.0\n", "    version: 2.20.0\n")
    );
}

#[test]
fn chart_in_a_directory_is_the_one_file_that_pins_it() {
    let dir = Dir::new();
    // A Flux layout: the kustomization only lists the HelmRelease.
    dir.write(
        "apps/web/kustomization.yaml",
        "resources:\n  - releases.yaml\n",
    );
    dir.write("apps/web/releases.yaml", HELM_RELEASES);
    let run = dir
        .tug(&["edit", "chart", "apps/web", "podinfo", "6.6.0", "--dry-run"])
        .ok();
    assert!(
        run.stdout
            .contains("-      version: 6.5.0\n+      version: 6.6.0\n"),
        "{run}"
    );
    assert_eq!(dir.read_text("apps/web/releases.yaml"), HELM_RELEASES);
    let run = dir
        .tug(&[
            "edit", "chart", "apps/web", "podinfo", "6.6.0", "-o", "json",
        ])
        .ok();
    let v = run.json();
    assert_eq!(v["file"], "apps/web/releases.yaml", "{v}");
    assert_eq!(v["changed"], true, "{v}");
    assert_eq!(
        dir.read_text("apps/web/releases.yaml"),
        HELM_RELEASES.replace("6.5.0", "6.6.0")
    );

    let run = dir
        .tug(&["edit", "chart", "apps/web", "redis", "19.0.0"])
        .fails();
    assert_eq!(
        run.stderr,
        "tug: error: no chart redis in web: web/kustomization.yaml: no chart redis: the kustomization has no helmCharts entries; web/releases.yaml: no chart redis in the HelmReleases of the file (found podinfo)\n"
    );
}

#[test]
fn chart_version_that_is_no_version_is_refused() {
    let dir = Dir::new();
    dir.write("kustomization.yaml", CHART_KUSTOMIZATION);
    let run = dir
        .tug(&[
            "edit",
            "chart",
            "kustomization.yaml",
            "podinfo",
            "6.6.0\nx: y",
        ])
        .fails();
    assert_eq!(
        run.stderr,
        "tug: error: kustomization.yaml: invalid chart version \"6.6.0\\nx: y\": it holds a line break or another control character\n"
    );
    assert_eq!(dir.read_text("kustomization.yaml"), CHART_KUSTOMIZATION);
}
