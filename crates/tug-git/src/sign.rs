//! Commit signatures: the `gpgsig` header git writes for `commit -S`, made by OpenSSH's
//! `ssh-keygen -Y sign -n git` over the commit object without that header, as git does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::GitError;

const PROGRAM: &str = "ssh-keygen";

/// Signs commits with an SSH private key, through the `ssh-keygen` on `PATH`. The key file must
/// not be protected by a passphrase: tug never prompts. The key's bytes are read by `ssh-keygen`
/// alone, and never appear in an error.
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
        let text = std::fs::read(&self.key_file)
            .map_err(|e| GitError::io("read signing key", &self.key_file, e))?;
        let first_line = text.split(|&b| b == b'\n').next().unwrap_or_default();
        let is_private_key =
            first_line.starts_with(b"-----BEGIN ") && first_line.ends_with(b"PRIVATE KEY-----");
        drop(text);
        if !is_private_key {
            return Err(self.error(
                "is not an SSH private key (a public key, or another kind of file?)".to_owned(),
            ));
        }
        self.sign(b"tug signing check\n").map(|_| ())
    }

    /// The armoured SSH signature (`-----BEGIN SSH SIGNATURE-----` …) of `payload` in the `git`
    /// namespace.
    pub fn sign(&self, payload: &[u8]) -> Result<String, GitError> {
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
        let written = child
            .stdin
            .take()
            .map(|mut stdin| stdin.write_all(payload));
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
            || !signature.trim_end().ends_with("-----END SSH SIGNATURE-----")
        {
            return Err(self.error("ssh-keygen wrote no SSH signature".to_owned()));
        }
        Ok(signature)
    }

    /// `commit` (a serialised commit object without a signature) with a `gpgsig` header holding
    /// its signature, written as git writes it: after the other headers, each line of the
    /// signature after the first prefixed by one space.
    pub(crate) fn sign_commit(&self, commit: &[u8]) -> Result<Vec<u8>, GitError> {
        let signature = self.sign(commit)?;
        with_signature_header(commit, &signature)
            .ok_or_else(|| self.error("the commit to sign has no message".to_owned()))
    }

    fn error(&self, reason: String) -> GitError {
        GitError::Signing {
            key_file: self.key_file.clone(),
            reason,
        }
    }
}

fn with_signature_header(commit: &[u8], signature: &str) -> Option<Vec<u8>> {
    let end_of_headers = commit.windows(2).position(|w| w == b"\n\n")? + 1;
    let mut out = Vec::with_capacity(commit.len() + signature.len() + 16);
    out.extend_from_slice(&commit[..end_of_headers]);
    out.extend_from_slice(b"gpgsig");
    for line in signature.trim_end_matches('\n').split('\n') {
        out.push(b' ');
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(&commit[end_of_headers..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_goes_after_the_committer_with_continuation_lines() {
        let commit = b"tree t\nauthor a\ncommitter c\n\ntitle\n\nbody\n";
        let signed = with_signature_header(commit, "-----BEGIN X-----\nabc\n-----END X-----\n").unwrap();
        assert_eq!(
            String::from_utf8(signed).unwrap(),
            "tree t\nauthor a\ncommitter c\ngpgsig -----BEGIN X-----\n abc\n -----END X-----\n\
             \ntitle\n\nbody\n"
        );
    }
}
