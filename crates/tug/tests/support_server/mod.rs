//! A real `tug server` process over two manifest repositories, with two tokens: `ci` may write to
//! `gitops` only, `apps-ci` to `apps` only. Shared by the gRPC and `tug deploy` tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};
use tug_testkit::{BareRepo, Scratch, TugServer};

/// May write to `gitops`.
pub(crate) const CI_TOKEN: &str = "tug_test_ci_0123456789abcdef";
/// May write to `apps` only.
pub(crate) const APPS_TOKEN: &str = "tug_test_apps_fedcba9876543210";

pub(crate) const IMAGE: &str = "registry.example.com/demo/app";
pub(crate) const DEV_PATH: &str = "apps/demo/dev";
pub(crate) const DEV_KUSTOMIZATION: &str = "apps/demo/dev/kustomization.yaml";

pub(crate) const KUSTOMIZATION: &str = r#"apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - deployment.yaml
images:
  # application container
  - name: registry.example.com/demo/app
    newTag: "1.0.0"  # release tag
"#;

pub(crate) const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: demo
spec:
  template:
    spec:
      containers:
        - name: app
          image: registry.example.com/demo/app
";

pub(crate) const VALUES: &str =
    "image:\n  repository: registry.example.com/demo/app\n  tag: \"1.0.0\"\nreplicas: 1\n";

pub(crate) fn tug_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tug"))
}

pub(crate) fn sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub(crate) struct World {
    pub gitops: BareRepo,
    pub apps: BareRepo,
    pub server: TugServer,
    /// HOME and working directory of client commands.
    pub client_dir: Scratch,
}

impl World {
    pub(crate) fn start() -> World {
        Self::start_with("")
    }

    /// With `extra_yaml` appended to the configuration (`tls:`, …).
    pub(crate) fn start_with(extra_yaml: &str) -> World {
        let files: &[(&str, &[u8])] = &[
            (DEV_KUSTOMIZATION, KUSTOMIZATION.as_bytes()),
            ("apps/demo/dev/deployment.yaml", DEPLOYMENT.as_bytes()),
            (
                "apps/demo/prod/kustomization.yaml",
                KUSTOMIZATION.as_bytes(),
            ),
            ("apps/demo/prod/deployment.yaml", DEPLOYMENT.as_bytes()),
            ("charts/demo/values.yaml", VALUES.as_bytes()),
        ];
        let gitops = BareRepo::with_files(files).unwrap();
        let apps = BareRepo::with_files(files).unwrap();
        let config = format!(
            r#"repositories:
  - name: gitops
    url: "{gitops}"
  - name: apps
    url: "{apps}"
auth:
  tokens:
    - name: ci
      sha256: "{ci}"
      repositories: ["gitops"]
    - name: apps-ci
      sha256: "{apps_ci}"
      repositories: ["apps"]
{extra_yaml}"#,
            gitops = gitops.file_url(),
            apps = apps.file_url(),
            ci = sha256_hex(CI_TOKEN),
            apps_ci = sha256_hex(APPS_TOKEN),
        );
        let server = TugServer::start(tug_binary(), &config).unwrap();
        World {
            gitops,
            apps,
            server,
            client_dir: Scratch::new().unwrap(),
        }
    }

    /// `tug ARGS…` in a clean environment (no `TUG_*` from the machine) plus `env`.
    pub(crate) fn tug(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = TugServer::clean_command(tug_binary(), self.client_dir.path(), env);
        cmd.args(args).current_dir(self.client_dir.path());
        cmd
    }
}
