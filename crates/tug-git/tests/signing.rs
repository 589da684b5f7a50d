//! Signed commits, checked by the real `git verify-commit`: SSH signatures with
//! `gpg.format=ssh`, OpenPGP signatures with gpg and keys the real `gpg` made.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::*;
use tug_git::{
    GitError, LandOptions, LandResult, MirrorOptions, ObjectId, OpenPgpSigner, SshSigner, land,
};
use tug_testkit::{BareRepo, GpgHome, Scratch, git_command};

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
    opts.signer = Some(SshSigner::new(&key.private).into());
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

    let tampered = tamper(&remote, &commits[0]);
    assert!(!verifies(&remote, &key.allowed_signers, &tampered));
}

/// The same object as `commit` with one byte of its message changed (and so another id),
/// written to the remote: its signature no longer matches.
fn tamper(remote: &BareRepo, commit: &str) -> String {
    let text = commit_text(remote, commit);
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
    assert_ne!(tampered_id, commit);
    tampered_id
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

const GPG_USER: &str = "Tug Test <tug@example.com>";

/// An OpenPGP key made by the real `gpg` in a home of its own, exported armoured as an operator
/// exports it for tug. `git verify-commit` runs gpg in that home, which trusts the key.
struct PgpKey {
    home: GpgHome,
    fingerprint: String,
    secret: PathBuf,
}

/// `gpg --quick-gen-key 'Tug Test <tug@example.com>' ALGO sign never`, without a passphrase.
fn generate_pgp_key(dir: &Path, name: &str, algo: &str) -> PgpKey {
    let home = GpgHome::new().unwrap();
    let fingerprint = home.generate_key(GPG_USER, algo, "sign", "").unwrap();
    let secret = dir.join(format!("{name}.asc"));
    home.export_secret_key(&fingerprint, "", &secret).unwrap();
    PgpKey {
        home,
        fingerprint,
        secret,
    }
}

fn pgp_options(secret: &Path) -> LandOptions {
    let mut opts = options();
    opts.signer = Some(OpenPgpSigner::new(secret).into());
    opts
}

/// `git verify-commit --raw` (git's default `gpg.format=openpgp`) with gpg in `home`: whether git
/// accepts, and gpg's status lines (`[GNUPG:] GOODSIG …`).
fn gpg_verifies(remote: &BareRepo, home: &GpgHome, commit: &str) -> (bool, String) {
    let out = git_command()
        .env("GNUPGHOME", home.path())
        .arg("--git-dir")
        .arg(remote.path())
        .args(["verify-commit", "--raw", commit])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts that gpg in `home` finds a good signature on `commit` made by the key `signed_by`.
fn assert_gpg_verifies(remote: &BareRepo, home: &GpgHome, commit: &str, signed_by: &str) {
    let (ok, raw) = gpg_verifies(remote, home, commit);
    assert!(ok, "{commit}: {raw}");
    assert!(raw.contains("[GNUPG:] GOODSIG "), "{raw}");
    assert!(
        raw.contains(&format!("[GNUPG:] VALIDSIG {signed_by} ")),
        "{raw}"
    );
}

/// The armoured signature in a commit's `gpgsig` header, continuation lines unfolded.
fn signature_of(remote: &BareRepo, commit: &str) -> String {
    let text = commit_text(remote, commit);
    let header = text.split("\n\n").next().unwrap();
    let mut lines = header.lines().skip_while(|l| !l.starts_with("gpgsig "));
    let first = lines.next().unwrap().strip_prefix("gpgsig ").unwrap();
    let mut signature = format!("{first}\n");
    for line in lines.map_while(|l| l.strip_prefix(' ')) {
        signature.push_str(line);
        signature.push('\n');
    }
    signature
}

#[test]
fn every_commit_of_a_batch_is_signed_with_openpgp_and_gpg_verifies_it() {
    let remote = manifests();
    let data = Scratch::new().unwrap();
    let key = generate_pgp_key(data.path(), "signing", "ed25519");
    let other = generate_pgp_key(data.path(), "other", "ed25519");
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());

    let changes = [
        SetLine::new(KUSTOMIZATION, "newTag", "\"1.1.0\"", "req-1"),
        SetLine::new(KUSTOMIZATION, "replicas", "3", "req-2"),
        SetLine::new(KUSTOMIZATION, "newTag", "\"1.2.0\"", "req-3"),
    ];
    let refs: Vec<&dyn tug_git::Change> = changes.iter().map(|c| c as _).collect();
    let report = land(&mirror, "main", &refs, &pgp_options(&key.secret)).unwrap();

    let commits: Vec<String> = report
        .results
        .iter()
        .map(|r| committed(r).to_hex())
        .collect();
    assert_eq!(commits.len(), 3);
    assert_eq!(remote.tip("main").unwrap().as_deref(), Some(&*commits[2]));
    for commit in &commits {
        assert_gpg_verifies(&remote, &key.home, commit, &key.fingerprint);
        // gpg in the other key's home does not know this key.
        let (ok, raw) = gpg_verifies(&remote, &other.home, commit);
        assert!(!ok, "{commit} verified with another key: {raw}");
        assert!(raw.contains("[GNUPG:] NO_PUBKEY "), "{raw}");
        let text = commit_text(&remote, commit);
        let header = text.split("\n\n").next().unwrap();
        assert!(
            header.contains("\ngpgsig -----BEGIN PGP SIGNATURE-----\n "),
            "{text}"
        );
        assert!(header.ends_with("\n -----END PGP SIGNATURE-----"), "{text}");
    }

    // A commit signed with the other key is refused where only the first key is known, and
    // accepted where the other one is.
    let next = SetLine::new(KUSTOMIZATION, "replicas", "5", "req-4");
    let report = land(&mirror, "main", &[&next], &pgp_options(&other.secret)).unwrap();
    let by_other = committed(&report.results[0]).to_hex();
    assert!(!gpg_verifies(&remote, &key.home, &by_other).0);
    assert_gpg_verifies(&remote, &other.home, &by_other, &other.fingerprint);

    let tampered = tamper(&remote, &commits[0]);
    let (ok, raw) = gpg_verifies(&remote, &key.home, &tampered);
    assert!(!ok, "{raw}");
    assert!(raw.contains("[GNUPG:] BADSIG "), "{raw}");
}

#[test]
fn an_rsa_key_signs_a_batch_and_gpg_verifies_it() {
    let remote = manifests();
    let data = Scratch::new().unwrap();
    let key = generate_pgp_key(data.path(), "signing", "rsa3072");
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    let first = SetLine::new(KUSTOMIZATION, "newTag", "\"1.1.0\"", "req-1");
    let second = SetLine::new(KUSTOMIZATION, "replicas", "3", "req-2");
    let report = land(
        &mirror,
        "main",
        &[&first, &second],
        &pgp_options(&key.secret),
    )
    .unwrap();
    for result in &report.results {
        let commit = committed(result).to_hex();
        assert_gpg_verifies(&remote, &key.home, &commit, &key.fingerprint);
    }
    let tampered = tamper(&remote, &committed(&report.results[0]).to_hex());
    assert!(!gpg_verifies(&remote, &key.home, &tampered).0);
}

#[test]
fn a_batch_reapplied_after_a_lost_race_is_signed_again_with_openpgp() {
    let remote = manifests();
    let data = Scratch::new().unwrap();
    let key = generate_pgp_key(data.path(), "signing", "ed25519");
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    remote.move_branch_during_next_push("main").unwrap();

    let first = SetLine::new(KUSTOMIZATION, "newTag", "\"2.0.0\"", "req-1");
    let second = SetLine::new(KUSTOMIZATION, "replicas", "4", "req-2");
    let report = land(
        &mirror,
        "main",
        &[&first, &second],
        &pgp_options(&key.secret),
    )
    .unwrap();

    assert_eq!(report.attempts, 2, "the first push lost the race");
    let raced = remote.raced_commit().unwrap().unwrap();
    let log = remote.log("main").unwrap();
    assert_eq!(
        log[2].commit, raced,
        "the batch went on top of the other push"
    );
    for result in &report.results {
        let commit = committed(result).to_hex();
        assert_gpg_verifies(&remote, &key.home, &commit, &key.fingerprint);
    }
}

/// The signature packet is the one gpg writes for `git commit -S`: a binary-document signature
/// with the issuer's fingerprint and the creation time hashed, the issuer's key id unhashed.
#[test]
fn the_openpgp_signature_has_the_packets_gpg_writes() {
    let remote = manifests();
    let data = Scratch::new().unwrap();
    let key = generate_pgp_key(data.path(), "signing", "ed25519");
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    let change = SetLine::new(KUSTOMIZATION, "newTag", "\"1.1.0\"", "req-1");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let report = land(&mirror, "main", &[&change], &pgp_options(&key.secret)).unwrap();
    let commit = committed(&report.results[0]).to_hex();

    let signature = signature_of(&remote, &commit);
    assert!(
        signature.starts_with("-----BEGIN PGP SIGNATURE-----\n\n"),
        "{signature}"
    );
    let packets = key
        .home
        .gpg_with_input(&["--list-packets"], signature.as_bytes())
        .unwrap();
    let packets = String::from_utf8(packets).unwrap();
    let key_id = &key.fingerprint[key.fingerprint.len() - 16..];
    for expected in [
        format!(":signature packet: algo 22, keyid {key_id}"),
        "version 4, created ".to_owned(),
        "sigclass 0x00".to_owned(),
        "digest algo 10".to_owned(),
        format!(
            "hashed subpkt 33 len 21 (issuer fpr v4 {})",
            key.fingerprint
        ),
        "hashed subpkt 2 len 4 (sig created ".to_owned(),
        format!("subpkt 16 len 8 (issuer key ID {key_id})"),
    ] {
        assert!(packets.contains(&expected), "no {expected:?} in\n{packets}");
    }
    // Made now, as gpg dates its signatures, not at the commit's (fixed, past) time.
    let (_, raw) = gpg_verifies(&remote, &key.home, &commit);
    let created: u64 = raw
        .lines()
        .find_map(|l| l.strip_prefix("[GNUPG:] VALIDSIG "))
        .and_then(|rest| rest.split(' ').nth(2))
        .unwrap()
        .parse()
        .unwrap();
    assert!(created >= before, "{raw}");
}

/// A key whose primary key only certifies signs with its signing subkey, not its encryption
/// subkey; a file holding only the subkeys' secrets (`--export-secret-subkeys`) signs too.
#[test]
fn a_signing_subkey_signs_for_a_certify_only_primary_key() {
    let remote = manifests();
    let data = Scratch::new().unwrap();
    let home = GpgHome::new().unwrap();
    let primary = home.generate_key(GPG_USER, "ed25519", "cert", "").unwrap();
    home.add_subkey(&primary, "ed25519", "sign").unwrap();
    home.add_subkey(&primary, "cv25519", "encr").unwrap();
    let fingerprints = home.fingerprints(&primary).unwrap();
    assert_eq!(fingerprints.len(), 3, "{fingerprints:?}");
    let subkey = &fingerprints[1];

    let secret = data.path().join("signing.asc");
    home.export_secret_key(&primary, "", &secret).unwrap();
    let subkeys_only = data.path().join("subkeys.asc");
    let exported = home
        .gpg("", &["--armor", "--export-secret-subkeys", &primary])
        .unwrap();
    std::fs::write(&subkeys_only, exported).unwrap();

    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    let first = SetLine::new(KUSTOMIZATION, "newTag", "\"1.1.0\"", "req-1");
    let report = land(&mirror, "main", &[&first], &pgp_options(&secret)).unwrap();
    let commit = committed(&report.results[0]).to_hex();
    assert_gpg_verifies(&remote, &home, &commit, subkey);
    let (_, raw) = gpg_verifies(&remote, &home, &commit);
    let validsig = raw.lines().find(|l| l.contains("VALIDSIG")).unwrap();
    assert!(validsig.ends_with(&format!(" {primary}")), "{raw}");

    let second = SetLine::new(KUSTOMIZATION, "replicas", "3", "req-2");
    let report = land(&mirror, "main", &[&second], &pgp_options(&subkeys_only)).unwrap();
    let commit = committed(&report.results[0]).to_hex();
    assert_gpg_verifies(&remote, &home, &commit, subkey);
}

#[test]
fn an_openpgp_key_that_cannot_sign_is_refused_without_showing_the_key() {
    let data = Scratch::new().unwrap();
    let key = generate_pgp_key(data.path(), "signing", "ed25519");
    assert!(OpenPgpSigner::new(&key.secret).check().is_ok());
    let refused = |file: &Path| {
        let e = OpenPgpSigner::new(file).check().unwrap_err();
        assert!(matches!(e, GitError::Signing { .. }), "{e}");
        e.to_string()
    };

    let e = OpenPgpSigner::new(data.path().join("absent"))
        .check()
        .unwrap_err();
    assert!(matches!(e, GitError::Io { .. }), "{e}");
    assert!(e.to_string().contains("absent"), "{e}");

    let public = data.path().join("public.asc");
    key.home
        .export_public_key(&key.fingerprint, &public)
        .unwrap();
    let message = refused(&public);
    assert!(message.contains("is an OpenPGP public key"), "{message}");
    assert!(message.contains("--export-secret-keys"), "{message}");

    let ssh = generate_key(data.path(), "ssh");
    let message = refused(&ssh.private);
    assert!(
        message.contains("is not an ASCII-armoured OpenPGP secret key"),
        "{message}"
    );

    let secret = std::fs::read_to_string(&key.secret).unwrap();
    let body: Vec<&str> = secret
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .collect();
    let garbled = data.path().join("garbled.asc");
    std::fs::write(
        &garbled,
        format!(
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{}\n-----END PGP PRIVATE KEY BLOCK-----\n",
            &body[0][..40]
        ),
    )
    .unwrap();
    let message = refused(&garbled);
    for line in &body {
        assert!(!message.contains(&line[..20]), "{message}");
    }

    let protected_home = GpgHome::new().unwrap();
    let protected_key = protected_home
        .generate_key(GPG_USER, "ed25519", "sign", "a passphrase")
        .unwrap();
    let protected = data.path().join("protected.asc");
    protected_home
        .export_secret_key(&protected_key, "a passphrase", &protected)
        .unwrap();
    let message = refused(&protected);
    assert!(message.contains("protected by a passphrase"), "{message}");
    assert!(message.contains("never prompts"), "{message}");

    let certify_home = GpgHome::new().unwrap();
    let certify_only = certify_home
        .generate_key(GPG_USER, "ed25519", "cert", "")
        .unwrap();
    certify_home
        .add_subkey(&certify_only, "cv25519", "encr")
        .unwrap();
    let file = data.path().join("certify.asc");
    certify_home
        .export_secret_key(&certify_only, "", &file)
        .unwrap();
    let message = refused(&file);
    assert!(message.contains("cannot sign"), "{message}");
    assert!(message.contains(&certify_only), "{message}");

    // Made in 2020 to expire a day later.
    let expired_home = GpgHome::new().unwrap();
    expired_home
        .gpg(
            "",
            &[
                "--faked-system-time",
                "20200101T000000!",
                "--quick-gen-key",
                GPG_USER,
                "ed25519",
                "sign",
                "1d",
            ],
        )
        .unwrap();
    let expired = expired_home.fingerprints(GPG_USER).unwrap().remove(0);
    let file = data.path().join("expired.asc");
    expired_home.export_secret_key(&expired, "", &file).unwrap();
    let message = refused(&file);
    assert!(message.contains("has expired"), "{message}");

    // Revoked with the certificate gpg stores when it makes a key.
    let revoked_home = GpgHome::new().unwrap();
    let revoked = revoked_home
        .generate_key(GPG_USER, "ed25519", "sign", "")
        .unwrap();
    let certificate = std::fs::read_to_string(
        revoked_home
            .path()
            .join(format!("openpgp-revocs.d/{revoked}.rev")),
    )
    .unwrap()
    .replace(":-----BEGIN", "-----BEGIN");
    revoked_home
        .gpg_with_input(&["--import"], certificate.as_bytes())
        .unwrap();
    let file = data.path().join("revoked.asc");
    revoked_home.export_secret_key(&revoked, "", &file).unwrap();
    let message = refused(&file);
    assert!(message.contains("is revoked"), "{message}");

    // The primary key's secret left out: nothing can sign.
    let stub = data.path().join("stub.asc");
    let exported = key
        .home
        .gpg(
            "",
            &["--armor", "--export-secret-subkeys", &key.fingerprint],
        )
        .unwrap();
    std::fs::write(&stub, exported).unwrap();
    let message = refused(&stub);
    assert!(message.contains("holds no secret"), "{message}");
}

/// Prints what OpenPGP signing costs a batch of 64 commits (numbers are printed, never asserted).
#[test]
fn a_batch_of_64_openpgp_signed_commits_lands_and_verifies() {
    let data = Scratch::new().unwrap();
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
    for algo in ["ed25519", "rsa3072"] {
        let key = generate_pgp_key(data.path(), algo, algo);
        let remote = manifests();
        let dir = Scratch::new().unwrap();
        let mirror = open(dir.path(), &remote.file_url(), MirrorOptions::default());
        let started = Instant::now();
        let report = land(&mirror, "main", &refs, &pgp_options(&key.secret)).unwrap();
        times.push((algo, started.elapsed(), report.apply_time));
        assert_eq!(remote.commit_count("main").unwrap(), 65);
        let tip = report.tip.unwrap().to_hex();
        assert_gpg_verifies(&remote, &key.home, &tip, &key.fingerprint);
    }
    for (algo, total, building) in times {
        println!("64 commits signed with {algo}: {total:?} (building {building:?})");
    }
}
