//! `tug apply SPECS --push` against real git servers on 127.0.0.1: what lands in the remote, the
//! commit it lands as, and that credentials stay out of output, files and argv.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

use std::path::{Path, PathBuf};

use tug_testkit::{BareRepo, BasicAuth, GitDaemon, LogEntry, SmartHttp, Sshd};
use util::{Dir, Run};

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
    spec:
      containers:
        - name: app
          image: registry.example.com/my-app:v1.2.2  # set by CI
";

fn manifests() -> BareRepo {
    BareRepo::with_files(&[
        (
            "apps/my-app/dev/kustomization.yaml",
            KUSTOMIZATION.as_bytes(),
        ),
        ("apps/my-app/dev/values.yaml", VALUES.as_bytes()),
        ("apps/my-app/dev/deployment.yaml", DEPLOYMENT.as_bytes()),
    ])
    .unwrap()
}

/// The seed's spec: a kustomize image and a yq value in one path.
fn seed_specs(url: &str, tag: &str) -> String {
    format!(
        "\
- url: {url}
  updates:
  - branch: main
    paths:
    - path: apps/my-app/dev
      kustomize:
        images:
        - name: registry.example.com/my-app
          newTag: {tag}
      yq:
      - file: values.yaml
        key: .image.tag
        value: {tag}
"
    )
}

fn yq_specs(url: &str, branch: &str, key: &str, value: &str) -> String {
    format!(
        "- url: {url}\n  updates:\n  - branch: {branch}\n    paths:\n    - path: apps/my-app/dev\n      yq: [{{file: values.yaml, key: {key}, value: {value}}}]\n"
    )
}

fn file(remote: &BareRepo, rev: &str, path: &str) -> String {
    String::from_utf8(remote.read_file(rev, path).unwrap().unwrap()).unwrap()
}

fn tip(remote: &BareRepo, branch: &str) -> String {
    remote.tip(branch).unwrap().unwrap()
}

fn head_commit(remote: &BareRepo, branch: &str) -> LogEntry {
    remote.log(branch).unwrap().remove(0)
}

fn trailer<'a>(entry: &'a LogEntry, key: &str) -> Vec<&'a str> {
    entry
        .trailers
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Asserts a run pushed exactly one commit to `branch` and returns it.
fn assert_pushed(run: &Run, remote: &BareRepo, url: &str, branch: &str, before: &str) -> LogEntry {
    let commit = head_commit(remote, branch);
    assert_eq!(
        run.stdout,
        format!("{url} {branch}: pushed {}\n", commit.commit),
        "{run}"
    );
    assert_eq!(commit.parents, [before.to_owned()], "one commit on top");
    commit
}

#[test]
fn pushes_one_commit_over_file_url_then_is_up_to_date() {
    let remote = manifests();
    let url = remote.file_url();
    let before = tip(&remote, "main");
    let dir = Dir::new();
    dir.write("specs.yaml", seed_specs(&url, "v1.2.3"));
    let run = dir
        .tug(&[
            "apply",
            "specs.yaml",
            "--push",
            "--author-name",
            "CI Bot",
            "--author-email",
            "ci@example.invalid",
        ])
        .ok();
    let commit = assert_pushed(&run, &remote, &url, "main", &before);
    assert_eq!(run.stderr, "");
    assert_eq!(
        file(&remote, "main", "apps/my-app/dev/kustomization.yaml"),
        KUSTOMIZATION.replace("newTag: v1.2.2", "newTag: v1.2.3")
    );
    assert_eq!(
        file(&remote, "main", "apps/my-app/dev/values.yaml"),
        VALUES.replace("tag: v1.2.2", "tag: v1.2.3")
    );
    assert_eq!(
        file(&remote, "main", "apps/my-app/dev/deployment.yaml"),
        DEPLOYMENT
    );
    assert_eq!(
        (commit.author_name.as_str(), commit.author_email.as_str()),
        ("CI Bot", "ci@example.invalid")
    );
    assert_eq!(
        (
            commit.committer_name.as_str(),
            commit.committer_email.as_str()
        ),
        ("CI Bot", "ci@example.invalid")
    );
    assert_eq!(commit.subject, "deploy(apps/my-app/dev): 2 edits");
    let request = trailer(&commit, "Tug-Request");
    assert_eq!(request.len(), 1, "{commit:?}");
    assert!(uuid::Uuid::parse_str(request[0]).is_ok(), "{commit:?}");
    assert_eq!(
        trailer(&commit, "Tug-Change"),
        [
            "set image registry.example.com/my-app:v1.2.3 in apps/my-app/dev",
            "set .image.tag=v1.2.3 in apps/my-app/dev/values.yaml",
        ]
    );
    // Only the two edited files changed.
    let changed = remote
        .git(&["diff", "--name-only", &before, &commit.commit])
        .unwrap();
    assert_eq!(
        String::from_utf8(changed).unwrap(),
        "apps/my-app/dev/kustomization.yaml\napps/my-app/dev/values.yaml\n"
    );

    // The same specs again: nothing to do, nothing pushed.
    let run = dir.tug(&["apply", "specs.yaml", "--push"]).ok();
    assert_eq!(run.stdout, format!("{url} main: already up to date\n"));
    assert_eq!(tip(&remote, "main"), commit.commit);
    assert_eq!(remote.commit_count("main").unwrap(), 2);
}

#[test]
fn author_from_environment_and_message_from_flag() {
    let remote = manifests();
    let url = remote.file_url();
    let before = tip(&remote, "main");
    let dir = Dir::new();
    dir.write("specs.yaml", seed_specs(&url, "v2.0.0"));
    let run = dir
        .tug(&[
            "apply",
            "specs.yaml",
            "--push",
            "-m",
            "release my-app v2.0.0\n\nfrom pipeline 42",
        ])
        .env("TUG_AUTHOR_NAME", "Release Train")
        .env("TUG_AUTHOR_EMAIL", "train@example.invalid")
        .ok();
    let commit = assert_pushed(&run, &remote, &url, "main", &before);
    assert_eq!(commit.author_name, "Release Train");
    assert_eq!(commit.author_email, "train@example.invalid");
    assert_eq!(commit.subject, "release my-app v2.0.0");
    assert!(
        commit
            .message
            .starts_with("release my-app v2.0.0\n\nfrom pipeline 42\n\n"),
        "{commit:?}"
    );
    assert_eq!(trailer(&commit, "Tug-Change").len(), 2, "{commit:?}");

    // Without any author setting, tug commits as itself.
    let dir = Dir::new();
    dir.write("specs.yaml", seed_specs(&url, "v2.0.1"));
    dir.tug(&["apply", "specs.yaml", "--push"]).ok();
    let commit = head_commit(&remote, "main");
    assert_eq!(
        (commit.author_name.as_str(), commit.author_email.as_str()),
        ("tug", "tug@localhost")
    );
}

#[test]
fn allow_empty_commits_when_already_up_to_date() {
    let remote = manifests();
    let url = remote.file_url();
    let before = tip(&remote, "main");
    let dir = Dir::new();
    // The files already say v1.2.2: a plain run has nothing to do.
    dir.write("specs.yaml", yq_specs(&url, "main", ".image.tag", "v1.2.2"));
    let run = dir.tug(&["apply", "specs.yaml", "--push"]).ok();
    assert_eq!(run.stdout, format!("{url} main: already up to date\n"));
    assert_eq!(tip(&remote, "main"), before);

    let run = dir
        .tug(&["apply", "specs.yaml", "--push", "--allow-empty"])
        .ok();
    let commit = assert_pushed(&run, &remote, &url, "main", &before);
    let changed = remote
        .git(&["diff", "--name-only", &before, &commit.commit])
        .unwrap();
    assert!(changed.is_empty(), "{}", String::from_utf8_lossy(&changed));
    assert_eq!(trailer(&commit, "Tug-Request").len(), 1, "{commit:?}");
}

#[test]
fn a_branch_that_does_not_exist_is_named_and_nothing_is_pushed() {
    let remote = manifests();
    let url = remote.file_url();
    let dir = Dir::new();
    dir.write("specs.yaml", yq_specs(&url, "relase", ".image.tag", "v9"));
    let run = dir.tug(&["apply", "specs.yaml", "--push"]).fails();
    assert!(
        run.stderr
            .contains(&format!("branch relase does not exist in {url}")),
        "{run}"
    );
    // The missing branch is the whole story: no path of it is named as missing too.
    assert!(!run.stderr.contains("no such"), "{run}");
    assert_eq!(remote.tip("relase").unwrap(), None, "no branch was created");
}

#[test]
fn one_commit_per_repository_branch() {
    let main_repo = manifests();
    main_repo.git(&["branch", "staging", "main"]).unwrap();
    let other = manifests();
    let (url, other_url) = (main_repo.file_url(), other.file_url());
    let (main_before, staging_before, other_before) = (
        tip(&main_repo, "main"),
        tip(&main_repo, "staging"),
        tip(&other, "main"),
    );
    let dir = Dir::new();
    // main is named twice: both updates go into its one commit, in order.
    dir.write(
        "specs.yaml",
        format!(
            "{}{}{}{}",
            yq_specs(&url, "main", ".image.tag", "main-1"),
            yq_specs(&url, "staging", ".image.tag", "staging-1"),
            yq_specs(&other_url, "main", ".image.tag", "other-1"),
            yq_specs(&url, "main", ".replicaCount", "5"),
        ),
    );
    let run = dir.tug(&["apply", "specs.yaml", "--push"]).ok();
    let (m, s, o) = (
        head_commit(&main_repo, "main"),
        head_commit(&main_repo, "staging"),
        head_commit(&other, "main"),
    );
    assert_eq!(
        run.stdout,
        format!(
            "{url} main: pushed {}\n{url} staging: pushed {}\n{other_url} main: pushed {}\n",
            m.commit, s.commit, o.commit
        )
    );
    assert_eq!(m.parents, [main_before]);
    assert_eq!(s.parents, [staging_before]);
    assert_eq!(o.parents, [other_before]);
    assert_eq!(
        file(&main_repo, "main", "apps/my-app/dev/values.yaml"),
        "replicaCount: 5  # scaled by hand\nimage:\n  tag: main-1  # set by CI\n"
    );
    assert_eq!(
        file(&main_repo, "staging", "apps/my-app/dev/values.yaml"),
        VALUES.replace("v1.2.2", "staging-1")
    );
    assert_eq!(
        file(&other, "main", "apps/my-app/dev/values.yaml"),
        VALUES.replace("v1.2.2", "other-1")
    );
    assert_eq!(trailer(&m, "Tug-Change").len(), 2, "{m:?}");

    // --url and --branch pick a part of the specs.
    dir.write(
        "more.yaml",
        format!(
            "{}{}",
            yq_specs(&url, "main", ".image.tag", "main-2"),
            yq_specs(&url, "staging", ".image.tag", "staging-2"),
        ),
    );
    let run = dir
        .tug(&[
            "apply",
            "more.yaml",
            "--push",
            "--url",
            &url,
            "--branch",
            "staging",
        ])
        .ok();
    assert!(
        run.stdout.starts_with(&format!("{url} staging: pushed ")),
        "{run}"
    );
    assert_eq!(tip(&main_repo, "main"), m.commit);
    assert_eq!(
        file(&main_repo, "staging", "apps/my-app/dev/values.yaml"),
        VALUES.replace("v1.2.2", "staging-2")
    );
}

#[test]
fn a_human_commit_between_runs_does_not_stop_the_next_run() {
    let remote = manifests();
    let url = remote.file_url();
    let dir = Dir::new();
    dir.write("specs.yaml", seed_specs(&url, "v1.2.3"));
    dir.tug(&["apply", "specs.yaml", "--push"]).ok();
    let first = tip(&remote, "main");

    // Someone scales the app by hand: another line of a file tug edits.
    let human = remote
        .human_commit(
            "main",
            "apps/my-app/dev/values.yaml",
            |current| {
                String::from_utf8(current.unwrap().to_vec())
                    .unwrap()
                    .replace("replicaCount: 1", "replicaCount: 4")
                    .into_bytes()
            },
            "scale my-app to 4",
        )
        .unwrap();
    assert_eq!(remote.log("main").unwrap()[1].commit, first);

    dir.write("specs.yaml", seed_specs(&url, "v1.2.4"));
    let run = dir.tug(&["apply", "specs.yaml", "--push"]).ok();
    let commit = assert_pushed(&run, &remote, &url, "main", &human);
    assert_eq!(
        file(&remote, "main", "apps/my-app/dev/values.yaml"),
        "replicaCount: 4  # scaled by hand\nimage:\n  tag: v1.2.4  # set by CI\n"
    );
    // Linear: tug, human, tug on top of the initial commit; no merges.
    let log = remote.log("main").unwrap();
    assert_eq!(log.len(), 4);
    assert!(log.iter().all(|e| e.parents.len() <= 1), "{log:?}");
    assert_eq!(
        log.iter().map(|e| e.commit.as_str()).collect::<Vec<_>>()[..3],
        [commit.commit.as_str(), human.as_str(), first.as_str()]
    );
}

#[test]
fn an_unreachable_repository_does_not_hide_what_was_pushed() {
    let remote = manifests();
    let url = remote.file_url();
    let before = tip(&remote, "main");
    let dir = Dir::new();
    let missing = format!("file://{}", dir.outside("no-such-repo.git").display());
    dir.write(
        "specs.yaml",
        format!(
            "{}{}",
            yq_specs(&url, "main", ".image.tag", "v7"),
            yq_specs(&missing, "main", ".image.tag", "v7"),
        ),
    );
    let run = dir.tug(&["apply", "specs.yaml", "--push"]).fails();
    let commit = assert_pushed(&run, &remote, &url, "main", &before);
    assert_eq!(
        file(&remote, &commit.commit, "apps/my-app/dev/values.yaml"),
        VALUES.replace("v1.2.2", "v7")
    );
    assert!(
        run.stderr.starts_with(&format!(
            "{missing} main: failed: cannot open a mirror of {missing}"
        )),
        "{run}"
    );
    assert!(
        run.stderr.ends_with("tug: error: 1 of 2 updates failed\n"),
        "{run}"
    );
}

#[test]
fn dry_run_with_push_pushes_nothing() {
    let remote = manifests();
    let url = remote.file_url();
    let before = tip(&remote, "main");
    let dir = Dir::new();
    dir.write("specs.yaml", yq_specs(&url, "main", ".image.tag", "v9"));
    let run = dir
        .tug(&["apply", "specs.yaml", "--push", "--dry-run"])
        .ok();
    assert_eq!(
        run.stdout,
        "\
--- a/apps/my-app/dev/values.yaml
+++ b/apps/my-app/dev/values.yaml
@@ -1,3 +1,3 @@
 replicaCount: 1  # scaled by hand
 image:
-  tag: v1.2.2  # set by CI
+  tag: v9  # set by CI
"
    );
    assert_eq!(tip(&remote, "main"), before);
    assert_eq!(remote.commit_count("main").unwrap(), 1);

    let run = dir
        .tug(&["apply", "specs.yaml", "--push", "--dry-run", "-o", "json"])
        .ok();
    let v = run.json();
    assert_eq!(v["dryRun"], true);
    assert_eq!(v["updates"], serde_json::json!([]));
    assert_eq!(v["files"][0]["path"], "apps/my-app/dev/values.yaml");
    assert!(
        v["files"][0]["diff"]
            .as_str()
            .unwrap()
            .contains("\n-  tag: v1.2.2  # set by CI\n+  tag: v9  # set by CI\n"),
        "{v}"
    );
    assert_eq!(tip(&remote, "main"), before);
}

#[test]
fn a_failing_edit_pushes_nothing() {
    let remote = manifests();
    let url = remote.file_url();
    let before = tip(&remote, "main");
    let dir = Dir::new();
    dir.write(
        "specs.yaml",
        format!(
            "- url: {url}\n  updates:\n  - branch: main\n    paths:\n    - path: apps/my-app/dev\n      yq: [{{file: values.yaml, key: .image.tag, value: v5}}]\n      images: [{{name: registry.example.com/not-here, newTag: v5}}]\n"
        ),
    );
    let run = dir.tug(&["apply", "specs.yaml", "--push"]).fails();
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        format!(
            "{url} main: failed: specs[0].updates[0].paths[0].images[0]: no container image named registry.example.com/not-here in the manifests of apps/my-app/dev\n\
             tug: error: 1 of 1 updates failed\n"
        )
    );
    assert_eq!(tip(&remote, "main"), before);
    assert_eq!(remote.commit_count("main").unwrap(), 1);

    // A branch that does not exist is an error too, and creates nothing.
    dir.write("specs.yaml", yq_specs(&url, "nope", ".image.tag", "v5"));
    let run = dir.tug(&["apply", "specs.yaml", "--push"]).fails();
    assert!(
        run.stderr.starts_with(&format!("{url} nope: failed: ")),
        "{run}"
    );
    assert_eq!(remote.tip("nope").unwrap(), None);
}

#[test]
fn json_output_of_a_push() {
    let remote = manifests();
    let url = remote.file_url();
    let dir = Dir::new();
    dir.write("specs.yaml", seed_specs(&url, "v1.2.3"));
    let run = dir
        .tug(&["apply", "specs.yaml", "--push", "-o", "json"])
        .ok();
    let v = run.json();
    assert_eq!(
        v,
        serde_json::json!({
            "dryRun": false,
            "edits": v["edits"],
            "files": [],
            "updates": [{"url": url, "branch": "main", "status": "committed", "commit": tip(&remote, "main")}],
        })
    );
    let run = dir
        .tug(&["apply", "specs.yaml", "--push", "-o", "json"])
        .ok();
    assert_eq!(
        run.json()["updates"],
        serde_json::json!([{"url": url, "branch": "main", "status": "up_to_date"}])
    );

    dir.write("specs.yaml", yq_specs(&url, "main", ".image", "x"));
    let run = dir
        .tug(&["apply", "specs.yaml", "--push", "-o", "json"])
        .run();
    assert_eq!(run.status.code(), Some(1), "{run}");
    let v = run.json();
    assert_eq!(v["updates"][0]["status"], "failed", "{v}");
    assert!(
        v["updates"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("specs[0].updates[0].paths[0].yq[0]: "),
        "{v}"
    );
}

#[test]
fn pushes_over_git_daemon() {
    let remote = manifests();
    let daemon = GitDaemon::start(remote.root()).unwrap();
    let url = daemon.url(remote.name());
    let before = tip(&remote, "main");
    let dir = Dir::new();
    dir.write("specs.yaml", seed_specs(&url, "v1.2.3"));
    let run = dir.tug(&["apply", "specs.yaml", "--push"]).ok();
    let commit = assert_pushed(&run, &remote, &url, "main", &before);
    assert_eq!(
        file(&remote, "main", "apps/my-app/dev/kustomization.yaml"),
        KUSTOMIZATION.replace("newTag: v1.2.2", "newTag: v1.2.3")
    );
    let run = dir.tug(&["apply", "specs.yaml", "--push"]).ok();
    assert_eq!(run.stdout, format!("{url} main: already up to date\n"));
    assert_eq!(tip(&remote, "main"), commit.commit);
}

/// A `git` that appends its argv (one argument per line) to a log before running the real git.
fn git_argv_spy(dir: &Path) -> (PathBuf, PathBuf) {
    let real = tug_testkit::require_binary("git", "git").unwrap();
    let bin = dir.join("spy-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("argv.log");
    let spy = bin.join("git");
    std::fs::write(
        &spy,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{log}'\nexec '{real}' \"$@\"\n",
            log = log.display(),
            real = real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&spy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (bin, log)
}

const HTTP_USER: &str = "deployer";
const HTTP_PASSWORD: &str = "s3cr3t-Pa55-9f1c7e";

#[test]
fn pushes_over_smart_http_with_basic_auth_and_keeps_the_password_secret() {
    let remote = manifests();
    let http = SmartHttp::start(
        remote.root(),
        Some(BasicAuth {
            username: HTTP_USER.to_owned(),
            password: HTTP_PASSWORD.to_owned(),
        }),
    )
    .unwrap();
    let url = http.url(remote.name());
    let before = tip(&remote, "main");
    let dir = Dir::new();
    let (spy_bin, argv_log) = git_argv_spy(&dir.outside("spy"));
    dir.write("specs.yaml", seed_specs(&url, "v1.2.3"));

    let run = dir
        .tug(&[
            "apply",
            "specs.yaml",
            "--push",
            "--http-username",
            HTTP_USER,
        ])
        .env("TUG_GIT_PASSWORD", HTTP_PASSWORD)
        .path_first(&spy_bin)
        .ok();
    let commit = assert_pushed(&run, &remote, &url, "main", &before);
    assert_eq!(
        file(&remote, "main", "apps/my-app/dev/values.yaml"),
        VALUES.replace("tag: v1.2.2", "tag: v1.2.3")
    );

    // The username can come from the environment as well; second run is up to date.
    let run = dir
        .tug(&["apply", "specs.yaml", "--push"])
        .env("TUG_GIT_USERNAME", HTTP_USER)
        .env("TUG_GIT_PASSWORD", HTTP_PASSWORD)
        .path_first(&spy_bin)
        .ok();
    assert_eq!(run.stdout, format!("{url} main: already up to date\n"));
    assert_eq!(tip(&remote, "main"), commit.commit);

    // A wrong password fails without echoing either password.
    dir.write("specs.yaml", seed_specs(&url, "v1.2.4"));
    let wrong = "wr0ng-Pa55-4d2a";
    let failed = dir
        .tug(&[
            "apply",
            "specs.yaml",
            "--push",
            "--http-username",
            HTTP_USER,
        ])
        .env("TUG_GIT_PASSWORD", wrong)
        .path_first(&spy_bin)
        .fails();
    assert_eq!(tip(&remote, "main"), commit.commit);

    // The spy saw git run, with credentials in none of its arguments.
    let argv = std::fs::read_to_string(&argv_log).unwrap();
    assert!(argv.contains("fetch") || argv.contains("clone"), "{argv}");
    // Pushes to an HTTP(S) remote go from tug itself, the password in an `Authorization`
    // header: git only fetched.
    assert!(!argv.lines().any(|arg| arg == "push"), "{argv}");
    for secret in [HTTP_PASSWORD, wrong] {
        assert!(!argv.contains(secret), "password in a git argv");
        for out in [&run, &failed] {
            assert!(!out.stdout.contains(secret), "{out}");
            assert!(!out.stderr.contains(secret), "{out}");
        }
        let leaks = util::files_containing(&dir.cache(), secret.as_bytes());
        assert!(leaks.is_empty(), "password stored in {leaks:?}");
        let leaks = util::files_containing(&dir.home(), secret.as_bytes());
        assert!(leaks.is_empty(), "password stored in {leaks:?}");
    }
    // The cache holds the mirror: the search above looked at real files.
    assert!(util::count_files(&dir.cache()) > 10);

    // A user name without a password is refused before any network use.
    let run = dir
        .tug(&[
            "apply",
            "specs.yaml",
            "--push",
            "--http-username",
            HTTP_USER,
        ])
        .fails();
    assert_eq!(
        run.stderr,
        "tug: error: --http-username is set but TUG_GIT_PASSWORD is not: put the password or token there\n"
    );
}

#[test]
fn pushes_over_ssh_with_a_pinned_host_key() {
    let remote = manifests();
    let sshd = Sshd::start().unwrap();
    let url = sshd.url(remote.path());
    let before = tip(&remote, "main");
    let dir = Dir::new();
    dir.write("specs.yaml", seed_specs(&url, "v1.2.3"));
    let key = sshd.client_key();
    let known_hosts = sshd.known_hosts();

    // A known_hosts file without the server's key: host key checking refuses the server.
    let empty = dir.outside("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let run = dir
        .tug(&["apply", "specs.yaml", "--push", "--ssh-key"])
        .arg(&key)
        .arg("--known-hosts")
        .arg(&empty)
        .fails();
    assert!(
        run.stderr.starts_with(&format!("{url} main: failed: ")),
        "{run}"
    );
    assert!(run.stderr.contains("Host key verification failed"), "{run}");
    assert_eq!(tip(&remote, "main"), before);

    let run = dir
        .tug(&["apply", "specs.yaml", "--push", "--ssh-key"])
        .arg(&key)
        .arg("--known-hosts")
        .arg(&known_hosts)
        .ok();
    let commit = assert_pushed(&run, &remote, &url, "main", &before);
    assert_eq!(
        file(&remote, "main", "apps/my-app/dev/kustomization.yaml"),
        KUSTOMIZATION.replace("newTag: v1.2.2", "newTag: v1.2.3")
    );

    // Key and known_hosts from the environment; nothing left to do.
    let run = dir
        .tug(&["apply", "specs.yaml", "--push"])
        .env("TUG_SSH_KEY", &key)
        .env("TUG_SSH_KNOWN_HOSTS", &known_hosts)
        .ok();
    assert_eq!(run.stdout, format!("{url} main: already up to date\n"));
    assert_eq!(tip(&remote, "main"), commit.commit);
}
