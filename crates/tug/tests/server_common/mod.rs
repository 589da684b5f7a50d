//! Fixtures shared by the `server_*` tests: a GitOps repository of kustomize overlays, tokens,
//! Delivery-style request bodies and polling with a deadline.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tug_testkit::{BareRepo, TugServer};

pub(crate) fn tug_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tug"))
}

/// What `auth.tokens[].sha256` holds for `token`.
pub(crate) fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub(crate) fn kustomization(image: &str, tag: &str) -> String {
    format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - deployment.yaml\nimages:\n  # the application container\n  - name: {image}\n    newTag: {tag}\n"
    )
}

pub(crate) fn deployment(name: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  template:\n    spec:\n      containers:\n        - name: app\n          image: {image}\n"
    )
}

/// `manifests.git` with an overlay `apps/SERVICE/dev` for each service, image
/// `registry.example.com/SERVICE` at tag `v1.0.0`.
pub(crate) fn overlays_repo(services: &[&str]) -> BareRepo {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for service in services {
        let image = format!("registry.example.com/{service}");
        files.push((
            format!("apps/{service}/dev/kustomization.yaml"),
            kustomization(&image, "v1.0.0").into_bytes(),
        ));
        files.push((
            format!("apps/{service}/dev/deployment.yaml"),
            deployment(service, &image).into_bytes(),
        ));
    }
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_slice()))
        .collect();
    BareRepo::with_files(&refs).expect("create manifests repository")
}

/// A deploy request in the Delivery server's shape: set `registry.example.com/SERVICE` to `tag`
/// in `apps/SERVICE/dev` of the repository at `url`, branch `main`.
pub(crate) fn image_deploy(url: &str, service: &str, tag: &str) -> Value {
    json!({
        "commitSpec": {"CommitMessage": format!("deploy {service} {tag}")},
        "deploySpecs": [{
            "url": url,
            "updates": [{
                "branch": "main",
                "paths": [{
                    "path": format!("apps/{service}/dev"),
                    "kustomize": {"images": [{
                        "name": format!("registry.example.com/{service}"),
                        "newTag": tag,
                    }]},
                }],
            }],
        }],
    })
}

pub(crate) fn body(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialise request")
}

/// Polls `probe` until it returns `Some`, failing the test with `what` after `timeout`.
pub(crate) fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `GET /api/v1/jobs/{id}`.
pub(crate) fn job(server: &TugServer, id: &str, token: &str) -> Value {
    let (status, job) = server
        .get_json(&format!("/api/v1/jobs/{id}"), Some(token))
        .expect("get job");
    assert_eq!(status, 200, "GET job {id}: {job}");
    job
}

/// Waits until job `id` reaches `succeeded` or `failed` and returns it.
pub(crate) fn wait_for_end(server: &TugServer, id: &str, token: &str, timeout: Duration) -> Value {
    wait_for(timeout, &format!("job {id} to finish"), || {
        let job = job(server, id, token);
        matches!(job["status"].as_str(), Some("succeeded" | "failed")).then_some(job)
    })
}

/// The `Tug-Request` trailers of the commits on `main`, newest first.
pub(crate) fn request_trailers(repo: &BareRepo) -> Vec<String> {
    repo.log("main")
        .expect("git log")
        .iter()
        .flat_map(|c| {
            c.trailers
                .iter()
                .filter(|(k, _)| k == "Tug-Request")
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A histogram's `_sum` and `_count` from Prometheus text.
pub(crate) fn histogram(metrics: &str, family: &str) -> (f64, u64) {
    let value = |suffix: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{family}_{suffix} ")))
            .map(|v| v.trim().to_owned())
    };
    let sum = value("sum").map_or(0.0, |v| v.parse().expect("histogram sum"));
    let count = value("count").map_or(0, |v| v.parse().expect("histogram count"));
    (sum, count)
}

/// A pre-receive hook that holds every push until `release` exists, after creating `entered`:
/// a test can act while a push is in flight.
pub(crate) fn hold_pushes(repo: &BareRepo, entered: &Path, release: &Path) {
    let hook = repo.path().join("hooks/pre-receive");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncat >/dev/null\ntouch '{entered}'\nwhile [ ! -e '{release}' ]; do sleep 0.02; done\nexit 0\n",
            entered = entered.display(),
            release = release.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Holds every push to `repo` in its pre-receive hook, one at a time: push k (from 1) creates
/// `gate/entered-k` and waits until `gate/release-k` exists.
pub(crate) fn gate_each_push(repo: &BareRepo, gate: &Path) {
    let hook = repo.path().join("hooks/pre-receive");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncat >/dev/null\ngate='{gate}'\nk=$(( $(cat \"$gate/count\" 2>/dev/null || echo 0) + 1 ))\n\
             echo $k >\"$gate/count\"\ntouch \"$gate/entered-$k\"\n\
             while [ ! -e \"$gate/release-$k\" ]; do sleep 0.02; done\nexit 0\n",
            gate = gate.display(),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `git daemon` on a port that stays the same across [`Remote::stop`] and [`Remote::resume`], so
/// a server configured with its URL sees the remote go down and come back.
pub(crate) struct Remote {
    base: std::path::PathBuf,
    port: u16,
    process: Option<tug_testkit::ServerProcess>,
    logs: tug_testkit::Scratch,
}

impl Remote {
    pub(crate) fn start(base: &Path) -> Remote {
        let mut remote = Remote {
            base: base.to_owned(),
            port: tug_testkit::free_port().unwrap(),
            process: None,
            logs: tug_testkit::Scratch::new().unwrap(),
        };
        remote.resume();
        remote
    }

    pub(crate) fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }

    /// Kills the daemon: connections are refused until [`Remote::resume`].
    pub(crate) fn stop(&mut self) {
        self.process = None;
    }

    pub(crate) fn resume(&mut self) {
        let mut cmd = tug_testkit::git_command();
        cmd.arg("daemon")
            .arg("--reuseaddr")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={}", self.port))
            .arg(format!("--base-path={}", self.base.display()))
            .args(["--export-all", "--enable=receive-pack"])
            .arg(&self.base);
        let mut process =
            tug_testkit::ServerProcess::spawn("git daemon", cmd, &self.logs.join("daemon.log"))
                .unwrap();
        tug_testkit::wait_for_port(&mut process, self.port, Duration::from_secs(15)).unwrap();
        self.process = Some(process);
    }
}
