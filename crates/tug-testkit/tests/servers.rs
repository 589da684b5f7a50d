//! The servers answer git on loopback and leave no process behind when dropped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use tug_testkit::{
    BareRepo, BasicAuth, Error, GitDaemon, SmartHttp, Sshd, git_command, require_binary,
};

fn ls_remote(url: &str, ssh_command: Option<String>) -> Result<String, String> {
    let mut cmd = git_command();
    cmd.args(["ls-remote", url, "refs/heads/main"]);
    if let Some(ssh) = ssh_command {
        cmd.env("GIT_SSH_COMMAND", ssh);
    }
    let out = cmd.output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn process_group(pgid: u32) -> Vec<u32> {
    let out = std::process::Command::new("pgrep")
        .arg("-g")
        .arg(pgid.to_string())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie has exited; it only waits for its new parent to reap it.
        Ok(stat) => {
            stat.rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

fn assert_all_gone(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&pid| alive(pid)) {
        assert!(
            Instant::now() < deadline,
            "still running: {:?}",
            pids.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn free_ports_lie_below_the_ephemeral_range_and_differ() {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let low: u16 = range.split_whitespace().next().unwrap().parse().unwrap();
    let ports: Vec<u16> = (0..20).map(|_| tug_testkit::free_port().unwrap()).collect();
    assert!(ports.iter().all(|&p| p < low), "{ports:?} vs {low}");
    let mut distinct = ports.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() > 15, "{ports:?}");
}

#[test]
fn git_daemon_serves_and_dies_with_its_handle() {
    let repo = BareRepo::with_files(&[("a.yaml", b"a: 1\n")]).unwrap();
    let daemon = GitDaemon::start(repo.root()).unwrap();
    let listed = ls_remote(&daemon.url(repo.name()), None).unwrap();
    assert!(
        listed.starts_with(&repo.tip("main").unwrap().unwrap()),
        "{listed}"
    );
    let pids = process_group(daemon.pid());
    assert!(!pids.is_empty());
    drop(daemon);
    assert_all_gone(&pids);
}

/// A one-file repository served over smart HTTP that asks for `ci:opensesame`.
fn served_with_basic_auth() -> (BareRepo, SmartHttp) {
    let repo = BareRepo::with_files(&[("a.yaml", b"a: 1\n")]).unwrap();
    let auth = BasicAuth {
        username: "ci".to_owned(),
        password: "opensesame".to_owned(),
    };
    let http = SmartHttp::start(repo.root(), Some(auth)).unwrap();
    (repo, http)
}

#[test]
fn smart_http_demands_basic_auth_when_configured_and_dies_with_its_handle() {
    let (repo, http) = served_with_basic_auth();
    let url = http.url(repo.name());
    let refused = ls_remote(&url, None).unwrap_err();
    // git asks for a username only after the server answered 401.
    assert!(refused.contains("could not read Username"), "{refused}");
    let with_credentials = url.replace("http://", "http://ci:opensesame@");
    let listed = ls_remote(&with_credentials, None).unwrap();
    assert!(
        listed.starts_with(&repo.tip("main").unwrap().unwrap()),
        "{listed}"
    );
    let wrong = url.replace("http://", "http://ci:wrong@");
    assert!(ls_remote(&wrong, None).is_err());
    let mut pids = process_group(http.pid());
    pids.extend(process_group(http.fcgiwrap_pid()));
    assert!(
        pids.len() >= 3,
        "nginx master, worker and fcgiwrap: {pids:?}"
    );
    drop(http);
    assert_all_gone(&pids);
}

#[test]
fn smart_http_lists_the_requests_it_answered_and_only_those() {
    let (repo, http) = served_with_basic_auth();
    assert_eq!(http.requests().unwrap(), Vec::<String>::new());

    let url = http.url(repo.name());
    ls_remote(&url.replace("http://", "http://ci:opensesame@"), None).unwrap();
    let first = http.requests().unwrap();
    let asked = format!("/git/{}/info/refs?service=git-upload-pack", repo.name());
    assert!(
        first
            .iter()
            .any(|line| line.starts_with(&format!("GET {asked} 200 "))),
        "{first:?}"
    );
    // Reading the log twice reads the same lines: the reader's own requests are not listed.
    assert_eq!(http.requests().unwrap(), first);
    assert!(first.iter().all(|line| line.contains("/git/")), "{first:?}");
}

#[test]
fn smart_http_restarts_on_its_port_with_new_processes() {
    let repo = BareRepo::with_files(&[("a.yaml", b"a: 1\n")]).unwrap();
    let mut http = SmartHttp::start(repo.root(), None).unwrap();
    let url = http.url(repo.name());
    let tip = repo.tip("main").unwrap().unwrap();
    assert!(ls_remote(&url, None).unwrap().starts_with(&tip));
    let mut before = process_group(http.pid());
    before.extend(process_group(http.fcgiwrap_pid()));
    http.restart().unwrap();
    assert_all_gone(&before);
    assert_eq!(http.url(repo.name()), url, "same port after the restart");
    assert!(ls_remote(&url, None).unwrap().starts_with(&tip));
}

#[test]
fn sshd_serves_with_a_pinned_host_key_and_dies_with_its_handle() {
    let repo = BareRepo::with_files(&[("a.yaml", b"a: 1\n")]).unwrap();
    let sshd = Sshd::start().unwrap();
    let ssh = format!(
        "ssh -F /dev/null -i '{}' -o IdentitiesOnly=yes -o UserKnownHostsFile='{}' -o StrictHostKeyChecking=yes -o BatchMode=yes",
        sshd.client_key().display(),
        sshd.known_hosts().display()
    );
    let listed = ls_remote(&sshd.url(repo.path()), Some(ssh.clone())).unwrap();
    assert!(
        listed.starts_with(&repo.tip("main").unwrap().unwrap()),
        "{listed}"
    );
    let strangers = ssh.replace(&sshd.known_hosts().display().to_string(), "/dev/null");
    let refused = ls_remote(&sshd.url(repo.path()), Some(strangers)).unwrap_err();
    assert!(
        refused.contains("Host key verification failed"),
        "{refused}"
    );
    let pids = process_group(sshd.pid());
    drop(sshd);
    assert_all_gone(&pids);
}

#[test]
fn a_missing_server_binary_names_its_debian_package() {
    let error = require_binary("tug-no-such-server", "openssh-server").unwrap_err();
    assert!(matches!(error, Error::MissingBinary { .. }));
    assert!(
        error.to_string().contains("apt-get install openssh-server"),
        "{error}"
    );
    require_binary("git", "git").unwrap();
}

#[test]
fn repositories_record_human_commits_and_read_back_files() {
    let repo = BareRepo::with_files(&[("dir/a.yaml", b"a: 1\n")]).unwrap();
    let first = repo.tip("main").unwrap().unwrap();
    let second = repo
        .human_commit(
            "main",
            "dir/a.yaml",
            |old| [old.unwrap(), b"b: 2\n"].concat(),
            "add b\n\nTicket: OPS-1",
        )
        .unwrap();
    assert_eq!(
        repo.read_file("main", "dir/a.yaml").unwrap().unwrap(),
        b"a: 1\nb: 2\n"
    );
    assert_eq!(
        repo.read_file(&first, "dir/a.yaml").unwrap().unwrap(),
        b"a: 1\n"
    );
    assert_eq!(repo.read_file("main", "missing").unwrap(), None);
    let log = repo.log("main").unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].commit, second);
    assert_eq!(log[0].parents, vec![first]);
    assert_eq!(
        log[0].trailers,
        vec![("Ticket".to_owned(), "OPS-1".to_owned())]
    );
    assert_eq!(repo.commit_count("main").unwrap(), 2);
}
