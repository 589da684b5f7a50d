//! Landing over real servers on 127.0.0.1: git daemon, smart HTTP (with basic auth), sshd.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use tug_git::{Auth, GitError, LandResult, Mirror, MirrorOptions, Remote, Secret, land};
use tug_testkit::{BareRepo, BasicAuth, GitDaemon, Scratch, SmartHttp, Sshd};

fn manifests() -> BareRepo {
    BareRepo::with_files(&[(KUSTOMIZATION, MANIFEST.as_bytes())]).unwrap()
}

/// Lands two batches through `mirror` and checks that the remote has them.
fn land_twice(mirror: &Mirror, remote: &BareRepo) {
    for (i, tag) in ["\"7.0.0\"", "\"7.0.1\""].iter().enumerate() {
        let change = SetLine::new(KUSTOMIZATION, "newTag", tag, &format!("req-{i}"));
        let report = land(mirror, "main", &[&change], &options()).unwrap();
        let LandResult::Committed { commit } = report.results[0] else {
            panic!("{:?}", report.results)
        };
        assert_eq!(remote.tip("main").unwrap(), Some(commit.to_hex()));
        let content =
            String::from_utf8(remote.read_file("main", KUSTOMIZATION).unwrap().unwrap()).unwrap();
        assert!(content.contains(&format!("newTag: {tag}")), "{content}");
    }
}

#[test]
fn lands_over_git_daemon() {
    let remote = manifests();
    let daemon = GitDaemon::start(remote.root()).unwrap();
    let data = Scratch::new().unwrap();
    let mirror = open(
        data.path(),
        &daemon.url(remote.name()),
        MirrorOptions::default(),
    );
    land_twice(&mirror, &remote);
}

#[test]
fn lands_over_smart_http() {
    let remote = manifests();
    let http = SmartHttp::start(remote.root(), None).unwrap();
    let data = Scratch::new().unwrap();
    let mirror = open(
        data.path(),
        &http.url(remote.name()),
        MirrorOptions::default(),
    );
    land_twice(&mirror, &remote);
}

const USER: &str = "deployer";
const PASSWORD: &str = "Pa55-w0rd-7c1f9e";

fn http_auth(password: &str) -> Auth {
    Auth::Http {
        username: USER.to_owned(),
        password: Secret::new(password),
    }
}

/// A `git` that records its argv (one argument per line) before running the real git.
fn argv_spy(dir: &Path) -> (PathBuf, PathBuf) {
    let real = tug_testkit::require_binary("git", "git").unwrap();
    let log = dir.join("argv.log");
    let spy = dir.join("git-spy");
    std::fs::write(
        &spy,
        format!("#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{}'\nprintf '%s\\n' '--end--' >> '{}'\nexec '{}' \"$@\"\n", log.display(), log.display(), real.display()),
    )
    .unwrap();
    std::fs::set_permissions(&spy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (spy, log)
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).unwrap().flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let content = std::fs::read(&path).unwrap();
                if content.windows(needle.len()).any(|w| w == needle) {
                    hits.push(path);
                }
            }
        }
    }
    hits
}

#[test]
fn http_credentials_flow_through_askpass_and_are_stored_nowhere() {
    let remote = manifests();
    let http = SmartHttp::start(
        remote.root(),
        Some(BasicAuth {
            username: USER.to_owned(),
            password: PASSWORD.to_owned(),
        }),
    )
    .unwrap();
    let spy_dir = Scratch::new().unwrap();
    let (spy, spy_log) = argv_spy(spy_dir.path());
    let observed = ArgvLog::default();
    let data = Scratch::new().unwrap();
    let options = MirrorOptions {
        git_program: Some(spy),
        ..observed.options()
    };

    let mirror = Mirror::open(
        data.path(),
        Remote::new(http.url(remote.name()), http_auth(PASSWORD)),
        options,
    )
    .unwrap();
    land_twice(&mirror, &remote);

    let recorded = std::fs::read_to_string(&spy_log).unwrap();
    assert!(
        recorded.contains("clone"),
        "the spy saw the network commands:\n{recorded}"
    );
    assert!(
        !recorded.contains(PASSWORD),
        "password in argv:\n{recorded}"
    );
    // Pushes to an HTTP remote send the batch's pack from tug itself, with the credentials in
    // an `Authorization` header: no `git push` runs.
    assert_eq!(observed.count("push"), 0);
    assert!(
        observed
            .commands()
            .iter()
            .flatten()
            .all(|arg| !arg.contains(PASSWORD))
    );
    assert_eq!(
        files_containing(data.path(), PASSWORD.as_bytes()),
        Vec::<PathBuf>::new()
    );
    let config = std::fs::read_to_string(mirror.path().join("config")).unwrap();
    assert!(
        !config.contains(PASSWORD) && !config.contains(USER),
        "{config}"
    );
    // The askpass script is private to the user running tug.
    let askpass = data.path().join("git/askpass.sh");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&askpass).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn wrong_or_missing_http_credentials_fail_clearly_without_the_secret() {
    let remote = manifests();
    let http = SmartHttp::start(
        remote.root(),
        Some(BasicAuth {
            username: USER.to_owned(),
            password: PASSWORD.to_owned(),
        }),
    )
    .unwrap();
    let wrong = "wr0ng-Secret-42";
    for auth in [http_auth(wrong), Auth::None] {
        let data = Scratch::new().unwrap();
        let error = Mirror::open(
            data.path(),
            Remote::new(http.url(remote.name()), auth),
            MirrorOptions::default(),
        )
        .err()
        .unwrap();
        assert!(matches!(error, GitError::AuthFailed { .. }), "{error:?}");
        assert!(!error.is_transient());
        for text in [error.to_string(), format!("{error:?}")] {
            assert!(!text.contains(wrong) && !text.contains(PASSWORD), "{text}");
        }
    }
}

#[test]
fn lands_over_ssh_with_a_pinned_host_key() {
    let remote = manifests();
    let sshd = Sshd::start().unwrap();
    let data = Scratch::new().unwrap();
    let auth = Auth::Ssh {
        private_key_file: sshd.client_key(),
        known_hosts_file: sshd.known_hosts(),
    };
    let mirror = Mirror::open(
        data.path(),
        Remote::new(sshd.url(remote.path()), auth),
        MirrorOptions::default(),
    )
    .unwrap();
    land_twice(&mirror, &remote);
    // Both pushes went over one shared connection, whose socket lives in the private dir.
    let key_dirs: Vec<_> = std::fs::read_dir(data.path().join("git/ssh"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(key_dirs.len(), 1);
    let sockets = std::fs::read_dir(key_dirs[0].path())
        .unwrap()
        .flatten()
        .filter(|entry| std::os::unix::fs::FileTypeExt::is_socket(&entry.file_type().unwrap()))
        .count();
    assert_eq!(sockets, 1, "one control master for the mirror's host");
}

#[test]
fn an_unknown_ssh_host_key_is_refused() {
    let remote = manifests();
    let sshd = Sshd::start().unwrap();
    let data = Scratch::new().unwrap();
    let known_hosts = data.join("empty_known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    let auth = Auth::Ssh {
        private_key_file: sshd.client_key(),
        known_hosts_file: known_hosts.clone(),
    };
    let error = Mirror::open(
        data.path(),
        Remote::new(sshd.url(remote.path()), auth),
        MirrorOptions::default(),
    )
    .err()
    .unwrap();
    assert!(matches!(error, GitError::AuthFailed { .. }), "{error:?}");
    assert!(
        error.to_string().contains("Host key verification failed"),
        "{error}"
    );
    assert_eq!(
        std::fs::read_to_string(&known_hosts).unwrap(),
        "",
        "the unknown key was not learned"
    );
}

/// Makes the remote move `main` after `git push` checked its lease and before the ref update —
/// the race the remote reports as `cannot lock ref …: is at X but expected Y` — and lands a
/// change: the push is retried on the new tip, never failed, and the other commit is kept.
fn lands_after_the_branch_moves_mid_push(mirror: &Mirror, remote: &BareRepo) {
    // The mirror knows the current tip, so the lease check in `git push` passes.
    land_twice(mirror, remote);
    remote.move_branch_during_next_push("main").unwrap();
    let change = SetLine::new(KUSTOMIZATION, "newTag", "\"8.0.0\"", "req-raced");
    let report = land(mirror, "main", &[&change], &options()).unwrap();

    assert_eq!(report.attempts, 2, "the first push lost the race");
    let LandResult::Committed { commit } = report.results[0] else {
        panic!("{:?}", report.results)
    };
    let raced = remote.raced_commit().unwrap().expect("the hook moved main");
    let log = remote.log("main").unwrap();
    assert_eq!(log[0].commit, commit.to_hex());
    assert_eq!(
        log[0].parents,
        vec![raced.clone()],
        "re-applied on the new tip"
    );
    assert_eq!(log[1].commit, raced);
    assert!(
        log.iter().all(|c| c.parents.len() <= 1),
        "history is linear"
    );
    assert!(remote.read_file("main", "RACE.md").unwrap().is_some());
    let content =
        String::from_utf8(remote.read_file("main", KUSTOMIZATION).unwrap().unwrap()).unwrap();
    assert!(content.contains("newTag: \"8.0.0\""), "{content}");
}

#[test]
fn a_push_that_loses_a_race_is_reapplied_over_git_daemon() {
    let remote = manifests();
    let daemon = GitDaemon::start(remote.root()).unwrap();
    let data = Scratch::new().unwrap();
    let mirror = open(
        data.path(),
        &daemon.url(remote.name()),
        MirrorOptions::default(),
    );
    lands_after_the_branch_moves_mid_push(&mirror, &remote);
}

/// A mirror of `manifests()` served over smart HTTP, with the git commands it runs recorded.
/// The server and the scratch directory live as long as the returned values.
fn mirror_over_smart_http() -> (BareRepo, SmartHttp, Scratch, ArgvLog, Mirror) {
    let remote = manifests();
    let http = SmartHttp::start(remote.root(), None).unwrap();
    let data = Scratch::new().unwrap();
    let observed = ArgvLog::default();
    let mirror = open(data.path(), &http.url(remote.name()), observed.options());
    (remote, http, data, observed, mirror)
}

#[test]
fn a_push_that_loses_a_race_is_reapplied_over_smart_http() {
    let (remote, _http, _data, observed, mirror) = mirror_over_smart_http();
    lands_after_the_branch_moves_mid_push(&mirror, &remote);
    // The lost race was the remote's answer to tug's own push, not `git push`'s.
    assert_eq!(observed.count("push"), 0);
}

/// Makes the remote's `pre-receive` hook refuse every push, saying why.
fn freeze_main(remote: &BareRepo) {
    let hook = remote.path().join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\ncat >/dev/null\necho 'main is frozen until Monday' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

#[test]
fn a_push_refused_by_a_hook_over_smart_http_carries_the_hooks_words() {
    let (remote, _http, _data, observed, mirror) = mirror_over_smart_http();
    freeze_main(&remote);
    let before = remote.tip("main").unwrap();

    let change = SetLine::new(KUSTOMIZATION, "newTag", "\"9.0.0\"", "req-frozen");
    let error = land(&mirror, "main", &[&change], &options()).unwrap_err();

    assert!(matches!(error, GitError::PushRejected { .. }), "{error:?}");
    assert!(!error.is_transient());
    let text = error.to_string();
    assert!(
        text.contains("pre-receive hook declined") && text.contains("main is frozen until Monday"),
        "{text}"
    );
    assert_eq!(remote.tip("main").unwrap(), before);
    assert_eq!(observed.count("push"), 0);
}

/// The requests of pushes the server answered, oldest first: `ask` for an advertisement,
/// `send` for a pack.
fn pushes_seen(http: &SmartHttp) -> Vec<&'static str> {
    http.requests()
        .unwrap()
        .iter()
        .filter_map(|line| {
            if line.starts_with("GET ") && line.contains("service=git-receive-pack") {
                Some("ask")
            } else if line.starts_with("POST ") && line.contains("/git-receive-pack ") {
                Some("send")
            } else {
                None
            }
        })
        .collect()
}

fn land_one(mirror: &Mirror, tag: &str, id: &str) -> tug_git::LandReport {
    let change = SetLine::new(KUSTOMIZATION, "newTag", tag, id);
    land(mirror, "main", &[&change], &options()).unwrap()
}

#[test]
fn a_push_right_after_its_own_sends_the_pack_without_asking_for_the_refs() {
    let (remote, http, _data, observed, mirror) = mirror_over_smart_http();
    land_twice(&mirror, &remote);
    land_one(&mirror, "\"7.0.2\"", "req-third");

    assert_eq!(pushes_seen(&http), ["ask", "send", "send", "send"]);
    assert_eq!(remote.log("main").unwrap().len(), 4);
    assert_eq!(observed.count("push"), 0);
}

#[test]
fn a_ref_moved_by_another_pusher_between_two_pushes_is_found_and_the_batch_reapplied() {
    let (remote, http, _data, _observed, mirror) = mirror_over_smart_http();
    land_one(&mirror, "\"7.0.0\"", "req-first");
    let human = remote
        .human_commit("main", "NOTES.md", |_| b"by hand\n".to_vec(), "notes")
        .unwrap();

    let report = land_one(&mirror, "\"7.0.1\"", "req-second");

    assert_eq!(report.attempts, 2, "the first push found the ref moved");
    let LandResult::Committed { commit } = report.results[0] else {
        panic!("{:?}", report.results)
    };
    let log = remote.log("main").unwrap();
    assert_eq!(log[0].commit, commit.to_hex());
    assert_eq!(
        log[0].parents,
        vec![human],
        "re-applied on the other commit"
    );
    // The pack went unasked and was refused; asking then showed the ref had moved.
    assert_eq!(
        pushes_seen(&http),
        ["ask", "send", "send", "ask", "ask", "send"]
    );
}

#[test]
fn a_refusal_of_a_push_sent_unasked_stands_when_the_ref_has_not_moved() {
    let (remote, http, _data, observed, mirror) = mirror_over_smart_http();
    land_one(&mirror, "\"7.0.0\"", "req-first");
    freeze_main(&remote);
    let before = remote.tip("main").unwrap();

    let change = SetLine::new(KUSTOMIZATION, "newTag", "\"9.0.0\"", "req-frozen");
    let error = land(&mirror, "main", &[&change], &options()).unwrap_err();

    assert!(matches!(error, GitError::PushRejected { .. }), "{error:?}");
    assert!(
        error.to_string().contains("main is frozen until Monday"),
        "{error}"
    );
    assert_eq!(remote.tip("main").unwrap(), before);
    // Asked after the refusal, not sent twice.
    assert_eq!(pushes_seen(&http), ["ask", "send", "send", "ask"]);
    assert_eq!(observed.count("push"), 0);
}

#[test]
fn a_push_that_loses_a_race_is_reapplied_over_ssh() {
    let remote = manifests();
    let sshd = Sshd::start().unwrap();
    let data = Scratch::new().unwrap();
    let auth = Auth::Ssh {
        private_key_file: sshd.client_key(),
        known_hosts_file: sshd.known_hosts(),
    };
    let mirror = Mirror::open(
        data.path(),
        Remote::new(sshd.url(remote.path()), auth),
        MirrorOptions::default(),
    )
    .unwrap();
    lands_after_the_branch_moves_mid_push(&mirror, &remote);
}

#[test]
fn a_push_that_loses_a_race_is_reapplied_over_file_urls() {
    let remote = manifests();
    let data = Scratch::new().unwrap();
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    lands_after_the_branch_moves_mid_push(&mirror, &remote);
}

/// Two configuration entries for one SSH host and key, the second pinning a wrong host key:
/// the second must not ride on the connection the first opened (connection sharing is keyed on
/// the trust setting), and each entry has a mirror of its own.
#[test]
fn an_entry_with_a_wrong_host_key_pin_never_reuses_another_entrys_ssh_connection() {
    let remote = manifests();
    let sshd = Sshd::start().unwrap();
    let other = Sshd::start().unwrap();
    let data = Scratch::new().unwrap();
    let url = sshd.url(remote.path());
    let trusted = Mirror::open(
        data.path(),
        Remote::new(
            url.clone(),
            Auth::Ssh {
                private_key_file: sshd.client_key(),
                known_hosts_file: sshd.known_hosts(),
            },
        ),
        MirrorOptions {
            entry: Some("platform".to_owned()),
            ..MirrorOptions::default()
        },
    )
    .unwrap();
    land_twice(&trusted, &remote);

    // The other server's host key, pinned for the same host and port: wrong.
    let wrong_pin = data.join("wrong_known_hosts");
    let pins = std::fs::read_to_string(other.known_hosts()).unwrap();
    let host = format!("[127.0.0.1]:{}", sshd.port());
    let other_host = format!("[127.0.0.1]:{}", other.port());
    std::fs::write(&wrong_pin, pins.replace(&other_host, &host)).unwrap();
    let error = Mirror::open(
        data.path(),
        Remote::new(
            url,
            Auth::Ssh {
                private_key_file: sshd.client_key(),
                known_hosts_file: wrong_pin,
            },
        ),
        MirrorOptions {
            entry: Some("platform-mispinned".to_owned()),
            ..MirrorOptions::default()
        },
    )
    .err()
    .expect("the wrong pin is refused even while the first entry's connection is open");
    assert!(
        error.to_string().contains("Host key verification failed")
            || error.to_string().contains("host key"),
        "{error}"
    );
    let mirrors: Vec<_> = std::fs::read_dir(data.path().join("mirrors"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "git"))
        .collect();
    assert_eq!(mirrors.len(), 1, "the refused entry left no mirror behind");

    // Closing the mirror stops its connection-sharing master: nothing outlives the server.
    let sockets = |dir: &Path| -> usize {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| std::os::unix::fs::FileTypeExt::is_socket(&e.file_type().unwrap()))
                    .count()
            })
            .unwrap_or(0)
    };
    let key_dirs: Vec<PathBuf> = std::fs::read_dir(data.path().join("git/ssh"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    let open: usize = key_dirs.iter().map(|d| sockets(d)).sum();
    assert_eq!(open, 1, "the trusted entry's master is running");
    trusted.close();
    let open: usize = key_dirs.iter().map(|d| sockets(d)).sum();
    assert_eq!(open, 0, "closing the mirror stopped its ssh master");
}

/// git and ssh run with a cleared environment: nothing of the server's environment but the
/// allow-list reaches them (cargo sets CARGO_* variables for this test process; none may pass).
#[test]
fn git_children_get_only_the_allowed_environment() {
    let remote = manifests();
    let spy_dir = Scratch::new().unwrap();
    let real = tug_testkit::require_binary("git", "git").unwrap();
    let env_log = spy_dir.join("env.log");
    let spy = spy_dir.join("git-env-spy");
    std::fs::write(
        &spy,
        format!(
            "#!/bin/sh\nenv >> '{}'\necho --end-- >> '{}'\nexec '{}' \"$@\"\n",
            env_log.display(),
            env_log.display(),
            real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&spy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    assert!(
        std::env::var_os("CARGO_MANIFEST_DIR").is_some(),
        "the test process has variables to leak"
    );
    let data = Scratch::new().unwrap();
    let mirror = open(
        data.path(),
        &remote.file_url(),
        MirrorOptions {
            git_program: Some(spy),
            ..MirrorOptions::default()
        },
    );
    land_twice(&mirror, &remote);
    let seen = std::fs::read_to_string(&env_log).unwrap();
    assert!(seen.contains("--end--"));
    let allowed_extra = ["HOME", "LC_ALL", "LANGUAGE", "PWD", "SHLVL", "_", "OLDPWD"];
    for line in seen.lines().filter(|l| *l != "--end--") {
        let Some((name, _)) = line.split_once('=') else {
            continue;
        };
        let allowed = name.starts_with("GIT_")
            || name.starts_with("SSH_")
            || name.starts_with("TUG_GIT_")
            || allowed_extra.contains(&name)
            || [
                "PATH",
                "TMPDIR",
                "TZ",
                "HTTP_PROXY",
                "HTTPS_PROXY",
                "NO_PROXY",
                "ALL_PROXY",
                "http_proxy",
                "https_proxy",
                "no_proxy",
                "all_proxy",
                "SSL_CERT_FILE",
                "SSL_CERT_DIR",
            ]
            .contains(&name);
        assert!(allowed, "{name} reached git: {line}");
    }
    assert!(!seen.contains("CARGO_MANIFEST_DIR"), "{seen}");
}
