//! `tug apply SPECS --dir CHECKOUT`: deploy specs applied to a checkout on disk, confined to it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

use util::Dir;

const KUSTOMIZATION: &str = "\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - deployment.yaml
images:
  # the application image, set by CI
  - name: registry.example.com/my-app
    newTag: v1.2.2
";

const VALUES: &str = "\
replicaCount: 1  # scaled by hand
image:
  tag: v1.2.2  # set by CI
";

const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: my-app
spec:
  template:
    metadata:
      labels:
        app: my-app
    spec:
      containers:
        - name: app
          image: registry.example.com/my-app:v1.2.2  # set by CI
";

const HELM_VALUES: &str = "\
image:
  repository: registry.example.com/my-chart-app
  tag: \"0.9\"  # chart default
";

/// The seed's example spec file, word for word.
const SEED_SPECS: &str = "\
- url: https://gitlab.example.invalid/infra/platform
  updates:
  - branch: main
    paths:
    - path: apps/my-app/dev
      kustomize:
        images:
        - name: registry.example.com/my-app
          newName: registry.example.com/my-app
          newTag: v1.2.3
      yq:
      - file: values.yaml
        key: .image.tag
        value: v1.2.3
";

/// A checkout holding the seed's layout.
fn checkout() -> Dir {
    let dir = Dir::new();
    dir.write("repo/apps/my-app/dev/kustomization.yaml", KUSTOMIZATION);
    dir.write("repo/apps/my-app/dev/values.yaml", VALUES);
    dir.write("repo/apps/my-app/dev/deployment.yaml", DEPLOYMENT);
    dir.write("repo/charts/my-app/values.yaml", HELM_VALUES);
    dir
}

fn expected_kustomization(tag: &str) -> String {
    KUSTOMIZATION.replace(
        "    newTag: v1.2.2\n",
        &format!("    newTag: {tag}\n    newName: registry.example.com/my-app\n"),
    )
}

/// Every file of the checkout, to prove nothing was written.
fn snapshot(dir: &Dir) -> Vec<(String, Vec<u8>)> {
    [
        "apps/my-app/dev/kustomization.yaml",
        "apps/my-app/dev/values.yaml",
        "apps/my-app/dev/deployment.yaml",
        "charts/my-app/values.yaml",
    ]
    .iter()
    .map(|p| ((*p).to_owned(), dir.read(&format!("repo/{p}"))))
    .collect()
}

#[test]
fn seed_spec_file_in_yaml() {
    let dir = checkout();
    dir.write("specs.yaml", SEED_SPECS);
    let run = dir.tug(&["apply", "specs.yaml", "--dir", "repo"]).ok();
    let kustomization = dir.read_text("repo/apps/my-app/dev/kustomization.yaml");
    assert_eq!(kustomization, expected_kustomization("v1.2.3"));
    assert_eq!(
        dir.read_text("repo/apps/my-app/dev/values.yaml"),
        VALUES.replace("tag: v1.2.2", "tag: v1.2.3")
    );
    assert_eq!(
        dir.read_text("repo/apps/my-app/dev/deployment.yaml"),
        DEPLOYMENT
    );
    assert_eq!(
        run.stdout,
        "updated apps/my-app/dev/kustomization.yaml\nupdated apps/my-app/dev/values.yaml\n"
    );
    assert_eq!(run.stderr, "");

    // The same specs again change nothing.
    let run = dir.tug(&["apply", "specs.yaml", "--dir", "repo"]).ok();
    assert_eq!(run.stdout, "already up to date\n");
    assert_eq!(
        dir.read_text("repo/apps/my-app/dev/kustomization.yaml"),
        kustomization
    );
}

#[test]
fn seed_spec_file_in_json_with_typed_values() {
    let dir = checkout();
    dir.write(
        "specs.json",
        r#"[{"url": "https://gitlab.example.invalid/infra/platform",
            "updates": [{"branch": "main", "paths": [{
              "path": "apps/my-app/dev",
              "kustomize": {"images": [{"name": "registry.example.com/my-app", "newTag": "v2.0.0"}]},
              "yq": [{"file": "values.yaml", "key": ".replicaCount", "value": 3},
                     {"file": "values.yaml", "key": ".image.tag", "value": "v2.0.0"},
                     {"file": "values.yaml", "key": ".image.pullPolicy", "value": "Always"}]
            }]}]}]"#,
    );
    dir.tug(&["apply", "specs.json", "--dir", "repo"]).ok();
    assert_eq!(
        dir.read_text("repo/apps/my-app/dev/kustomization.yaml"),
        KUSTOMIZATION.replace("newTag: v1.2.2", "newTag: v2.0.0")
    );
    assert_eq!(
        dir.read_text("repo/apps/my-app/dev/values.yaml"),
        "replicaCount: 3  # scaled by hand\nimage:\n  tag: v2.0.0  # set by CI\n  pullPolicy: Always\n"
    );
}

#[test]
fn a_single_spec_object_is_accepted() {
    let dir = checkout();
    dir.write(
        "spec.yaml",
        "url: https://gitlab.example.invalid/infra/platform\nupdates:\n- branch: main\n  paths:\n  - path: apps/my-app/dev\n    yq:\n    - {file: values.yaml, key: .image.tag, value: v9}\n",
    );
    dir.tug(&["apply", "spec.yaml", "--dir", "repo"]).ok();
    assert_eq!(
        dir.read_text("repo/apps/my-app/dev/values.yaml"),
        VALUES.replace("tag: v1.2.2", "tag: v9")
    );
}

#[test]
fn specs_from_standard_input() {
    let dir = checkout();
    dir.tug(&["apply", "-", "--dir", "repo"])
        .stdin(SEED_SPECS)
        .ok();
    assert_eq!(
        dir.read_text("repo/apps/my-app/dev/kustomization.yaml"),
        expected_kustomization("v1.2.3")
    );
}

#[test]
fn tug_extensions_images_helm_and_redeploy() {
    let dir = checkout();
    dir.write(
        "specs.yaml",
        "\
- url: https://gitlab.example.invalid/infra/platform
  updates:
  - branch: main
    paths:
    - path: apps/my-app/dev
      images:
      - name: registry.example.com/my-app
        newTag: v3.0.0
      redeploy:
        file: deployment.yaml
    - path: charts/my-app
      helm:
      - name: registry.example.com/my-chart-app
        newTag: \"1.0\"
",
    );
    let run = dir
        .tug(&[
            "apply",
            "specs.yaml",
            "--dir",
            "repo",
            "--redeploy-value",
            "2026-02-03T04:05:06Z",
        ])
        .ok();
    assert_eq!(
        dir.read_text("repo/apps/my-app/dev/deployment.yaml"),
        DEPLOYMENT
            .replace("my-app:v1.2.2", "my-app:v3.0.0")
            .replace(
                "        app: my-app\n",
                "        app: my-app\n      annotations:\n        tug.dev/redeployed-at: \"2026-02-03T04:05:06Z\"\n"
            )
    );
    assert_eq!(
        dir.read_text("repo/charts/my-app/values.yaml"),
        HELM_VALUES.replace("\"0.9\"", "\"1.0\"")
    );
    // Kustomizations are not manifests: the image edit leaves it alone.
    assert_eq!(
        dir.read_text("repo/apps/my-app/dev/kustomization.yaml"),
        KUSTOMIZATION
    );
    assert_eq!(
        run.stdout,
        "updated apps/my-app/dev/deployment.yaml\nupdated charts/my-app/values.yaml\n"
    );
}

#[test]
fn unknown_field_names_its_path_and_line_and_writes_nothing() {
    let dir = checkout();
    let before = snapshot(&dir);
    dir.write(
        "specs.yaml",
        SEED_SPECS.replace("          newTag: v1.2.3", "          newtag: v1.2.3"),
    );
    let run = dir.tug(&["apply", "specs.yaml", "--dir", "repo"]).fails();
    assert!(
        run.stderr.starts_with(
            "tug: error: specs.yaml:10:11: [0].updates[0].paths[0].kustomize.images[0].newtag: unknown field `newtag`"
        ),
        "{run}"
    );
    assert_eq!(run.stdout, "");
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn unknown_field_in_json_names_its_path() {
    let dir = checkout();
    dir.write(
        "specs.json",
        r#"[{"url": "u", "updates": [{"branch": "main", "pathz": []}]}]"#,
    );
    let run = dir.tug(&["apply", "specs.json", "--dir", "repo"]).fails();
    assert!(run.stderr.starts_with("tug: error: specs.json:1:"), "{run}");
    assert!(
        run.stderr
            .contains("[0].updates[0].pathz: unknown field `pathz`"),
        "{run}"
    );
}

#[test]
fn paths_that_leave_the_repository_are_refused() {
    let dir = checkout();
    let outside = dir.outside("work/values.yaml");
    util::write_file(&outside, VALUES.as_bytes());
    let before = snapshot(&dir);
    let cases = [
        (
            "- path: ../x\n      yq: [{file: values.yaml, key: .a, value: b}]",
            "specs[0].updates[0].paths[0].path: \"../x\" leaves the repository",
        ),
        (
            "- path: /etc\n      yq: [{file: values.yaml, key: .a, value: b}]",
            "specs[0].updates[0].paths[0].path: \"/etc\" is absolute",
        ),
        (
            "- path: apps\n      yq: [{file: ../../values.yaml, key: .a, value: b}]",
            "specs[0].updates[0].paths[0].yq[0].file: \"../../values.yaml\" leaves the repository",
        ),
        (
            "- path: apps/my-app/../../..\n      redeploy: {}",
            "specs[0].updates[0].paths[0].path: \"apps/my-app/../../..\" leaves the repository",
        ),
        (
            "- path: .git\n      yq: [{file: config, key: .a, value: b}]",
            "specs[0].updates[0].paths[0].path: \".git\" points into .git",
        ),
    ];
    for (path, message) in cases {
        dir.write(
            "specs.yaml",
            format!("- url: u\n  updates:\n  - branch: main\n    paths:\n    {path}\n"),
        );
        let run = dir.tug(&["apply", "specs.yaml", "--dir", "repo"]).fails();
        assert!(run.stderr.contains(message), "{message}\n{run}");
        assert_eq!(snapshot(&dir), before);
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), VALUES);
    }
}

#[test]
fn a_symlinked_file_pointing_outside_is_refused() {
    let dir = checkout();
    let target = dir.outside("secret/values.yaml");
    util::write_file(&target, VALUES.as_bytes());
    std::fs::remove_file(dir.path("repo/apps/my-app/dev/values.yaml")).unwrap();
    std::os::unix::fs::symlink(&target, dir.path("repo/apps/my-app/dev/values.yaml")).unwrap();
    let kustomization = dir.read("repo/apps/my-app/dev/kustomization.yaml");
    dir.write("specs.yaml", SEED_SPECS);
    let run = dir.tug(&["apply", "specs.yaml", "--dir", "repo"]).fails();
    assert!(
        run.stderr.contains(
            "specs[0].updates[0].paths[0].yq[0]: apps/my-app/dev/values.yaml: is a symbolic link"
        ),
        "{run}"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), VALUES);
    // The kustomize edit before it in the same spec is not written either.
    assert_eq!(
        dir.read("repo/apps/my-app/dev/kustomization.yaml"),
        kustomization
    );
}

#[test]
fn a_symlinked_directory_is_refused() {
    let dir = checkout();
    let target = dir.outside("elsewhere");
    util::write_file(&target.join("kustomization.yaml"), KUSTOMIZATION.as_bytes());
    util::write_file(&target.join("values.yaml"), VALUES.as_bytes());
    std::fs::remove_dir_all(dir.path("repo/apps/my-app/dev")).unwrap();
    std::os::unix::fs::symlink(&target, dir.path("repo/apps/my-app/dev")).unwrap();
    dir.write("specs.yaml", SEED_SPECS);
    let run = dir.tug(&["apply", "specs.yaml", "--dir", "repo"]).fails();
    assert!(
        run.stderr.contains("apps/my-app/dev: is a symbolic link"),
        "{run}"
    );
    assert_eq!(
        std::fs::read_to_string(target.join("kustomization.yaml")).unwrap(),
        KUSTOMIZATION
    );
    assert_eq!(
        std::fs::read_to_string(target.join("values.yaml")).unwrap(),
        VALUES
    );

    // A link higher up (`apps` itself) is refused as well.
    let dir = checkout();
    let target = dir.outside("apps-elsewhere");
    util::write_file(&target.join("my-app/dev/values.yaml"), VALUES.as_bytes());
    std::fs::remove_dir_all(dir.path("repo/apps")).unwrap();
    std::os::unix::fs::symlink(&target, dir.path("repo/apps")).unwrap();
    dir.write(
        "specs.yaml",
        "- url: u\n  updates:\n  - branch: main\n    paths:\n    - path: apps/my-app/dev\n      yq: [{file: values.yaml, key: .image.tag, value: v9}]\n",
    );
    let run = dir.tug(&["apply", "specs.yaml", "--dir", "repo"]).fails();
    assert!(
        run.stderr
            .contains("apps/my-app/dev/values.yaml: is a symbolic link"),
        "{run}"
    );
    assert_eq!(
        std::fs::read_to_string(target.join("my-app/dev/values.yaml")).unwrap(),
        VALUES
    );
}

#[test]
fn a_checkout_reached_through_a_symlink_is_fine() {
    let dir = checkout();
    std::os::unix::fs::symlink(dir.path("repo"), dir.path("link-to-repo")).unwrap();
    dir.write("specs.yaml", SEED_SPECS);
    dir.tug(&["apply", "specs.yaml", "--dir", "link-to-repo"])
        .ok();
    assert_eq!(
        dir.read_text("repo/apps/my-app/dev/kustomization.yaml"),
        expected_kustomization("v1.2.3")
    );
}

const TWO_REPOSITORIES: &str = "\
- url: https://gitlab.example.invalid/infra/platform
  updates:
  - branch: main
    paths:
    - path: apps/my-app/dev
      yq: [{file: values.yaml, key: .image.tag, value: from-platform}]
- url: https://gitlab.example.invalid/infra/apps
  updates:
  - branch: main
    paths:
    - path: apps/my-app/dev
      yq: [{file: values.yaml, key: .image.tag, value: from-apps}]
";

#[test]
fn specs_for_two_repositories_need_url() {
    let dir = checkout();
    let before = snapshot(&dir);
    dir.write("specs.yaml", TWO_REPOSITORIES);
    let run = dir.tug(&["apply", "specs.yaml", "--dir", "repo"]).fails();
    assert_eq!(
        run.stderr,
        "tug: error: the specs name 2 repositories (https://gitlab.example.invalid/infra/platform, https://gitlab.example.invalid/infra/apps); pick the one checked out in repo with --url\n"
    );
    assert_eq!(snapshot(&dir), before);

    dir.tug(&[
        "apply",
        "specs.yaml",
        "--dir",
        "repo",
        "--url",
        "https://gitlab.example.invalid/infra/apps",
    ])
    .ok();
    assert_eq!(
        dir.read_text("repo/apps/my-app/dev/values.yaml"),
        VALUES.replace("tag: v1.2.2", "tag: from-apps")
    );

    let run = dir
        .tug(&[
            "apply",
            "specs.yaml",
            "--dir",
            "repo",
            "--url",
            "https://gitlab.example.invalid/other",
        ])
        .fails();
    assert_eq!(
        run.stderr,
        "tug: error: specs.yaml: no update matches the given --url/--branch\n"
    );
}

#[test]
fn a_repository_named_twice_is_one_repository() {
    let dir = checkout();
    // platform, apps, platform: still two repositories, each named once in the message.
    let specs = format!(
        "{TWO_REPOSITORIES}{}",
        "- url: https://gitlab.example.invalid/infra/platform\n  updates:\n  - branch: main\n    paths:\n    - path: apps/my-app/dev\n      yq: [{file: values.yaml, key: .replicaCount, value: 2}]\n"
    );
    dir.write("specs.yaml", specs);
    let run = dir.tug(&["apply", "specs.yaml", "--dir", "repo"]).fails();
    assert!(
        run.stderr
            .starts_with("tug: error: the specs name 2 repositories ("),
        "{run}"
    );
    dir.tug(&[
        "apply",
        "specs.yaml",
        "--dir",
        "repo",
        "--url",
        "https://gitlab.example.invalid/infra/platform",
    ])
    .ok();
    // Both of platform's updates, in order, on the one checkout.
    assert_eq!(
        dir.read_text("repo/apps/my-app/dev/values.yaml"),
        "replicaCount: 2  # scaled by hand\nimage:\n  tag: from-platform  # set by CI\n"
    );
}

#[test]
fn specs_for_two_branches_need_branch() {
    let dir = checkout();
    let before = snapshot(&dir);
    dir.write(
        "specs.yaml",
        "\
- url: u
  updates:
  - branch: main
    paths:
    - path: apps/my-app/dev
      yq: [{file: values.yaml, key: .image.tag, value: for-main}]
  - branch: staging
    paths:
    - path: apps/my-app/dev
      yq: [{file: values.yaml, key: .image.tag, value: for-staging}]
",
    );
    let run = dir.tug(&["apply", "specs.yaml", "--dir", "repo"]).fails();
    assert_eq!(
        run.stderr,
        "tug: error: the specs name 2 branches (main, staging); pick the one checked out in repo with --branch\n"
    );
    assert_eq!(snapshot(&dir), before);
    dir.tug(&[
        "apply",
        "specs.yaml",
        "--dir",
        "repo",
        "--branch",
        "staging",
    ])
    .ok();
    assert_eq!(
        dir.read_text("repo/apps/my-app/dev/values.yaml"),
        VALUES.replace("tag: v1.2.2", "tag: for-staging")
    );
}

#[test]
fn dry_run_prints_the_diff_and_writes_nothing() {
    let dir = checkout();
    let before = snapshot(&dir);
    dir.write("specs.yaml", SEED_SPECS);
    let run = dir
        .tug(&["apply", "specs.yaml", "--dir", "repo", "--dry-run"])
        .ok();
    assert_eq!(
        run.stdout,
        "\
--- a/apps/my-app/dev/kustomization.yaml
+++ b/apps/my-app/dev/kustomization.yaml
@@ -5,4 +5,5 @@
 images:
   # the application image, set by CI
   - name: registry.example.com/my-app
-    newTag: v1.2.2
+    newTag: v1.2.3
+    newName: registry.example.com/my-app
--- a/apps/my-app/dev/values.yaml
+++ b/apps/my-app/dev/values.yaml
@@ -1,3 +1,3 @@
 replicaCount: 1  # scaled by hand
 image:
-  tag: v1.2.2  # set by CI
+  tag: v1.2.3  # set by CI
"
    );
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn json_output() {
    let dir = checkout();
    dir.write("specs.yaml", SEED_SPECS);
    let run = dir
        .tug(&["apply", "specs.yaml", "--dir", "repo", "-o", "json"])
        .ok();
    let v = run.json();
    assert_eq!(v["dryRun"], false);
    assert_eq!(
        v["files"],
        serde_json::json!([
            {"path": "apps/my-app/dev/kustomization.yaml", "diff": null},
            {"path": "apps/my-app/dev/values.yaml", "diff": null},
        ])
    );
    assert_eq!(v["updates"], serde_json::json!([]));
    let edits: Vec<&str> = v["edits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(edits.len(), 2, "{v}");
    assert!(
        edits[0].starts_with("apps/my-app/dev/kustomization.yaml: "),
        "{v}"
    );
    assert!(edits[1].starts_with("apps/my-app/dev/values.yaml: "), "{v}");
    assert_eq!(
        v.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["dryRun", "edits", "files", "updates"]
    );
}

#[test]
fn a_failing_edit_writes_nothing() {
    let dir = checkout();
    let before = snapshot(&dir);
    // The first path edits fine; the second names an image no manifest has.
    dir.write(
        "specs.yaml",
        "\
- url: u
  updates:
  - branch: main
    paths:
    - path: charts/my-app
      helm: [{name: registry.example.com/my-chart-app, newTag: \"2.0\"}]
    - path: apps/my-app/dev
      images: [{name: registry.example.com/other, newTag: v1}]
",
    );
    let run = dir.tug(&["apply", "specs.yaml", "--dir", "repo"]).fails();
    assert_eq!(
        run.stderr,
        "tug: error: specs[0].updates[0].paths[1].images[0]: no container image named registry.example.com/other in the manifests of apps/my-app/dev\n"
    );
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn invalid_yaml_in_the_checkout_names_file_line_and_column() {
    let dir = checkout();
    dir.write("repo/apps/my-app/dev/values.yaml", "image: [tag\nx: 1\n");
    dir.write("specs.yaml", SEED_SPECS);
    let run = dir.tug(&["apply", "specs.yaml", "--dir", "repo"]).fails();
    assert!(
        run.stderr.starts_with(
            "tug: error: specs[0].updates[0].paths[0].yq[0]: apps/my-app/dev/values.yaml:2:"
        ),
        "{run}"
    );
    assert_eq!(
        dir.read_text("repo/apps/my-app/dev/kustomization.yaml"),
        KUSTOMIZATION
    );
}

#[test]
fn a_missing_checkout_is_named() {
    let dir = Dir::new();
    dir.write("specs.yaml", SEED_SPECS);
    let run = dir
        .tug(&["apply", "specs.yaml", "--dir", "nowhere"])
        .fails();
    assert!(
        run.stderr
            .starts_with("tug: error: nowhere: cannot open checkout\n"),
        "{run}"
    );
}

#[test]
fn dir_and_push_exclude_each_other() {
    let dir = checkout();
    dir.write("specs.yaml", SEED_SPECS);
    let run = dir
        .tug(&["apply", "specs.yaml", "--dir", "repo", "--push"])
        .run();
    assert_eq!(run.status.code(), Some(2), "{run}");
    let run = dir.tug(&["apply", "specs.yaml"]).run();
    assert_eq!(run.status.code(), Some(2), "{run}");
}

/// A spec file's `chart` list pins chart versions in a checkout: a Chart.yaml dependency chosen
/// by repository, and a version YAML would read as a number written as a string.
#[test]
fn chart_versions_from_a_spec_file() {
    const CHART: &str = "\
apiVersion: v2
name: shop
version: 1.0.0
dependencies:
  - name: common
    version: 2.19.0
    repository: https://charts.bitnami.com/bitnami
  - name: common
    alias: common-next
    version: 2.19.0  # next
    repository: oci://registry-1.docker.io/bitnamicharts
";
    let dir = Dir::new();
    dir.write("repo/charts/shop/Chart.yaml", CHART);
    dir.write(
        "specs.yaml",
        "\
- url: https://gitlab.example.invalid/infra/platform
  updates:
  - branch: main
    paths:
    - path: charts/shop
      chart:
      - name: common
        repository: oci://registry-1.docker.io/bitnamicharts
        version: \"2.20\"
",
    );
    let run = dir.tug(&["apply", "specs.yaml", "--dir", "repo"]).ok();
    assert_eq!(run.stdout, "updated charts/shop/Chart.yaml\n");
    assert_eq!(
        dir.read_text("repo/charts/shop/Chart.yaml"),
        CHART.replace("2.19.0  # next", "\"2.20\"  # next")
    );

    // In a YAML spec file a plain `2.21` is the text as written; in JSON a number would have
    // lost its digits already (2.20 is 2.2), so it is refused naming the field.
    dir.write(
        "plain.yaml",
        "\
- url: https://gitlab.example.invalid/infra/platform
  updates:
  - branch: main
    paths:
    - path: charts/shop
      chart: [{name: common, repository: oci://registry-1.docker.io/bitnamicharts, version: 2.21}]
",
    );
    dir.tug(&["apply", "plain.yaml", "--dir", "repo"]).ok();
    assert_eq!(
        dir.read_text("repo/charts/shop/Chart.yaml"),
        CHART.replace("2.19.0  # next", "\"2.21\"  # next")
    );
    dir.write(
        "number.json",
        r#"{"url": "u", "updates": [{"branch": "main", "paths": [
            {"path": "charts/shop", "chart": [{"name": "common", "version": 2.20}]}]}]}"#,
    );
    let run = dir.tug(&["apply", "number.json", "--dir", "repo"]).run();
    assert_ne!(run.status.code(), Some(0), "{run}");
    assert!(
        run.stderr
            .contains("chart[0].version: invalid type: floating point `2.2`, expected a string"),
        "{run}"
    );
}
