//! The container image, built and started without docker and without a registry:
//! `deploy/image/build.sh` assembles it from Debian's packages and the `tug` binary of this test
//! run; the test unpacks it as an OCI runtime does (umoci writes the runtime's `config.json` from
//! the image), starts its process — arguments, environment, working directory and user taken
//! from that file — in its own mount and PID namespaces under a read-only root, with the
//! configuration and the data directory mounted where `deploy/kubernetes` mounts them, waits for
//! `/api/v1/health` and lands one real deploy on a `git daemon` on loopback. The image declares
//! what the Dockerfile declares (user, environment, volume, working directory, ports, entrypoint,
//! command) and has the Dockerfile's user.
//!
//! It needs root, mmdebstrap, umoci, unshare, chroot and strip, and Debian's package mirror. A
//! run without them skips with the reason; with `CI` set it fails instead (`.ci/run` installs
//! them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tug_testkit::{
    BareRepo, GitDaemon, Scratch, ServerProcess, free_port, http_request, require_binary,
};

const TOKEN: &str = "tug_image_ci_7c21d0";
const START_TIMEOUT: Duration = Duration::from_secs(60);

const KUSTOMIZATION: &str = "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
images:
  - name: registry.example.com/demo/app
    newTag: \"1.0.0\"
";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The tools the test needs, or why it cannot run: a failure under CI, a skip elsewhere.
fn tools_or_skip() -> bool {
    let mut missing = Vec::new();
    if !Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
    {
        missing.push("root (mmdebstrap's root mode, chroot and mounts)".to_owned());
    }
    for (binary, package) in [
        ("mmdebstrap", "mmdebstrap"),
        ("umoci", "umoci"),
        ("unshare", "util-linux"),
        ("chroot", "coreutils"),
        ("strip", "binutils"),
    ] {
        if let Err(e) = require_binary(binary, package) {
            missing.push(e.to_string());
        }
    }
    if missing.is_empty() {
        return true;
    }
    let reason = format!(
        "the image test needs: {} (.ci/run installs the packages)",
        missing.join("; ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("{reason}; CI is set, so this is a failure, not a skip");
    }
    eprintln!("skipped: {reason}");
    false
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').unwrap();
    layout.join("blobs").join(algorithm).join(hex)
}

/// The image's config blob (`config` inside it is the part `docker inspect` shows).
fn image_config(layout: &Path, tag: &str) -> Value {
    let index = read_json(&layout.join("index.json"));
    let manifest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no manifest tagged {tag}: {index}"));
    let manifest = read_json(&blob(layout, manifest["digest"].as_str().unwrap()));
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        2,
        "{manifest}"
    );
    read_json(&blob(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ))
}

/// What the final stage of the Dockerfile declares, as the image config spells it.
struct Declared {
    user: String,
    env: Vec<String>,
    volumes: Vec<String>,
    workdir: String,
    ports: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    passwd: String,
}

fn dockerfile() -> Declared {
    let text = fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    // Instructions with their continuation lines joined, comments dropped.
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    let last_from = instructions
        .iter()
        .rposition(|i| i.starts_with("FROM "))
        .unwrap();
    let mut declared = Declared {
        user: String::new(),
        env: Vec::new(),
        volumes: Vec::new(),
        workdir: String::new(),
        ports: Vec::new(),
        entrypoint: Vec::new(),
        cmd: Vec::new(),
        passwd: String::new(),
    };
    let json_list = |s: &str| -> Vec<String> {
        serde_json::from_str(s).unwrap_or_else(|e| panic!("{s}: {e} (exec form expected)"))
    };
    for instruction in &instructions[last_from + 1..] {
        let (keyword, rest) = instruction.split_once(' ').unwrap();
        let rest = rest.trim();
        match keyword {
            "USER" => declared.user = rest.to_owned(),
            "ENV" => declared.env.push(rest.to_owned()),
            "VOLUME" => declared.volumes = json_list(rest),
            "WORKDIR" => declared.workdir = rest.to_owned(),
            "EXPOSE" => {
                declared.ports = rest
                    .split_whitespace()
                    .map(|p| format!("{p}/tcp"))
                    .collect();
            }
            "ENTRYPOINT" => declared.entrypoint = json_list(rest),
            "CMD" => declared.cmd = json_list(rest),
            "RUN" => {
                let words: Vec<&str> = rest.split_whitespace().collect();
                if let Some(start) = words.iter().position(|w| *w == "useradd") {
                    let flag = |name: &str| {
                        let at = words[start..].iter().position(|w| *w == name).unwrap();
                        words[start + at + 1]
                    };
                    // `useradd [options] LOGIN`, up to the next command.
                    let name = words[start..]
                        .iter()
                        .take_while(|w| **w != "&&")
                        .last()
                        .unwrap();
                    declared.passwd = format!(
                        "{name}:x:{}:{}::{}:{}",
                        flag("--uid"),
                        flag("--gid"),
                        flag("--home-dir"),
                        flag("--shell")
                    );
                }
            }
            _ => {}
        }
    }
    assert!(!declared.passwd.is_empty(), "the Dockerfile's useradd");
    declared
}

/// `(2, 39)` for `2.39.5-0+deb12u3`.
fn major_minor(version: &str) -> (u32, u32) {
    let mut parts = version
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u32>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

/// The oldest git README.md says tug needs: "`git` X.Y or newer".
fn readme_git_floor() -> (u32, u32) {
    let readme = fs::read_to_string(repo_root().join("README.md")).unwrap();
    let (_, after) = readme
        .split_once("- `git` ")
        .expect("README.md names the git tug needs");
    major_minor(after.split_whitespace().next().unwrap())
}

/// (package, version) of every package installed in `rootfs`, from dpkg's status file.
fn dpkg_versions(rootfs: &Path) -> Vec<(String, String)> {
    let status = fs::read_to_string(rootfs.join("var/lib/dpkg/status")).unwrap();
    status
        .split("\n\n")
        .filter(|stanza| stanza.contains("\nStatus: install ok installed"))
        .filter_map(|stanza| {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::to_owned)
            };
            Some((field("Package: ")?, field("Version: ")?))
        })
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn keys(value: &Value) -> Vec<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect()
}

/// Runs the unpacked image's process as an OCI runtime would, with the host's network: a private
/// mount table (so nothing is mounted on the host, and everything goes with the namespace), a
/// PID namespace whose processes all die with its first one, a minimal /dev, /proc, /tmp as
/// tmpfs, the configuration read-only at /etc/tug, the data directory at /var/lib/tug, and the
/// root read-only (as `readOnlyRootFilesystem` in deploy/kubernetes).
const RUNTIME: &str = r#"set -eu
root=$1 config=$2 data=$3 uid=$4 gid=$5 cwd=$6
shift 6
mount --make-rprivate /
mount --bind "$root" "$root"
mount -t tmpfs -o mode=0755,nosuid tmpfs "$root/dev"
for node in null zero full random urandom tty; do
  touch "$root/dev/$node"
  mount --bind "/dev/$node" "$root/dev/$node"
done
ln -s /proc/self/fd "$root/dev/fd"
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
mount --bind "$config" "$root/etc/tug"
mount -o remount,bind,ro "$root/etc/tug"
mount --bind "$data" "$root/var/lib/tug"
mount -o remount,bind,ro "$root"
exec chroot "$root" /usr/bin/setpriv --reuid="$uid" --regid="$gid" --clear-groups \
  /usr/bin/env -i -C "$cwd" "$@"
"#;

fn health(addr: SocketAddr, server: &mut ServerProcess) {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(exit) = server.exited() {
            panic!("the image's server exited: {exit}");
        }
        if let Ok(response) = http_request(addr, "GET", "/api/v1/health", &[], b"")
            && response.status == 200
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/api/v1/health did not answer 200 within {START_TIMEOUT:?}; log:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_image_is_built_from_debian_packages_and_serves_a_deploy() {
    if !tools_or_skip() {
        return;
    }
    let started = Instant::now();
    let scratch = Scratch::new().unwrap();

    // A debug build carries 200 MB of debug information; the image gets it without.
    let binary = scratch.join("tug");
    run(Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&binary)
        .arg(env!("CARGO_BIN_EXE_tug")));

    let layout = scratch.join("oci");
    let built = run(Command::new("bash")
        .arg(repo_root().join("deploy/image/build.sh"))
        .arg("--binary")
        .arg(&binary)
        .arg("--out")
        .arg(&layout)
        .args(["--tag", "test"])
        .env("TMPDIR", scratch.path()));
    eprintln!("{}", built.trim());

    // The image declares what the Dockerfile declares.
    let declared = dockerfile();
    let config = &image_config(&layout, "test")["config"];
    assert_eq!(config["User"], declared.user.as_str());
    let env = strings(&config["Env"]);
    for var in &declared.env {
        assert!(env.contains(var), "{var} missing from {env:?}");
    }
    assert_eq!(keys(&config["Volumes"]), declared.volumes);
    assert_eq!(config["WorkingDir"], declared.workdir.as_str());
    assert_eq!(keys(&config["ExposedPorts"]), declared.ports);
    assert_eq!(strings(&config["Entrypoint"]), declared.entrypoint);
    assert_eq!(strings(&config["Cmd"]), declared.cmd);

    // Unpacked as a runtime does: the root file system and the runtime's config.json.
    let bundle = scratch.join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:test", layout.display()))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    let passwd = fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(
        passwd.lines().any(|l| l == declared.passwd),
        "`{}` missing from /etc/passwd:\n{passwd}",
        declared.passwd
    );
    // The Dockerfile's directories: the volume owned by the user, the configuration's mount point.
    let home = fs::metadata(rootfs.join("var/lib/tug")).unwrap();
    assert_eq!(format!("{}:{}", home.uid(), home.gid()), declared.user);
    assert!(rootfs.join("etc/tug").is_dir());
    let installed = dpkg_versions(&rootfs);
    for package in ["git", "openssh-client", "ca-certificates"] {
        let version = installed.iter().find(|(p, _)| p == package);
        let (_, version) = version.unwrap_or_else(|| panic!("{package} is not installed"));
        eprintln!("image: {package} {version}");
    }
    // The image's git is one README.md says tug works with (the deploy below runs it).
    let git = &installed.iter().find(|(p, _)| p == "git").unwrap().1;
    let git = major_minor(git.split_once(':').map_or(git.as_str(), |(_, v)| v));
    let floor = readme_git_floor();
    assert!(
        git >= floor,
        "the image's git {git:?} is older than README.md's floor {floor:?}"
    );

    let process = &read_json(&bundle.join("config.json"))["process"];
    let uid = process["user"]["uid"].as_u64().unwrap();
    let gid = process["user"]["gid"].as_u64().unwrap();
    assert_eq!(format!("{uid}:{gid}"), declared.user);

    // A manifest repository on a git daemon on loopback, reached from inside the image.
    let repo =
        BareRepo::with_files(&[("apps/demo/dev/kustomization.yaml", KUSTOMIZATION.as_bytes())])
            .unwrap();
    let daemon = GitDaemon::start(repo.root()).unwrap();

    let etc = scratch.dir("etc-tug").unwrap();
    fs::set_permissions(&etc, fs::Permissions::from_mode(0o755)).unwrap();
    let data = scratch.dir("data").unwrap();
    run(Command::new("chown").arg(format!("{uid}:{gid}")).arg(&data));
    let (http, grpc) = (free_port().unwrap(), free_port().unwrap());
    let token_sha = hex::encode(Sha256::digest(TOKEN.as_bytes()));
    fs::write(
        etc.join("tug.yaml"),
        format!(
            "listen: {{grpc: \"127.0.0.1:{grpc}\", http: \"127.0.0.1:{http}\"}}\n\
             data_dir: /var/lib/tug\n\
             repositories:\n  - name: gitops\n    url: \"git://127.0.0.1:{port}/{name}\"\n\
             auth:\n  tokens:\n    - {{name: ci, sha256: \"{token_sha}\", repositories: [gitops]}}\n",
            port = daemon.port(),
            name = repo.name(),
        ),
    )
    .unwrap();

    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--pid",
        "--fork",
        "--kill-child",
        "--",
        "sh",
        "-c",
    ])
    .arg(RUNTIME)
    .arg("runtime")
    .arg(&rootfs)
    .arg(&etc)
    .arg(&data)
    .arg(uid.to_string())
    .arg(gid.to_string())
    .arg(process["cwd"].as_str().unwrap())
    .args(strings(&process["env"]))
    .args(strings(&process["args"]));
    let mut server =
        ServerProcess::spawn("tug in the image", cmd, &scratch.join("server.log")).unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], http).into();
    health(addr, &mut server);
    let ready = started.elapsed();

    let body = json!({
        "commitSpec": {"CommitMessage": "update image tag to 1.2.3"},
        "deploySpecs": [{"repository": "gitops", "updates": [{"branch": "main", "paths": [
            {"path": "apps/demo/dev", "kustomize": {"images": [
                {"name": "registry.example.com/demo/app", "newTag": "1.2.3"}]}}]}]}]
    });
    let auth = format!("Bearer {TOKEN}");
    let response = http_request(
        addr,
        "POST",
        "/api/v1/deploy",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &auth),
        ],
        body.to_string().as_bytes(),
    )
    .unwrap();
    let lines = response.ndjson().unwrap();
    let last = lines.last().unwrap();
    assert_eq!(
        last["result"]["status"],
        "succeeded",
        "{lines:#?}\nlog:\n{}",
        server.log_text()
    );
    let landed = repo
        .read_file("main", "apps/demo/dev/kustomization.yaml")
        .unwrap()
        .unwrap();
    assert_eq!(
        String::from_utf8(landed).unwrap(),
        KUSTOMIZATION.replace("\"1.0.0\"", "\"1.2.3\"")
    );
    let log = repo.log("main").unwrap();
    assert_eq!(log[0].subject, "update image tag to 1.2.3", "{log:#?}");

    // The server wrote its store as the image's user, into the mounted volume.
    let store_owner = run(Command::new("stat")
        .args(["-c", "%u:%g"])
        .arg(&data)
        .arg(data.join("tug.db"))
        .arg(data.join("mirrors")));
    assert!(
        store_owner.lines().all(|l| l == declared.user),
        "{store_owner}"
    );
    drop(server);
    drop(daemon);
    eprintln!(
        "image built and serving after {ready:?}, deploy landed after {:?}",
        started.elapsed()
    );
}
