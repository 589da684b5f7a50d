//! Signed commits, checked by the real `git verify-commit` with `gpg.format=ssh`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::*;
use tug_git::{GitError, LandOptions, LandResult, MirrorOptions, ObjectId, SshSigner, land};
use tug_testkit::{BareRepo, Scratch, git_command};

fn manifests() -> BareRepo {
    BareRepo::with_files(&[
        (KUSTOMIZATION, MANIFEST.as_bytes()),
        ("README.md", b"# manifests\n"),
    ])
    .unwrap()
}

fn committed(result: &LandResult) -> ObjectId {
    match result {
        LandResult::Committed { commit } => *commit,
        other => panic!("expected a commit, got {other:?}"),
    }
}

/// An ed25519 key made by `ssh-keygen`, and an allowed-signers file naming tug's committer.
struct Key {
    private: PathBuf,
    allowed_signers: PathBuf,
}

fn generate_key(dir: &Path, name: &str) -> Key {
    let private = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&private)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let public = std::fs::read_to_string(private.with_extension("pub")).unwrap();
    let allowed_signers = dir.join(format!("{name}.allowed"));
    std::fs::write(
        &allowed_signers,
        format!("{} namespaces=\"git\" {public}", bot().email),
    )
    .unwrap();
    Key {
        private,
        allowed_signers,
    }
}

fn signed_options(key: &Key) -> LandOptions {
    let mut opts = options();
    opts.signer = Some(SshSigner::new(&key.private));
    opts
}

/// `git verify-commit` in the remote, with an allowed-signers file: whether it accepts.
fn verifies(remote: &BareRepo, allowed_signers: &Path, commit: &str) -> bool {
    let mut cmd = git_command();
    cmd.arg("--git-dir")
        .arg(remote.path())
        .args(["-c", "gpg.format=ssh", "-c"])
        .arg(format!(
            "gpg.ssh.allowedSignersFile={}",
            allowed_signers.display()
        ))
        .args(["verify-commit", commit])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.status().unwrap().success()
}

fn commit_text(remote: &BareRepo, commit: &str) -> String {
    String::from_utf8(remote.git(&["cat-file", "commit", commit]).unwrap()).unwrap()
}

#[test]
fn every_commit_of_a_batch_is_signed_and_git_verifies_it() {
    let remote = manifests();
    let data = Scratch::new().unwrap();
    let key = generate_key(data.path(), "signing");
    let other = generate_key(data.path(), "other");
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());

    let changes = [
        SetLine::new(KUSTOMIZATION, "newTag", "\"1.1.0\"", "req-1"),
        SetLine::new(KUSTOMIZATION, "replicas", "3", "req-2"),
        SetLine::new(KUSTOMIZATION, "newTag", "\"1.2.0\"", "req-3"),
    ];
    let refs: Vec<&dyn tug_git::Change> = changes.iter().map(|c| c as _).collect();
    let report = land(&mirror, "main", &refs, &signed_options(&key)).unwrap();

    let commits: Vec<String> = report
        .results
        .iter()
        .map(|r| committed(r).to_hex())
        .collect();
    assert_eq!(commits.len(), 3);
    assert_eq!(remote.tip("main").unwrap().as_deref(), Some(&*commits[2]));
    for commit in &commits {
        assert!(verifies(&remote, &key.allowed_signers, commit), "{commit}");
        assert!(
            !verifies(&remote, &other.allowed_signers, commit),
            "{commit} verified against another key"
        );
        let text = commit_text(&remote, commit);
        let header = text.split("\n\n").next().unwrap();
        assert!(
            header.contains("\ngpgsig -----BEGIN SSH SIGNATURE-----\n "),
            "{text}"
        );
        assert!(header.ends_with("\n -----END SSH SIGNATURE-----"), "{text}");
    }

    // The same object with one byte of its message changed (and so another id) fails.
    let text = commit_text(&remote, &commits[0]);
    let tampered = text.replacen("1.1.0", "6.6.6", 1);
    assert_ne!(tampered, text);
    let mut cmd = git_command();
    cmd.arg("--git-dir")
        .arg(remote.path())
        .args(["hash-object", "-t", "commit", "-w", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), tampered.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let tampered_id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_ne!(tampered_id, commits[0]);
    assert!(!verifies(&remote, &key.allowed_signers, &tampered_id));
}

#[test]
fn a_batch_reapplied_after_a_lost_race_is_signed_again() {
    let remote = manifests();
    let data = Scratch::new().unwrap();
    let key = generate_key(data.path(), "signing");
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    remote.move_branch_during_next_push("main").unwrap();

    let first = SetLine::new(KUSTOMIZATION, "newTag", "\"2.0.0\"", "req-1");
    let second = SetLine::new(KUSTOMIZATION, "replicas", "4", "req-2");
    let report = land(&mirror, "main", &[&first, &second], &signed_options(&key)).unwrap();

    assert_eq!(report.attempts, 2, "the first push lost the race");
    let raced = remote.raced_commit().unwrap().unwrap();
    let log = remote.log("main").unwrap();
    assert_eq!(
        log[2].commit, raced,
        "the batch went on top of the other push"
    );
    for result in &report.results {
        let commit = committed(result).to_hex();
        assert!(verifies(&remote, &key.allowed_signers, &commit), "{commit}");
    }
}

#[test]
fn a_key_that_cannot_sign_is_refused_without_showing_the_key() {
    let data = Scratch::new().unwrap();
    let key = generate_key(data.path(), "signing");
    assert!(SshSigner::new(&key.private).check().is_ok());

    let missing = SshSigner::new(data.path().join("absent"));
    let e = missing.check().unwrap_err();
    assert!(matches!(e, GitError::Io { .. }), "{e}");
    assert!(e.to_string().contains("absent"), "{e}");

    let public = SshSigner::new(key.private.with_extension("pub"));
    let e = public.check().unwrap_err();
    assert!(e.to_string().contains("not an SSH private key"), "{e}");

    let secret = std::fs::read_to_string(&key.private).unwrap();
    let body: Vec<&str> = secret.lines().filter(|l| !l.starts_with("-----")).collect();
    let garbled = data.path().join("garbled");
    let cut = format!(
        "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
        &body[0][..40]
    );
    std::fs::write(&garbled, &cut).unwrap();
    std::fs::set_permissions(
        &garbled,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let e = SshSigner::new(&garbled).check().unwrap_err();
    assert!(matches!(e, GitError::Signing { .. }), "{e}");
    for line in &body {
        assert!(!e.to_string().contains(&line[..20]), "{e}");
    }

    let protected = data.path().join("protected");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "a passphrase", "-f"])
        .arg(&protected)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let e = SshSigner::new(&protected).check().unwrap_err();
    assert!(matches!(e, GitError::Signing { .. }), "{e}");
}

/// Prints what signing costs a batch of 64 commits (numbers are printed, never asserted).
#[test]
fn a_batch_of_64_signed_commits_lands_and_verifies() {
    let data = Scratch::new().unwrap();
    let key = generate_key(data.path(), "signing");
    let changes: Vec<SetLine> = (0..64)
        .map(|i| {
            SetLine::new(
                KUSTOMIZATION,
                "newTag",
                &format!("\"1.0.{}\"", i + 1),
                &format!("req-{i}"),
            )
        })
        .collect();
    let refs: Vec<&dyn tug_git::Change> = changes.iter().map(|c| c as _).collect();
    let mut times = Vec::new();
    for signed in [false, true] {
        let remote = manifests();
        let dir = Scratch::new().unwrap();
        let mirror = open(dir.path(), &remote.file_url(), MirrorOptions::default());
        let opts = if signed {
            signed_options(&key)
        } else {
            options()
        };
        let started = Instant::now();
        let report = land(&mirror, "main", &refs, &opts).unwrap();
        times.push((started.elapsed(), report.apply_time));
        assert_eq!(remote.commit_count("main").unwrap(), 65);
        let tip = report.tip.unwrap().to_hex();
        assert_eq!(verifies(&remote, &key.allowed_signers, &tip), signed);
    }
    println!(
        "64 commits: unsigned {:?} (building {:?}), signed {:?} (building {:?})",
        times[0].0, times[0].1, times[1].0, times[1].1
    );
}

/// Ed25519 signatures are deterministic, so `git commit-tree -S` with the same key, tree,
/// parent, identities, time and message writes the very object tug wrote: the header is
/// formatted exactly as git formats it.
#[test]
fn a_signed_commit_is_the_object_git_commit_tree_s_writes() {
    let remote = manifests();
    let data = Scratch::new().unwrap();
    let key = generate_key(data.path(), "signing");
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    let change = SetLine::new(KUSTOMIZATION, "newTag", "\"1.1.0\"", "req-1");
    let report = land(&mirror, "main", &[&change], &signed_options(&key)).unwrap();
    let ours = committed(&report.results[0]).to_hex();

    let text = commit_text(&remote, &ours);
    let (_, message) = text.split_once("\n\n").unwrap();
    let message_file = data.path().join("message");
    std::fs::write(&message_file, message).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .unwrap()
            .to_owned()
    };
    let when = "@1750000000 +0000";
    let out = git_command()
        .arg("--git-dir")
        .arg(remote.path())
        .args(["-c", "gpg.format=ssh", "-c"])
        .arg(format!("user.signingKey={}", key.private.display()))
        .args([
            "commit-tree",
            "-S",
            &field("tree"),
            "-p",
            &field("parent"),
            "-F",
        ])
        .arg(&message_file)
        .env("GIT_AUTHOR_NAME", author().name)
        .env("GIT_AUTHOR_EMAIL", author().email)
        .env("GIT_AUTHOR_DATE", when)
        .env("GIT_COMMITTER_NAME", bot().name)
        .env("GIT_COMMITTER_EMAIL", bot().email)
        .env("GIT_COMMITTER_DATE", when)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gits = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(
        commit_text(&remote, &gits),
        text,
        "git's object and tug's differ"
    );
    assert_eq!(gits, ours);
}
