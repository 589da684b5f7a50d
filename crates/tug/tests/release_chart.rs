//! Releases of a service whose environments pin a Helm chart (`edit: {kind: chart}`): CI records
//! the chart version it published with `tug artifact add chart`, a release pins it in dev (a
//! kustomization's `helmCharts`) and a promotion in staging (a Flux HelmRelease listed by the
//! environment's kustomization), through a real `tug server` and a real bare repository.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Output, Stdio};

use sha2::{Digest, Sha256};
use tug_testkit::{BareRepo, Scratch, TugServer};

const TOKEN: &str = "tug_test_chart_release_0123456789";

const DEV: &str = "\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
helmCharts:
  - name: podinfo
    repo: oci://ghcr.io/stefanprodan/charts
    version: 6.5.0  # released by tug
    releaseName: podinfo
";

const STAGING_RELEASE: &str = "\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: podinfo
spec:
  chart:
    spec:
      chart: podinfo
      version: '6.5.0'
      sourceRef: {kind: HelmRepository, name: podinfo}
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
            ("apps/podinfo/dev/kustomization.yaml", DEV.as_bytes()),
            (
                "apps/podinfo/staging/kustomization.yaml",
                b"resources:\n  - helmrelease.yaml\n",
            ),
            (
                "apps/podinfo/staging/helmrelease.yaml",
                STAGING_RELEASE.as_bytes(),
            ),
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
services:
  - name: podinfo
    path: "apps/{{service}}/{{env}}"
    edit: {{ kind: chart }}
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

    fn read(&self, path: &str) -> String {
        String::from_utf8(self.repo.read_file("main", path).unwrap().unwrap()).unwrap()
    }

    fn artifact(&self, id: &str, version: Option<&str>) {
        self.ok(&[
            "artifact",
            "init",
            "--service",
            "podinfo",
            "--id",
            id,
            "--branch",
            "main",
        ]);
        if let Some(version) = version {
            self.ok(&[
                "artifact",
                "add",
                "chart",
                "--name",
                "podinfo",
                "--version",
                version,
            ]);
        }
        self.ok(&["artifact", "push"]);
    }
}

#[test]
fn a_chart_release_pins_the_artifact_chart_version_in_each_layout() {
    let w = World::start();
    w.artifact("main-1", Some("6.10"));
    let artifact = std::fs::read_to_string(w.client_dir.join("artifact.json")).unwrap();
    assert!(
        artifact.contains(r#""id": "chart""#) && artifact.contains(r#""version": "6.10""#),
        "{artifact}"
    );

    w.ok(&[
        "release",
        "--service",
        "podinfo",
        "--env",
        "dev",
        "--artifact",
        "main-1",
    ]);
    // Only the version's bytes change; `6.10` is quoted, or kustomize would read 6.1.
    assert_eq!(
        w.read("apps/podinfo/dev/kustomization.yaml"),
        DEV.replace("6.5.0", "\"6.10\"")
    );
    let head = &w.repo.log("main").unwrap()[0];
    assert!(
        head.trailers.contains(&(
            "Tug-Change".to_owned(),
            "set chart podinfo version 6.10 in apps/podinfo/dev".to_owned()
        )),
        "{:?}",
        head.trailers
    );

    w.ok(&["promote", "--service", "podinfo", "--env", "staging"]);
    assert_eq!(
        w.read("apps/podinfo/staging/helmrelease.yaml"),
        STAGING_RELEASE.replace("'6.5.0'", "'6.10'")
    );
    assert_eq!(
        w.read("apps/podinfo/staging/kustomization.yaml"),
        "resources:\n  - helmrelease.yaml\n"
    );

    // An artifact without a chart stage has nothing to release to a chart target.
    let tip = w.repo.tip("main").unwrap();
    w.artifact("main-2", None);
    let out = w.tug(&[
        "release",
        "--service",
        "podinfo",
        "--env",
        "dev",
        "--artifact",
        "main-2",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("artifact 'main-2' has no chart stage naming a chart version to release"),
        "{stderr}"
    );
    assert_eq!(w.repo.tip("main").unwrap(), tip);
}
