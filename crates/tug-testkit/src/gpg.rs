//! GnuPG homes for the OpenPGP signing tests: keys made by the real `gpg`, exported as an operator
//! would export them, and the home `git verify-commit` runs gpg in (`GNUPGHOME`).

use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

use crate::error::{Error, Result};
use crate::repo::output;
use crate::servers::require_binary;

/// A GnuPG home of its own. It lives directly under /tmp with a short name because gpg-agent's
/// socket lives in it and Unix socket paths are short; its agent is stopped when it is dropped,
/// or every test would leave one running.
pub struct GpgHome {
    dir: TempDir,
}

impl GpgHome {
    pub fn new() -> Result<Self> {
        require_binary("gpg", "gnupg")?;
        let dir = tempfile::Builder::new()
            .prefix("tg")
            .tempdir_in("/tmp")
            .map_err(|e| Error::io("create GnuPG home in", "/tmp", e))?;
        Ok(Self { dir })
    }

    /// For `GNUPGHOME`.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `gpg --batch` in this home, with the passphrase given on the command line (an empty
    /// one makes an unprotected key); returns its standard output.
    pub fn gpg(&self, passphrase: &str, args: &[&str]) -> Result<Vec<u8>> {
        let mut cmd = Command::new("gpg");
        cmd.env("LC_ALL", "C")
            .env_remove("GPG_AGENT_INFO")
            .arg("--homedir")
            .arg(self.path())
            .args(["--batch", "--no-tty", "--pinentry-mode", "loopback"])
            .args(["--passphrase", passphrase])
            .args(args);
        output(cmd, None)
    }

    /// Runs `gpg --batch` in this home with `input` on its standard input.
    pub fn gpg_with_input(&self, args: &[&str], input: &[u8]) -> Result<Vec<u8>> {
        let mut cmd = Command::new("gpg");
        cmd.env("LC_ALL", "C")
            .arg("--homedir")
            .arg(self.path())
            .args(["--batch", "--no-tty"])
            .args(args);
        output(cmd, Some(input))
    }

    /// `gpg --quick-gen-key USER_ID ALGO USAGE never`; the new key's fingerprint.
    pub fn generate_key(
        &self,
        user_id: &str,
        algo: &str,
        usage: &str,
        passphrase: &str,
    ) -> Result<String> {
        self.gpg(
            passphrase,
            &["--quick-gen-key", user_id, algo, usage, "never"],
        )?;
        let fingerprints = self.fingerprints(user_id)?;
        fingerprints.into_iter().next().ok_or(Error::Command {
            command: format!("gpg --list-secret-keys {user_id}"),
            status: "no key".to_owned(),
            stderr: String::new(),
        })
    }

    /// `gpg --quick-add-key FINGERPRINT ALGO USAGE never`.
    pub fn add_subkey(&self, fingerprint: &str, algo: &str, usage: &str) -> Result<()> {
        self.gpg("", &["--quick-add-key", fingerprint, algo, usage, "never"])
            .map(drop)
    }

    /// The fingerprints of the secret key `key`, primary first, then its subkeys in order.
    pub fn fingerprints(&self, key: &str) -> Result<Vec<String>> {
        let listing = self.gpg("", &["--with-colons", "--list-secret-keys", key])?;
        Ok(String::from_utf8_lossy(&listing)
            .lines()
            .filter_map(|line| line.strip_prefix("fpr:"))
            .filter_map(|rest| rest.split(':').find(|field| !field.is_empty()))
            .map(str::to_owned)
            .collect())
    }

    /// Writes `gpg --export-secret-keys --armor KEY` to `to`, as an operator exports the key tug
    /// signs with; `passphrase` unlocks a protected key for the export (it stays protected).
    pub fn export_secret_key(&self, key: &str, passphrase: &str, to: &Path) -> Result<()> {
        let armoured = self.gpg(passphrase, &["--armor", "--export-secret-keys", key])?;
        std::fs::write(to, armoured).map_err(|e| Error::io("write", to, e))
    }

    /// Writes `gpg --export --armor KEY` (the public key) to `to`.
    pub fn export_public_key(&self, key: &str, to: &Path) -> Result<()> {
        let armoured = self.gpg("", &["--armor", "--export", key])?;
        std::fs::write(to, armoured).map_err(|e| Error::io("write", to, e))
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.path())
            .args(["--kill", "all"])
            .output();
    }
}
