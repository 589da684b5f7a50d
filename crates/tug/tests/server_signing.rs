//! `tug server` with `signing: { ssh_key_file }` or `signing: { openpgp_key_file }`: a deploy
//! lands as a commit that the real `git verify-commit` accepts (with `gpg.format=ssh`, or with
//! gpg and a key the real `gpg` made); a key that cannot sign stops the server at start-up,
//! naming the field.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod server_common;

use std::path::Path;
use std::process::{Command, Stdio};

use server_common::*;
use tug_testkit::{BareRepo, GpgHome, Scratch, TugServer, git_command};

const COMMITTER: &str = "tug@example.invalid";

fn ssh_keygen(key: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(key)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

fn config(url: &str, key: &Path) -> String {
    config_with(url, "ssh_key_file", key)
}

fn config_with(url: &str, field: &str, key: &Path) -> String {
    format!(
        "commit: {{ committer_name: tug, committer_email: {COMMITTER} }}\nrepositories:\n  \
         - name: platform\n    url: \"{url}\"\n    signing: {{ {field}: \"{key}\" }}\n\
         auth:\n  mode: none\n",
        key = key.display()
    )
}

fn verify_commit(repo: &BareRepo, allowed_signers: &Path, commit: &str) -> (bool, String) {
    let out = git_command()
        .arg("--git-dir")
        .arg(repo.path())
        .args(["-c", "gpg.format=ssh", "-c"])
        .arg(format!(
            "gpg.ssh.allowedSignersFile={}",
            allowed_signers.display()
        ))
        .args(["verify-commit", commit])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_deploy_lands_signed_and_git_verifies_it() {
    let keys = Scratch::new().unwrap();
    let key = keys.join("signing_ed25519");
    ssh_keygen(&key);
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let allowed = keys.join("allowed_signers");
    std::fs::write(&allowed, format!("{COMMITTER} namespaces=\"git\" {public}")).unwrap();
    let other = keys.join("other_ed25519");
    ssh_keygen(&other);
    let other_public = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let other_allowed = keys.join("other_allowed_signers");
    std::fs::write(
        &other_allowed,
        format!("{COMMITTER} namespaces=\"git\" {other_public}"),
    )
    .unwrap();

    let repo = overlays_repo(&["my-app"]);
    let url = repo.file_url();
    let server = TugServer::start(tug_binary(), &config(&url, &key)).expect("start tug server");
    let (status, lines) = server
        .post_deploy(&body(&image_deploy(&url, "my-app", "v1.2.3")), None, None)
        .unwrap();
    assert_eq!(status, 200, "{lines:?}");
    let result = &lines.last().unwrap()["result"];
    assert_eq!(
        result["status"],
        "succeeded",
        "{lines:?}\n{}",
        server.logs()
    );
    let tip = repo.tip("main").unwrap().unwrap();
    assert_eq!(result["updates"][0]["commit"], tip.as_str(), "{result}");

    let (ok, stderr) = verify_commit(&repo, &allowed, &tip);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("Good \"git\" signature for tug@example.invalid"),
        "{stderr}"
    );
    let (ok, stderr) = verify_commit(&repo, &other_allowed, &tip);
    assert!(!ok, "verified against another key: {stderr}");
    // The commit before, written by the fixture, carries no signature.
    let (ok, _) = verify_commit(&repo, &allowed, &format!("{tip}~1"));
    assert!(!ok);
}

#[test]
fn a_key_that_cannot_sign_stops_the_server_at_start_up() {
    let keys = Scratch::new().unwrap();
    let key = keys.join("signing_ed25519");
    ssh_keygen(&key);
    let repo = overlays_repo(&["my-app"]);
    let public_key = key.with_extension("pub");
    let error = TugServer::start(tug_binary(), &config(&repo.file_url(), &public_key))
        .err()
        .expect("the server must not start with a public key to sign with");
    let message = error.to_string();
    assert!(
        message.contains("repositories[0].signing.ssh_key_file"),
        "{message}"
    );
    assert!(message.contains("not an SSH private key"), "{message}");
}

/// `git verify-commit --raw` with gpg in `home`: whether git accepts, and gpg's status lines.
fn gpg_verify_commit(repo: &BareRepo, home: &GpgHome, commit: &str) -> (bool, String) {
    let out = git_command()
        .env("GNUPGHOME", home.path())
        .arg("--git-dir")
        .arg(repo.path())
        .args(["verify-commit", "--raw", commit])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_deploy_lands_signed_with_openpgp_and_git_verifies_it() {
    let keys = Scratch::new().unwrap();
    let home = GpgHome::new().unwrap();
    let fingerprint = home
        .generate_key("Tug Test <tug@example.com>", "ed25519", "sign", "")
        .unwrap();
    let key = keys.join("signing.asc");
    home.export_secret_key(&fingerprint, "", &key).unwrap();
    let other_home = GpgHome::new().unwrap();
    other_home
        .generate_key("Other <other@example.com>", "ed25519", "sign", "")
        .unwrap();

    let repo = overlays_repo(&["my-app"]);
    let url = repo.file_url();
    let server = TugServer::start(tug_binary(), &config_with(&url, "openpgp_key_file", &key))
        .expect("start tug server");
    let (status, lines) = server
        .post_deploy(&body(&image_deploy(&url, "my-app", "v1.2.3")), None, None)
        .unwrap();
    assert_eq!(status, 200, "{lines:?}");
    let result = &lines.last().unwrap()["result"];
    assert_eq!(
        result["status"],
        "succeeded",
        "{lines:?}\n{}",
        server.logs()
    );
    let tip = repo.tip("main").unwrap().unwrap();
    assert_eq!(result["updates"][0]["commit"], tip.as_str(), "{result}");

    let (ok, raw) = gpg_verify_commit(&repo, &home, &tip);
    assert!(ok, "{raw}");
    assert!(
        raw.contains("[GNUPG:] GOODSIG ") && raw.contains(&format!("VALIDSIG {fingerprint} ")),
        "{raw}"
    );
    let (ok, raw) = gpg_verify_commit(&repo, &other_home, &tip);
    assert!(!ok, "verified with another key: {raw}");
    let (ok, _) = gpg_verify_commit(&repo, &home, &format!("{tip}~1"));
    assert!(!ok);
}

#[test]
fn a_protected_openpgp_key_stops_the_server_at_start_up() {
    let keys = Scratch::new().unwrap();
    let home = GpgHome::new().unwrap();
    let fingerprint = home
        .generate_key(
            "Tug Test <tug@example.com>",
            "ed25519",
            "sign",
            "a passphrase",
        )
        .unwrap();
    let key = keys.join("protected.asc");
    home.export_secret_key(&fingerprint, "a passphrase", &key)
        .unwrap();
    let repo = overlays_repo(&["my-app"]);
    let error = TugServer::start(
        tug_binary(),
        &config_with(&repo.file_url(), "openpgp_key_file", &key),
    )
    .err()
    .expect("the server must not start with a key it cannot unlock");
    let message = error.to_string();
    assert!(
        message.contains("repositories[0].signing.openpgp_key_file"),
        "{message}"
    );
    assert!(message.contains("protected by a passphrase"), "{message}");
}
