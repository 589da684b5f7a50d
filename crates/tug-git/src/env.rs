//! The one place that builds `git` commands: an isolated environment per data directory, with
//! credentials handed to the child process only, never through argv or a config file.

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

use sha1::{Digest, Sha1};

use crate::error::GitError;
use crate::secret::{Redactor, Secret};

/// How tug authenticates to one remote.
#[derive(Clone, Debug, Default)]
pub enum Auth {
    #[default]
    None,
    /// HTTPS basic credentials (a token goes in `password`).
    Http { username: String, password: Secret },
    /// An SSH key and the known_hosts file that pins the server's host key.
    Ssh {
        private_key_file: PathBuf,
        known_hosts_file: PathBuf,
    },
}

/// Called with the argv of every git process tug starts (program first), for audit and tests.
/// It never sees the environment, where credentials live.
pub type CommandObserver = Arc<dyn Fn(&[OsString]) + Send + Sync>;

/// The variables git and ssh children inherit from the server; everything else is dropped.
pub(crate) const INHERITED_ENV: &[&str] = &[
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
];

const USERNAME_VAR: &str = "TUG_GIT_USERNAME";
const PASSWORD_VAR: &str = "TUG_GIT_PASSWORD";

// git asks "Username for '...': " then "Password for '...': "; anything unknown gets no answer,
// and without credentials for this remote the script fails so git stops instead of prompting.
const ASKPASS_SCRIPT: &str = r#"#!/bin/sh
[ -n "${TUG_GIT_USERNAME+set}" ] || exit 1
case "$1" in
  Username*) printf '%s\n' "$TUG_GIT_USERNAME" ;;
  Password*) printf '%s\n' "$TUG_GIT_PASSWORD" ;;
  *) exit 1 ;;
esac
"#;

/// Isolated git environment rooted in a private directory.
#[derive(Clone)]
pub(crate) struct GitEnv {
    program: PathBuf,
    home: PathBuf,
    global_config: PathBuf,
    askpass: PathBuf,
    auth: Auth,
    ssh_command: Option<String>,
    /// Where this environment's ssh connection-sharing sockets live (SSH remotes only).
    control_dir: Option<PathBuf>,
    redactor: Redactor,
    observer: Option<CommandObserver>,
}

impl GitEnv {
    pub(crate) fn new(
        private_dir: &Path,
        auth: Auth,
        program: PathBuf,
        observer: Option<CommandObserver>,
    ) -> Result<Self, GitError> {
        let home = private_dir.join("home");
        create_private_dir(&home)?;
        let global_config = private_dir.join("gitconfig");
        if !global_config.exists() {
            fs::write(&global_config, b"")
                .map_err(|e| GitError::io("create", &global_config, e))?;
        }
        let askpass = private_dir.join("askpass.sh");
        write_askpass(&askpass)?;
        let (ssh_command, control_dir) = match &auth {
            Auth::Ssh {
                private_key_file,
                known_hosts_file,
            } => {
                let control_dir = control_dir(private_dir, private_key_file, known_hosts_file)?;
                let command = ssh_command(private_key_file, known_hosts_file, &control_dir);
                (Some(command), Some(control_dir))
            }
            _ => (None, None),
        };
        let redactor = match &auth {
            Auth::Http { username, password } => {
                Redactor::for_basic_auth(username, password.expose())
            }
            _ => Redactor::default(),
        };
        Ok(Self {
            program,
            home,
            global_config,
            askpass,
            auth,
            ssh_command,
            control_dir,
            redactor,
            observer,
        })
    }

    /// Stops the ssh connection-sharing masters of this environment (they would otherwise
    /// outlive the server by `ControlPersist`). Returns how many were asked to stop.
    pub(crate) fn stop_connection_sharing(&self) -> usize {
        let Some(dir) = &self.control_dir else {
            return 0;
        };
        let Ok(entries) = fs::read_dir(dir) else {
            return 0;
        };
        let mut stopped = 0;
        for socket in entries.flatten().map(|entry| entry.path()) {
            // `ssh -O exit` talks to the master through its socket; the host is not used.
            let mut ssh = Command::new("ssh");
            ssh.env_clear();
            for (name, value) in std::env::vars_os() {
                if INHERITED_ENV.iter().any(|allowed| name == *allowed) {
                    ssh.env(name, value);
                }
            }
            ssh.env("HOME", &self.home)
                .args(["-F", "/dev/null", "-o"])
                .arg(format!("ControlPath={}", socket.display()))
                .args(["-O", "exit", "tug-mirror"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if ssh.status().is_ok_and(|status| status.success()) {
                // The master acknowledges before it exits and unlinks its socket; remove the
                // socket now, so nothing can connect through it in between.
                let _ = fs::remove_file(&socket);
                stopped += 1;
            }
        }
        stopped
    }

    /// An environment without credentials, its private files under `dir`.
    #[cfg(test)]
    pub(crate) fn for_tests(dir: &Path) -> Self {
        match Self::new(&dir.join("git"), Auth::None, "git".into(), None) {
            Ok(env) => env,
            Err(e) => panic!("test git environment: {e}"),
        }
    }

    /// The basic credentials of an HTTP(S) remote.
    pub(crate) fn http_credentials(&self) -> Option<(&str, &Secret)> {
        match &self.auth {
            Auth::Http { username, password } => Some((username, password)),
            _ => None,
        }
    }

    pub(crate) fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }

    /// A git command that touches only the local repository: no credentials in its environment.
    pub(crate) fn local(&self, git_dir: &Path) -> Command {
        let mut cmd = self.base();
        cmd.arg("--git-dir").arg(git_dir);
        cmd
    }

    /// A git command that talks to the remote: credentials go into this child's environment only.
    pub(crate) fn network(&self, git_dir: Option<&Path>) -> Command {
        let mut cmd = self.base();
        if let Some(git_dir) = git_dir {
            cmd.arg("--git-dir").arg(git_dir);
        }
        if let Auth::Http { username, password } = &self.auth {
            cmd.env(USERNAME_VAR, username)
                .env(PASSWORD_VAR, password.expose());
        }
        if let Some(ssh) = &self.ssh_command {
            cmd.env("GIT_SSH_COMMAND", ssh)
                .env("GIT_SSH_VARIANT", "ssh");
        }
        cmd
    }

    fn base(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        // A cleared environment: the server's may hold database URLs, tokens and webhook
        // secrets, none of which git or ssh needs; `GIT_DIR` and friends exported by tests, CI
        // jobs and hooks must not reach a command aimed at a mirror either. Only what finds
        // programs, temporary space, time zone, proxies and CA certificates passes.
        cmd.env_clear();
        for (name, value) in std::env::vars_os() {
            if INHERITED_ENV.iter().any(|allowed| name == *allowed) {
                cmd.env(name, value);
            }
        }
        cmd.env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", &self.global_config)
            .env("HOME", &self.home)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", &self.askpass)
            .env("SSH_ASKPASS", &self.askpass)
            .env("SSH_ASKPASS_REQUIRE", "never")
            .env("LC_ALL", "C")
            .env("LANGUAGE", "C")
            .env(
                "GIT_SSH_COMMAND",
                "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes",
            );
        cmd.args([
            "-c",
            "credential.helper=",
            "-c",
            "core.askPass=",
            "-c",
            "core.hooksPath=/dev/null",
            // Mirrors are repacked by `Mirror::maintain`, off the hot path and one at a time;
            // git's own `gc --auto` would start a full repack in the background of whichever
            // fetch crossed its threshold, racing the writer for the same files and cores.
            "-c",
            "gc.auto=0",
            "-c",
            "maintenance.auto=false",
        ]);
        cmd.stdin(Stdio::null());
        cmd
    }

    pub(crate) fn observe(&self, cmd: &Command) {
        let argv: Vec<OsString> = std::iter::once(cmd.get_program().to_owned())
            .chain(cmd.get_args().map(|arg| arg.to_owned()))
            .collect();
        tracing::debug!(argv = ?argv, "git");
        if let Some(observer) = &self.observer {
            observer(&argv);
        }
    }

    pub(crate) fn spawn_error(&self, source: std::io::Error) -> GitError {
        GitError::Spawn {
            program: self.program.clone(),
            source,
        }
    }

    /// Runs a command to completion, capturing its output.
    pub(crate) fn output(&self, mut cmd: Command) -> Result<Output, GitError> {
        self.observe(&cmd);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.output().map_err(|e| self.spawn_error(e))
    }

    /// Like [`GitEnv::output`], but stops the command — with every process it started (a remote
    /// helper, ssh) — when it has not finished within `timeout`: `None` then. A remote that
    /// stops answering mid-push must not hold a writer (and its branch) forever.
    pub(crate) fn output_within(
        &self,
        mut cmd: Command,
        timeout: std::time::Duration,
    ) -> Result<Option<Output>, GitError> {
        use std::os::unix::process::CommandExt;
        use wait_timeout::ChildExt;

        self.observe(&cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout can stop the helpers git started too.
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| self.spawn_error(e))?;
        let (stdout, stderr) = drain_output(&mut child);
        let status = match child.wait_timeout(timeout) {
            Ok(Some(status)) => status,
            Ok(None) | Err(_) => {
                if let Some(group) = rustix::process::Pid::from_raw(child.id().cast_signed()) {
                    let _ =
                        rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
                }
                let _ = child.kill();
                let _ = child.wait();
                let _ = (stdout.join(), stderr.join());
                return Ok(None);
            }
        };
        Ok(Some(Output {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        }))
    }

    /// Runs a local command and fails with its (redacted) stderr if it does not succeed.
    pub(crate) fn run(&self, cmd: Command, op: &'static str) -> Result<Output, GitError> {
        let output = self.output(cmd)?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(GitError::Command {
                op,
                status: output.status.to_string(),
                detail: self.redact(String::from_utf8_lossy(&output.stderr).trim()),
            })
        }
    }
}

/// Reads a child's stdout and stderr to their ends, each on a thread of its own, so that neither
/// pipe fills up while the caller waits for the child (or writes to its stdin).
pub(crate) fn drain_output(
    child: &mut Child,
) -> (
    std::thread::JoinHandle<Vec<u8>>,
    std::thread::JoinHandle<Vec<u8>>,
) {
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    (drain(child.stdout.take()), drain(child.stderr.take()))
}

fn create_private_dir(dir: &Path) -> Result<(), GitError> {
    fs::create_dir_all(dir).map_err(|e| GitError::io("create directory", dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| GitError::io("set mode of", dir, e))
}

fn write_askpass(path: &Path) -> Result<(), GitError> {
    if fs::read(path).is_ok_and(|current| current == ASKPASS_SCRIPT.as_bytes()) {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".askpass")
        .tempfile_in(dir)
        .map_err(|e| GitError::io("create askpass script in", dir, e))?;
    temp.write_all(ASKPASS_SCRIPT.as_bytes())
        .map_err(|e| GitError::io("write askpass script", path, e))?;
    fs::set_permissions(temp.path(), fs::Permissions::from_mode(0o700))
        .map_err(|e| GitError::io("set mode of askpass script", path, e))?;
    temp.persist(path)
        .map_err(|e| GitError::io("store askpass script", path, e.error))?;
    Ok(())
}

// A Unix socket path holds at most 107 bytes and ssh appends a 17-byte random suffix while it
// creates the socket; `%C` expands to 40 hex digits. Stay well under the limit.
const MAX_CONTROL_PATH: usize = 88;

/// The directory for SSH connection-sharing sockets of one trust setting: the key and the
/// known_hosts pin, by path and content. ssh's `%C` hashes only host, port and user, so without
/// this an entry with a wrong host-key pin (or another key) would ride on the connection another
/// entry authenticated, and its push would succeed.
fn control_dir(private_dir: &Path, key: &Path, known_hosts: &Path) -> Result<PathBuf, GitError> {
    let mut trust = Vec::new();
    for path in [key, known_hosts] {
        trust.extend_from_slice(path.as_os_str().as_encoded_bytes());
        trust.push(0);
        // Unreadable files are hashed as absent: ssh then fails on them itself.
        trust.extend(fs::read(path).unwrap_or_default());
        trust.push(0);
    }
    let key_tag = &short_hash(&trust)[..12];
    let preferred = private_dir.join("ssh").join(key_tag);
    let dir = if preferred.as_os_str().len() + 1 + 40 <= MAX_CONTROL_PATH {
        preferred
    } else {
        let private_tag = &short_hash(private_dir.as_os_str().as_encoded_bytes())[..12];
        std::env::temp_dir()
            .join(format!("tug-ssh-{private_tag}"))
            .join(key_tag)
    };
    if let Some(parent) = dir.parent() {
        create_private_dir(parent)?;
    }
    create_private_dir(&dir)?;
    Ok(dir)
}

pub(crate) fn short_hash(bytes: &[u8]) -> String {
    hex::encode(Sha1::digest(bytes))
}

fn ssh_command(key: &Path, known_hosts: &Path, control_dir: &Path) -> String {
    let control_path = control_dir.join("%C");
    format!(
        "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null \
         -o StrictHostKeyChecking=yes -o BatchMode=yes -o ControlMaster=auto -o ControlPath={} \
         -o ControlPersist=60s",
        shell_quote(&key.to_string_lossy()),
        shell_quote(&known_hosts.to_string_lossy()),
        shell_quote(&control_path.to_string_lossy()),
    )
}

/// Quotes a word for the POSIX shell git runs `GIT_SSH_COMMAND` through.
pub(crate) fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_survives_quotes_and_spaces() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }

    #[test]
    fn long_private_dirs_get_a_short_control_path() {
        let scratch = tempfile::tempdir().unwrap();
        let long = scratch.path().join("x".repeat(120));
        let dir =
            control_dir(&long, Path::new("/keys/id"), Path::new("/keys/known_hosts")).unwrap();
        assert!(
            dir.as_os_str().len() + 41 <= MAX_CONTROL_PATH,
            "{}",
            dir.display()
        );
        let _ = fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn connection_sharing_is_keyed_on_key_and_host_pin_contents() {
        let scratch = tempfile::tempdir().unwrap();
        let (key, pins) = (
            scratch.path().join("id"),
            scratch.path().join("known_hosts"),
        );
        fs::write(&key, "key").unwrap();
        fs::write(&pins, "[127.0.0.1]:22 ssh-ed25519 AAAA-right").unwrap();
        let private = scratch.path().join("git");
        let first = control_dir(&private, &key, &pins).unwrap();
        assert_eq!(control_dir(&private, &key, &pins).unwrap(), first);
        fs::write(&pins, "[127.0.0.1]:22 ssh-ed25519 AAAA-wrong").unwrap();
        assert_ne!(control_dir(&private, &key, &pins).unwrap(), first);
    }
}
