//! Compares `land` of one image-tag change with a bare `git push` of a prepared commit, on a
//! copy of a benchmark fixture served on loopback.
//!
//! cargo run --release -p tug-git --example land_vs_push -- FIXTURE.git [http|ssh|git|file] [N]

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use tug_git::{
    Auth, ChangeError, CommitMeta, FileSource, FileWrite, Identity, LandOptions, Mirror,
    MirrorOptions, Remote, land,
};
use tug_testkit::{GitDaemon, Scratch, SmartHttp, Sshd, run_git};

struct BumpTag {
    path: String,
    tag: String,
}

impl tug_git::Change for BumpTag {
    fn apply(&self, files: &dyn FileSource) -> Result<Vec<FileWrite>, ChangeError> {
        let text = String::from_utf8(files.read_file(&self.path)?.unwrap()).unwrap();
        let mut seen_app = false;
        let out: String = text
            .split_inclusive('\n')
            .map(|line| {
                if line.starts_with("  - name: ") && line.contains("/svc-") {
                    seen_app = true;
                    line.to_owned()
                } else if seen_app && line.trim_start().starts_with("newTag:") {
                    seen_app = false;
                    format!("    newTag: \"{}\"  # release tag\n", self.tag)
                } else {
                    line.to_owned()
                }
            })
            .collect();
        Ok(vec![FileWrite::put(self.path.clone(), out)])
    }

    fn commit_meta(&self) -> CommitMeta {
        CommitMeta::new(
            Identity::new("CI", "ci@example.invalid"),
            format!("deploy: bump to {}", self.tag),
        )
    }
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    let ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    let n = ms.len();
    if n % 2 == 1 {
        ms[n / 2]
    } else {
        (ms[n / 2 - 1] + ms[n / 2]) / 2.0
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let fixture = &args[1];
    let transport = args.get(2).map_or("http", String::as_str);
    let n: usize = args.get(3).map_or(20, |s| s.parse().unwrap());
    let root = Scratch::new().unwrap();
    let remote = root.join("large.git");
    run_git(
        None,
        &[
            "clone",
            "--quiet",
            "--bare",
            "--no-local",
            fixture,
            remote.to_str().unwrap(),
        ],
    )
    .unwrap();
    run_git(
        None,
        &[
            "--git-dir",
            remote.to_str().unwrap(),
            "config",
            "http.receivepack",
            "true",
        ],
    )
    .unwrap();
    run_git(
        None,
        &[
            "--git-dir",
            remote.to_str().unwrap(),
            "config",
            "daemon.receivepack",
            "true",
        ],
    )
    .unwrap();

    let (_http, _daemon, _sshd);
    let (url, auth, ssh_command) = match transport {
        "http" => {
            let http = SmartHttp::start(root.path(), None).unwrap();
            let url = http.url("large.git");
            _http = http;
            (url, Auth::None, None)
        }
        "git" => {
            let daemon = GitDaemon::start(root.path()).unwrap();
            let url = daemon.url("large.git");
            _daemon = daemon;
            (url, Auth::None, None)
        }
        "ssh" => {
            let sshd = Sshd::start().unwrap();
            let url = sshd.url(&remote);
            let mux = root.join("mux");
            let ssh = format!(
                "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o BatchMode=yes \
                 -o ControlMaster=auto -o ControlPath={}-%C -o ControlPersist=60s",
                sshd.client_key().display(),
                sshd.known_hosts().display(),
                mux.display()
            );
            let auth = Auth::Ssh {
                private_key_file: sshd.client_key(),
                known_hosts_file: sshd.known_hosts(),
            };
            _sshd = sshd;
            (url, auth, Some(ssh))
        }
        _ => (format!("file://{}", remote.display()), Auth::None, None),
    };

    // The floor: `git push` of a commit made beforehand, from a work-tree clone.
    let work = root.join("work");
    let git = |args: &[&str]| {
        let mut cmd = tug_testkit::git_command();
        cmd.current_dir(&work).args(args);
        if let Some(ssh) = &ssh_command {
            cmd.env("GIT_SSH_COMMAND", ssh);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mut clone = tug_testkit::git_command();
    if let Some(ssh) = &ssh_command {
        clone.env("GIT_SSH_COMMAND", ssh);
    }
    assert!(
        clone
            .args(["clone", "--quiet", &url, work.to_str().unwrap()])
            .status()
            .unwrap()
            .success()
    );
    let data = Scratch::new().unwrap();
    let started = Instant::now();
    let mirror = Mirror::open(
        data.path(),
        Remote::new(&url, auth),
        MirrorOptions::default(),
    )
    .unwrap();
    let clone_time = started.elapsed();
    let opts = LandOptions::new(Identity::new("tug", "tug@example.invalid"));
    let (mut floor, mut total, mut push, mut apply) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Interleaved, so that both see the same machine load.
    for i in 0..n {
        git(&["fetch", "--quiet", "origin"]);
        git(&["reset", "--quiet", "--hard", "origin/main"]);
        let path = format!("apps/svc-{:04}/prod/values.yaml", (i * 37) % 2000);
        let file = work.join(&path);
        let mut content = std::fs::read_to_string(&file).unwrap();
        content.push_str(&format!("# floor {i}\n"));
        std::fs::write(&file, content).unwrap();
        git(&["commit", "--quiet", "-am", "floor"]);
        let started = Instant::now();
        git(&["push", "--quiet", "origin", "HEAD:main"]);
        floor.push(started.elapsed());

        mirror.fetch_branch("main").unwrap();
        let change = BumpTag {
            path: format!("apps/svc-{:04}/dev/kustomization.yaml", (i * 53) % 2000),
            tag: format!("9.0.{i}"),
        };
        let started = Instant::now();
        let report = land(&mirror, "main", &[&change], &opts).unwrap();
        total.push(started.elapsed());
        push.push(report.push_time);
        apply.push(report.apply_time);
        assert_eq!(report.attempts, 1);
    }
    println!(
        "{transport}: n={n} mirror clone {:.0} ms | bare git push median {:.1} ms | land median {:.1} ms (push {:.1}, apply {:.2})",
        clone_time.as_secs_f64() * 1000.0,
        median(floor),
        median(total),
        median(push),
        median(apply)
    );
}
