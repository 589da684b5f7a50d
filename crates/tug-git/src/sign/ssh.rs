//! SSH signatures in the `git` namespace, as `git commit -S` with `gpg.format=ssh` makes them.
//! Ed25519 keys sign in-process (the `ssh-key` crate, the same bytes as
//! `ssh-keygen -Y sign -n git`); other keys through OpenSSH's `ssh-keygen`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use zeroize::Zeroizing;

use super::signing_error;
use crate::error::GitError;

const PROGRAM: &str = "ssh-keygen";

/// Signs commits with an SSH private key. The key file must not be protected by a passphrase:
/// tug never prompts. The key's bytes never appear in an error; they are read once per batch
/// ([`SshSigner::load`]) and zeroed when the batch is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshSigner {
    key_file: PathBuf,
}

impl SshSigner {
    /// A signer for `key_file`; nothing is read until [`SshSigner::check`] or a signature.
    pub fn new(key_file: impl Into<PathBuf>) -> Self {
        Self {
            key_file: key_file.into(),
        }
    }

    pub fn key_file(&self) -> &Path {
        &self.key_file
    }

    /// Makes sure the key file is a readable SSH private key that signs: reads its first line
    /// and signs a fixed payload. Meant for start-up, so a bad key fails there and not at the
    /// first deploy.
    pub fn check(&self) -> Result<(), GitError> {
        let text = self.read_key()?;
        let first_line = text.split(|&b| b == b'\n').next().unwrap_or_default();
        let is_private_key =
            first_line.starts_with(b"-----BEGIN ") && first_line.ends_with(b"PRIVATE KEY-----");
        drop(text);
        if !is_private_key {
            return Err(self.error(
                "is not an SSH private key (a public key, or another kind of file?)".to_owned(),
            ));
        }
        self.load()?.sign(b"tug signing check\n").map(|_| ())
    }

    /// Reads the key for a batch: an unencrypted Ed25519 key is parsed and signs in-process;
    /// any other key is left to `ssh-keygen`, which also words the errors of a key it cannot use.
    pub(crate) fn load(&self) -> Result<LoadedKey<'_>, GitError> {
        let text = self.read_key()?;
        let in_process = ssh_key::PrivateKey::from_openssh(&text)
            .ok()
            .filter(|key| !key.is_encrypted() && key.algorithm() == ssh_key::Algorithm::Ed25519);
        Ok(LoadedKey {
            signer: self,
            in_process,
        })
    }

    /// The armoured SSH signature (`-----BEGIN SSH SIGNATURE-----` …) of `payload` in the `git`
    /// namespace, made by `ssh-keygen`.
    fn sign_with_ssh_keygen(&self, payload: &[u8]) -> Result<String, GitError> {
        let mut cmd = Command::new(PROGRAM);
        // No agent, no prompt: the key is the file, and a passphrase-protected one fails.
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LC_ALL", "C")
            .env("SSH_ASKPASS", "/bin/false")
            .env("SSH_ASKPASS_REQUIRE", "force")
            .args(["-q", "-Y", "sign", "-n", "git", "-f"])
            .arg(&self.key_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| GitError::Spawn {
            program: PathBuf::from(PROGRAM),
            source,
        })?;
        // ssh-keygen reads all of its input before it writes anything, so writing it whole
        // first cannot deadlock.
        let written = child.stdin.take().map(|mut stdin| stdin.write_all(payload));
        let output = child.wait_with_output().map_err(|source| GitError::Spawn {
            program: PathBuf::from(PROGRAM),
            source,
        })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(self.error(format!("ssh-keygen failed: {}", stderr.trim())));
        }
        if let Some(Err(e)) = written {
            return Err(self.error(format!("cannot write to ssh-keygen: {e}")));
        }
        let signature = String::from_utf8(output.stdout)
            .map_err(|_| self.error("ssh-keygen wrote a signature that is not text".to_owned()))?;
        if !signature.starts_with("-----BEGIN SSH SIGNATURE-----")
            || !signature
                .trim_end()
                .ends_with("-----END SSH SIGNATURE-----")
        {
            return Err(self.error("ssh-keygen wrote no SSH signature".to_owned()));
        }
        Ok(signature)
    }

    /// The key file's bytes, zeroed when dropped.
    fn read_key(&self) -> Result<Zeroizing<Vec<u8>>, GitError> {
        std::fs::read(&self.key_file)
            .map(Zeroizing::new)
            .map_err(|e| GitError::io("read signing key", &self.key_file, e))
    }

    fn error(&self, reason: String) -> GitError {
        signing_error(&self.key_file, reason)
    }
}

/// A signer with its key read, for one batch.
pub(crate) struct LoadedKey<'a> {
    signer: &'a SshSigner,
    /// `None`: `ssh-keygen` signs.
    in_process: Option<ssh_key::PrivateKey>,
}

impl LoadedKey<'_> {
    /// The armoured SSH signature (`-----BEGIN SSH SIGNATURE-----` …) of `payload` in the `git`
    /// namespace, SHA-512 as `ssh-keygen` hashes.
    pub(crate) fn sign(&self, payload: &[u8]) -> Result<String, GitError> {
        let Some(key) = &self.in_process else {
            return self.signer.sign_with_ssh_keygen(payload);
        };
        key.sign("git", ssh_key::HashAlg::Sha512, payload)
            .and_then(|signature| signature.to_pem(ssh_key::LineEnding::LF))
            .map_err(|e| self.signer.error(format!("cannot sign: {e}")))
    }

    pub(crate) fn key_file(&self) -> &Path {
        self.signer.key_file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssh_keygen(key: &Path, kind: &str) {
        let status = Command::new(PROGRAM)
            .args(["-q", "-t", kind, "-N", "", "-f"])
            .arg(key)
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[test]
    fn ed25519_signs_in_process_exactly_as_ssh_keygen_does() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("ed25519");
        ssh_keygen(&key, "ed25519");
        let signer = SshSigner::new(&key);
        let loaded = signer.load().unwrap();
        assert!(loaded.in_process.is_some());
        // Ed25519 signatures are deterministic: the same key and bytes give the same signature.
        let payload = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\ntitle\n";
        assert_eq!(
            loaded.sign(payload).unwrap(),
            signer.sign_with_ssh_keygen(payload).unwrap()
        );
    }

    #[test]
    fn other_keys_sign_through_ssh_keygen() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("ecdsa");
        ssh_keygen(&key, "ecdsa");
        let signer = SshSigner::new(&key);
        signer.check().unwrap();
        let loaded = signer.load().unwrap();
        assert!(loaded.in_process.is_none());
        assert!(
            loaded
                .sign(b"payload")
                .unwrap()
                .starts_with("-----BEGIN SSH SIGNATURE-----\n")
        );
    }
}
