//! The Kubernetes base under deploy/kubernetes (three replicas on PostgreSQL) and its
//! single-replica overlay deploy/kubernetes-single (SQLite on a volume) render, and the
//! configurations they ship are ones `tug server` accepts once the Secret's variables are set.
//! README.md says what the binary needs at run time, and the Dockerfile and
//! deploy/image/build.sh install just that.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tug_testkit::require_binary;

fn base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

fn single() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes-single")
}

fn render(dir: &Path) -> String {
    let kubectl = require_binary("kubectl", "kubernetes-client").unwrap();
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_kubernetes_configuration_loads_with_the_secret_variables() {
    let env = |name: &str| match name {
        "DATABASE_URL" => Some("postgres://tug:secret@postgres:5432/tug".to_owned()),
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
    let postgres = config
        .store
        .postgres
        .expect("the base shares a PostgreSQL database");
    assert_eq!(
        postgres.url.expose(),
        "postgres://tug:secret@postgres:5432/tug"
    );

    let single = tug_server::Config::load(&single().join("tug.yaml"), &env)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(single.store.postgres.is_none(), "SQLite under data_dir");
    assert_eq!(single.data_dir, Path::new("/var/lib/tug"));

    let unset = |_: &str| None;
    let error = tug_server::Config::load(&base().join("tug.yaml"), &unset)
        .expect_err("the credentials come from the environment");
    assert!(error.to_string().contains("DATABASE_URL"), "{error}");
}

#[test]
fn the_kubernetes_base_renders_three_hardened_replicas_on_postgresql() {
    let rendered = render(&base());
    for kind in [
        "kind: Deployment",
        "kind: Service",
        "kind: ConfigMap",
        "kind: Secret",
        "kind: PodDisruptionBudget",
    ] {
        assert!(rendered.contains(kind), "{kind} missing:\n{rendered}");
    }
    assert!(
        !rendered.contains("kind: PersistentVolumeClaim"),
        "{rendered}"
    );
    for line in [
        "replicas: 3",
        "type: RollingUpdate",
        "maxUnavailable: 0",
        "maxUnavailable: 1",
        "DATABASE_URL:",
        "url: \"${DATABASE_URL}\"",
        "topologyKey: kubernetes.io/hostname",
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

#[test]
fn the_single_overlay_renders_one_replica_on_a_volume() {
    let rendered = render(&single());
    for line in [
        "kind: PersistentVolumeClaim",
        "replicas: 1",
        "type: Recreate",
        "claimName: tug-data",
        "mountPath: /var/lib/tug",
    ] {
        assert!(rendered.contains(line), "`{line}` missing:\n{rendered}");
    }
    for absent in [
        "kind: PodDisruptionBudget",
        "url: \"${DATABASE_URL}\"",
        "RollingUpdate",
    ] {
        assert!(
            !rendered.contains(absent),
            "`{absent}` present:\n{rendered}"
        );
    }
    // The overlay's own configuration is mounted, under its generated name.
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

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(path),
    )
    .unwrap()
}

/// The words after `marker` up to the end of its line, a backtick, `&&` or `\`.
fn words_after(text: &str, marker: &str) -> Vec<String> {
    let line = text
        .lines()
        .find_map(|l| l.split_once(marker).map(|(_, rest)| rest.to_owned()))
        .unwrap_or_else(|| panic!("`{marker}` not found"));
    let line = line.split('`').next().unwrap_or_default();
    line.split_whitespace()
        .take_while(|w| *w != "&&" && *w != "\\")
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_readme_the_dockerfile_and_the_image_script_install_the_same_packages() {
    let readme = words_after(
        &repo_file("README.md"),
        "On Debian and Ubuntu that is `apt-get install ",
    );
    let dockerfile = words_after(
        &repo_file("Dockerfile"),
        "apt-get install -y --no-install-recommends ",
    );
    let script = repo_file("deploy/image/build.sh");
    let script: Vec<String> = script
        .lines()
        .find_map(|l| l.strip_prefix("PACKAGES=("))
        .expect("PACKAGES=( in build.sh")
        .trim_end_matches(')')
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(readme, ["git", "openssh-client", "ca-certificates"]);
    assert_eq!(dockerfile, readme, "the Dockerfile's packages");
    assert_eq!(script, readme, "the image script's packages");
}

#[test]
fn the_readme_names_the_glibc_and_the_libraries_the_binary_links() {
    let objdump = require_binary("objdump", "binutils").unwrap();
    let binary = env!("CARGO_BIN_EXE_tug");
    let run = |flag: &str| {
        let out = Command::new(&objdump)
            .arg(flag)
            .arg(binary)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let readme = repo_file("README.md");

    // The newest glibc symbol version the binary imports is the oldest glibc it runs on.
    let newest = run("-T")
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .max()
        .expect("GLIBC_ symbol versions");
    let floor = format!("glibc {}.{} or newer", newest.0, newest.1);
    assert!(
        readme.contains(&floor),
        "README.md should say `{floor}`: the binary imports symbols of glibc {}.{}",
        newest.0,
        newest.1
    );

    // Every shared library it links, and nothing else, is named.
    let needed: Vec<String> = run("-p")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("NEEDED"))
        .map(|l| l.trim().to_owned())
        .collect();
    let (_, after) = readme
        .split_once("at run time it needs:")
        .expect("the run-time list");
    let (paragraph, _) = after.split_once("On Debian and Ubuntu").unwrap();
    for library in &needed {
        assert!(
            paragraph.contains(&format!("`{library}`")),
            "README.md does not name {library}, which the binary links"
        );
    }
    let named = paragraph.matches(".so.").count();
    assert_eq!(
        named,
        needed.len(),
        "README.md names libraries the binary does not link: {needed:?}"
    );
}
