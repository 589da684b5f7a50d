//! The Kubernetes base under deploy/kubernetes renders, and the configuration it ships is one
//! `tug server` accepts once the Secret's variables are set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tug_testkit::require_binary;

fn base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

#[test]
fn the_kubernetes_configuration_loads_with_the_secret_variables() {
    let env = |name: &str| match name {
        "GIT_TOKEN" => Some("git-token".to_owned()),
        "TUG_CI_TOKEN_SHA256" => Some("0".repeat(64)),
        _ => None,
    };
    let config =
        tug_server::Config::load(&base().join("tug.yaml"), &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.listen.http.port(), 12011);
    assert_eq!(config.listen.grpc.port(), 12010);
    assert!(
        config.listen.http.ip().is_unspecified(),
        "reachable from the Service"
    );
    assert_eq!(config.data_dir, Path::new("/var/lib/tug"));

    let unset = |_: &str| None;
    let error = tug_server::Config::load(&base().join("tug.yaml"), &unset)
        .expect_err("the credentials come from the environment");
    assert!(error.to_string().contains("GIT_TOKEN"), "{error}");
}

#[test]
fn the_kubernetes_base_renders_a_hardened_single_replica_deployment() {
    let kubectl = require_binary("kubectl", "kubernetes-client").unwrap();
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(base())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).unwrap();
    for kind in [
        "kind: Deployment",
        "kind: Service",
        "kind: ConfigMap",
        "kind: Secret",
        "kind: PersistentVolumeClaim",
    ] {
        assert!(rendered.contains(kind), "{kind} missing:\n{rendered}");
    }
    for line in [
        "replicas: 1",
        "type: Recreate",
        "path: /api/v1/health",
        "readOnlyRootFilesystem: true",
        "runAsNonRoot: true",
        "runAsUser: 10001",
        "mountPath: /tmp",
        "mountPath: /var/lib/tug",
        "port: 12011",
        "port: 12010",
        "image: ghcr.io/tug-gitops/tug:0.1.0",
    ] {
        assert!(rendered.contains(line), "`{line}` missing:\n{rendered}");
    }
    // The generated ConfigMap's hashed name is what the Deployment mounts.
    let generated = rendered
        .lines()
        .find_map(|l| l.trim().strip_prefix("name: tug-config-"))
        .expect("generated ConfigMap");
    assert_eq!(
        rendered.matches(&format!("tug-config-{generated}")).count(),
        2,
        "{rendered}"
    );
}
