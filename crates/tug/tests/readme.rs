//! Every fenced block of README.md, run: configurations load (`tug server --check`) and serve,
//! deploy specs apply, and every shell block succeeds with the real binary against real servers
//! (the quick start's, and one configured from the README's own configuration blocks). A
//! command commented `# refused: WORDS` must exit 1 and say WORDS.
//!
//! Blocks the test does not run say so with `no-run` in their info string (`text` blocks are
//! output shown for reading); the list is pinned below, so a new one is a conscious choice.
//!
//! What the test changes before running a block, and only this: the listen ports (free ones
//! instead of 12010/12011), the repository URLs (local bare repositories instead of
//! git.example.com), the token hash `…` (the test token's), the GitHub API (a closed loopback
//! port instead of api.github.com), and `listen`/`data_dir` lines (the test server chooses
//! them). Variables the blocks read (`$SHA`, `${GIT_TOKEN}`, …) are set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support_server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support_server::{sha256_hex, tug_binary};
use tug_testkit::{
    BareRepo, BasicAuth, Scratch, ServerProcess, SmartHttp, TugServer, free_port, wait_for_port,
};

/// The blocks the test does not run, by their first line: installing builds for minutes, two
/// run servers in the foreground, which the test starts itself (`tug quickstart` with a port of
/// its own, `tug server` on the README's configuration), the replicas need a PostgreSQL of
/// their own (`server_replicas.rs` runs them), the image build needs a release build and root
/// (`tests/image.rs` runs the script), the chart needs a cluster (`tests/helm_chart.rs` renders
/// it), the CI pipelines run on GitHub and GitLab (`server_oidc.rs` mints their tokens), and the
/// last is the test suite this test is part of.
const NOT_RUN: [&str; 9] = [
    "cargo install --path crates/tug --locked",
    "tug quickstart",
    "tug server --config tug.yaml",
    "# .github/workflows/deploy.yml",
    "# .gitlab-ci.yml",
    "# three tug servers on one throwaway PostgreSQL (Debian: apt-get install postgresql; as a non-root user)",
    "cargo build --release --locked -p tug",
    "helm install tug deploy/helm/tug --namespace tug --create-namespace \\",
    "cargo test --workspace --locked",
];

const TOKEN: &str = "tug_readme_ci_5a1f0c";

#[derive(Debug, Clone)]
struct Block {
    info: String,
    text: String,
    line: usize,
}

impl Block {
    fn lang(&self) -> &str {
        self.info.split_whitespace().next().unwrap_or("")
    }

    fn no_run(&self) -> bool {
        self.info.split_whitespace().any(|w| w == "no-run")
    }

    fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }
}

fn blocks() -> Vec<Block> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in readme.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_owned(),
                    text: String::new(),
                    line: i + 1,
                });
            }
            (Some(_), Some("")) => blocks.push(open.take().unwrap()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "README.md has an unclosed block");
    blocks
}

/// `bash` running `script` in `cwd`, with the binary as `tug` on PATH, a scratch HOME and `env`.
fn bash(script: &str, cwd: &Path, home: &Path, env: &[(&str, &str)]) -> Output {
    let bin = home.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let tug = bin.join("tug");
    if !tug.exists() {
        std::os::unix::fs::symlink(std::fs::canonicalize(tug_binary()).unwrap(), &tug).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .env("LC_ALL", "C")
        .envs(env.iter().copied())
        .arg("-c")
        .arg(script_with_refusals(script))
        .current_dir(cwd)
        .stdin(Stdio::null());
    cmd.output().unwrap()
}

/// The block as a bash script that stops at the first failing command, where a command
/// commented `# refused: WORDS` must instead exit 1 and print WORDS on stderr.
fn script_with_refusals(block: &str) -> String {
    let mut script = String::from("set -euo pipefail\n");
    let mut command = String::new();
    for line in block.lines() {
        command.push_str(line);
        command.push('\n');
        if line.trim_end().ends_with('\\') {
            continue;
        }
        let full = std::mem::take(&mut command);
        match full.split_once("# refused: ") {
            Some((cmd, words)) => {
                let words = words.trim().replace('\'', "");
                script.push_str(&format!(
                    "rc=0; {{ {cmd}; }} 2>refused.err || rc=$?\n\
                     cat refused.err >&2\n\
                     [ \"$rc\" = 1 ] || {{ echo \"expected exit status 1, got $rc: {}\" >&2; exit 97; }}\n\
                     grep -qF -- '{words}' refused.err || {{ echo 'refusal does not say: {words}' >&2; exit 98; }}\n",
                    cmd.trim().replace(['\'', '"'], "")
                ));
            }
            None => script.push_str(&full),
        }
    }
    script
}

fn assert_ok(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `tug quickstart` on ports of its own, with `home` as HOME; killed on drop.
fn quickstart(home: &Path) -> (ServerProcess, u16) {
    let http = free_port().unwrap();
    let grpc = free_port().unwrap();
    let mut cmd = TugServer::clean_command(
        tug_binary(),
        home,
        &[("TUG_LISTEN_GRPC", &format!("127.0.0.1:{grpc}"))],
    );
    cmd.args(["quickstart", "--http", &format!("127.0.0.1:{http}")])
        .current_dir(home);
    let mut process =
        ServerProcess::spawn("tug quickstart", cmd, &home.join("quickstart.log")).unwrap();
    wait_for_port(&mut process, http, Duration::from_secs(30)).unwrap();
    (process, http)
}

/// The checkout the editing examples work on: every file they name, in the state they expect.
fn write_checkout(dir: &Path) {
    let files: [(&str, &str); 8] = [
        (
            "apps/my-app/dev/kustomization.yaml",
            "resources:\n  - deployment.yaml\n  - cronjob.yaml\nimages:\n  - name: registry.example.com/my-app\n    newTag: v1.0.0\nhelmCharts:\n  - name: podinfo\n    repo: oci://ghcr.io/stefanprodan/charts\n    version: 6.5.0\n",
        ),
        (
            "charts/shop/Chart.yaml",
            "apiVersion: v2\nname: shop\nversion: 1.0.0\ndependencies:\n  - name: common\n    version: 2.19.0\n    repository: https://charts.bitnami.com/bitnami\n  - name: common\n    alias: common-next\n    version: 2.19.0\n    repository: oci://registry-1.docker.io/bitnamicharts\n",
        ),
        (
            "apps/my-app/dev/deployment.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: my-app\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: registry.example.com/my-app\n",
        ),
        (
            "apps/my-app/dev/cronjob.yaml",
            "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: my-app-report\nspec:\n  schedule: \"0 * * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers:\n            - name: report\n              image: registry.example.com/my-app:v1.0.0\n",
        ),
        (
            "apps/my-app/dev/values.yaml",
            "image:\n  repository: registry.example.com/my-app\n  tag: v1.0.0\n",
        ),
        (
            "k8s/deployment.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: registry.local:5000/team/app:1.9\n",
        ),
        (
            "charts/app/values.yaml",
            "image:\n  repository: registry.example.com/app\n  tag: 1.3.0\n",
        ),
        (
            "values.yaml",
            "metadata:\n  annotations:\n    app.kubernetes.io/version: \"1.19\"\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: repo/app:1.1\n",
        ),
    ];
    for (path, content) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

/// The password of the README's `bot` user at the smart HTTP remote (`${GIT_TOKEN}`).
const GIT_TOKEN: &str = "readme-git-password-7c1d";

/// The GitOps repository the README's release configuration releases `api` into, served over
/// smart HTTP behind basic auth as the README's `platform` is; its URL.
fn platform_repository() -> (BareRepo, SmartHttp, String) {
    let kustomization =
        b"resources: []\nimages:\n  - name: registry.example.com/team/api\n    newTag: 0.0.1\n";
    let repo = BareRepo::with_files(&[
        ("apps/api/dev/kustomization.yaml", kustomization),
        ("apps/api/staging/kustomization.yaml", kustomization),
        (
            "apps/api/prod/values.yaml",
            b"image:\n  repository: registry.example.com/team/api\n  tag: 0.0.1\n",
        ),
    ])
    .unwrap();
    let git = SmartHttp::start(
        repo.root(),
        Some(BasicAuth {
            username: "bot".to_owned(),
            password: GIT_TOKEN.to_owned(),
        }),
    )
    .unwrap();
    let url = git.url(repo.name());
    (repo, git, url)
}

/// The README's configuration with the test's rewrites (see the module documentation).
fn server_config(readme_config: &str, platform_url: &str) -> String {
    readme_config
        .lines()
        .filter(|l| !l.starts_with("listen:") && !l.starts_with("data_dir:"))
        .map(|l| {
            l.replace("https://git.example.com/infra/platform.git", platform_url)
                .replace("https://api.github.com", "http://127.0.0.1:9")
                .replace(
                    "sha256: \"…\"",
                    &format!("sha256: \"{}\"", sha256_hex(TOKEN)),
                )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const CONFIG_ENV: [(&str, &str); 5] = [
    ("GIT_TOKEN", GIT_TOKEN),
    ("GITHUB_TOKEN", "readme-github-token"),
    ("GH_WEBHOOK_SECRET", "readme-webhook-secret"),
    ("TUG_TRIGGER_TOKEN", TOKEN),
    ("SLACK_PROD", "http://127.0.0.1:9/slack"),
];

#[test]
fn every_block_of_the_readme_runs() {
    let blocks = blocks();
    let not_run: Vec<&str> = blocks
        .iter()
        .filter(|b| b.no_run())
        .map(Block::first_line)
        .collect();
    assert_eq!(not_run, NOT_RUN, "blocks marked no-run");
    for b in &blocks {
        assert!(
            matches!(b.lang(), "sh" | "yaml" | "text"),
            "README.md:{}: a block needs an info string the test knows (sh, yaml, text): {:?}",
            b.line,
            b.info
        );
    }
    let scratch = Scratch::new().unwrap();
    let home = scratch.dir("home").unwrap();
    let mut ran = 0;

    // Configurations: the server's alone, then with the release section added.
    let configs: Vec<&Block> = blocks
        .iter()
        .filter(|b| b.lang() == "yaml" && b.first_line().starts_with("# tug.yaml"))
        .collect();
    assert_eq!(
        configs.len(),
        2,
        "the server configuration and its release section"
    );
    let (platform, _git, platform_url) = platform_repository();
    let base = server_config(&configs[0].text, &platform_url);
    let full = format!("{base}\n{}", server_config(&configs[1].text, &platform_url));
    for (name, yaml, block) in [
        ("base.yaml", &base, configs[0]),
        ("full.yaml", &full, configs[1]),
    ] {
        let path = scratch.join(name);
        std::fs::write(&path, yaml).unwrap();
        let out = TugServer::clean_command(tug_binary(), &home, &CONFIG_ENV)
            .args(["server", "--check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_ok(
            &out,
            &format!("tug server --check on README.md:{}", block.line),
        );
        ran += 1;
    }

    // Deploy specs apply to a checkout holding the files they name.
    let checkout = scratch.dir("checkout").unwrap();
    write_checkout(&checkout);
    for b in blocks
        .iter()
        .filter(|b| b.lang() == "yaml" && b.first_line().starts_with("- url:"))
    {
        std::fs::write(checkout.join("specs.yaml"), &b.text).unwrap();
        let out = bash(
            "tug apply specs.yaml --dir . --dry-run",
            &checkout,
            &home,
            &[],
        );
        let diff = assert_ok(&out, &format!("the specs of README.md:{}", b.line));
        for changed in ["kustomization.yaml", "values.yaml", "cronjob.yaml"] {
            assert!(diff.contains(changed), "{changed} unchanged:\n{diff}");
        }
        ran += 1;
    }

    // Shell blocks.
    let (_quickstart, quickstart_port) = quickstart(&home);
    let release_server = TugServer::start_with_env(tug_binary(), &full, &CONFIG_ENV).unwrap();
    let work = scratch.dir("work").unwrap();
    let release_env = [
        ("TUG_TOKEN", TOKEN),
        ("TUG_SERVER", &*release_server.http_url()),
        ("SHA", "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"),
        ("AUTHOR", "Ann Author"),
        ("EMAIL", "ann@example.com"),
        ("MESSAGE", "fix the checkout"),
        ("JOB_URL", "https://ci.example.com/jobs/7"),
        (
            "DIGEST",
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ),
    ];
    for b in blocks.iter().filter(|b| b.lang() == "sh" && !b.no_run()) {
        let what = format!("the block at README.md:{}", b.line);
        if b.text.contains("tug edit ") {
            assert_ok(&bash(&b.text, &checkout, &home, &[]), &what);
        } else if b.text.contains("tug artifact init") {
            // Before the block: an earlier build of api runs in dev and staging, so the block's
            // promotion and rollback have a history to work on.
            let mut earlier = release_env.to_vec();
            earlier.push(("SHORT_SHA", "1111111"));
            let ci = b.text.split("\n\n").next().unwrap();
            let setup = format!(
                "{ci}\ntug release --service api --env dev --artifact main-1111111\n\
                 tug promote --service api --env staging\n"
            );
            assert_ok(&bash(&setup, &work, &home, &earlier), "the release setup");
            let mut env = release_env.to_vec();
            env.push(("SHORT_SHA", "2222222"));
            let out = bash(&b.text, &work, &home, &env);
            let stdout = assert_ok(&out, &what);
            assert!(
                stdout.contains("staging main-2222222 promote succeeded"),
                "{stdout}"
            );
            assert!(
                stdout.contains("staging main-1111111 rollback succeeded"),
                "{stdout}"
            );
            let staging = platform
                .read_file("main", "apps/api/staging/kustomization.yaml")
                .unwrap()
                .unwrap();
            let staging = String::from_utf8(staging).unwrap();
            assert!(staging.contains("newTag: \"1111111\""), "{staging}");
        } else {
            let script = b
                .text
                .replace("127.0.0.1:12011", &format!("127.0.0.1:{quickstart_port}"));
            let out = bash(&script, &work, &home, &[]);
            let stdout = assert_ok(&out, &what);
            if b.text.contains("curl") {
                assert!(
                    stdout.contains("was successful")
                        && stdout.contains("\"status\":\"succeeded\""),
                    "{stdout}"
                );
            }
        }
        ran += 1;
    }
    let runnable = blocks
        .iter()
        .filter(|b| !b.no_run() && b.lang() != "text")
        .count();
    assert_eq!(ran, runnable, "every block that is not marked no-run ran");
}

#[test]
fn a_refused_command_must_exit_1_and_say_why() {
    let scratch = Scratch::new().unwrap();
    let home: PathBuf = scratch.dir("home").unwrap();
    let refused = |block: &str| bash(block, scratch.path(), &home, &[]);
    let ok = refused("sh -c 'echo policy_violation >&2; exit 1'  # refused: policy_violation");
    assert!(ok.status.success(), "{ok:?}");
    let succeeded = refused("true  # refused: policy_violation");
    assert_eq!(succeeded.status.code(), Some(97), "{succeeded:?}");
    let other_words = refused("sh -c 'echo nope >&2; exit 1'  # refused: policy_violation");
    assert_eq!(other_words.status.code(), Some(98), "{other_words:?}");
}
