//! Commit signatures: the `gpgsig` header git writes for `commit -S`, a signature over the
//! commit object without that header. Two kinds, as git has them: an SSH signature in the `git`
//! namespace (`gpg.format=ssh`, [`SshSigner`]) and a detached OpenPGP signature (git's default
//! `gpg.format=openpgp`, [`OpenPgpSigner`]). Both end up in the same header, so the write path
//! knows only [`Signer`].

mod openpgp;
mod ssh;

use std::path::{Path, PathBuf};

pub use openpgp::OpenPgpSigner;
pub use ssh::SshSigner;

use crate::error::GitError;

/// Signs every commit of a repository. The key file is read once per batch
/// ([`Signer::load`]) and its bytes are zeroed when the batch is built, so replacing the file
/// rotates the key without a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signer {
    Ssh(SshSigner),
    OpenPgp(OpenPgpSigner),
}

impl Signer {
    pub fn key_file(&self) -> &Path {
        match self {
            Signer::Ssh(signer) => signer.key_file(),
            Signer::OpenPgp(signer) => signer.key_file(),
        }
    }

    /// Makes sure the key file holds a key that signs, by signing a fixed payload. Meant for
    /// start-up, so a bad key fails there and not at the first deploy.
    pub fn check(&self) -> Result<(), GitError> {
        match self {
            Signer::Ssh(signer) => signer.check(),
            Signer::OpenPgp(signer) => signer.check(),
        }
    }

    /// Reads the key for a batch.
    pub(crate) fn load(&self) -> Result<LoadedSigner<'_>, GitError> {
        Ok(match self {
            Signer::Ssh(signer) => LoadedSigner::Ssh(signer.load()?),
            Signer::OpenPgp(signer) => LoadedSigner::OpenPgp(signer.load()?),
        })
    }
}

impl From<SshSigner> for Signer {
    fn from(signer: SshSigner) -> Self {
        Signer::Ssh(signer)
    }
}

impl From<OpenPgpSigner> for Signer {
    fn from(signer: OpenPgpSigner) -> Self {
        Signer::OpenPgp(signer)
    }
}

/// A signer with its key read, for one batch.
// One value per batch, on the stack while the batch is built: boxing would save nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum LoadedSigner<'a> {
    Ssh(ssh::LoadedKey<'a>),
    OpenPgp(openpgp::LoadedKey<'a>),
}

impl LoadedSigner<'_> {
    /// The armoured signature of `payload`, as the kind's tool writes it.
    pub(crate) fn sign(&self, payload: &[u8]) -> Result<String, GitError> {
        match self {
            LoadedSigner::Ssh(key) => key.sign(payload),
            LoadedSigner::OpenPgp(key) => key.sign(payload),
        }
    }

    fn key_file(&self) -> &Path {
        match self {
            LoadedSigner::Ssh(key) => key.key_file(),
            LoadedSigner::OpenPgp(key) => key.key_file(),
        }
    }

    /// `commit` (a serialised commit object without a signature) with a `gpgsig` header holding
    /// its signature, written as git writes it: after the other headers, each line of the
    /// signature after the first prefixed by one space.
    pub(crate) fn sign_commit(&self, commit: &[u8]) -> Result<Vec<u8>, GitError> {
        let signature = self.sign(commit)?;
        with_signature_header(commit, &signature).ok_or_else(|| {
            signing_error(
                self.key_file(),
                "the commit to sign has no message".to_owned(),
            )
        })
    }
}

/// The one error of a key that does not sign. `reason` never holds key material.
fn signing_error(key_file: &Path, reason: String) -> GitError {
    GitError::Signing {
        key_file: PathBuf::from(key_file),
        reason,
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
        let signed =
            with_signature_header(commit, "-----BEGIN X-----\nabc\n-----END X-----\n").unwrap();
        assert_eq!(
            String::from_utf8(signed).unwrap(),
            "tree t\nauthor a\ncommitter c\ngpgsig -----BEGIN X-----\n abc\n -----END X-----\n\
             \ntitle\n\nbody\n"
        );
    }
}
