//! A small harness for running the real `tug` binary the way a user would: in a scratch directory,
//! with a clean environment (no `GIT_*` or `TUG_*` from the machine, HOME and the cache in scratch
//! directories), returning what it printed and how it exited.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use tug_testkit::Scratch;

/// A scratch world for one test: a working directory (usually the checkout), a HOME and a cache
/// directory, all removed when the test ends.
pub(crate) struct Dir {
    scratch: Scratch,
}

impl Dir {
    pub(crate) fn new() -> Self {
        let scratch = Scratch::new().unwrap();
        for sub in ["work", "home", "cache"] {
            scratch.dir(sub).unwrap();
        }
        Dir { scratch }
    }

    /// The working directory the binary runs in.
    pub(crate) fn work(&self) -> PathBuf {
        self.scratch.join("work")
    }

    pub(crate) fn home(&self) -> PathBuf {
        self.scratch.join("home")
    }

    /// `XDG_CACHE_HOME` of the binary: mirrors land in `cache/tug`.
    pub(crate) fn cache(&self) -> PathBuf {
        self.scratch.join("cache")
    }

    /// A path outside the working directory but inside this test's scratch space.
    pub(crate) fn outside(&self, rel: &str) -> PathBuf {
        self.scratch.join(rel)
    }

    /// A path under the working directory.
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.work().join(rel)
    }

    /// Writes `content` to `rel` under the working directory, creating parents.
    pub(crate) fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        write_file(&path, content.as_ref());
        path
    }

    pub(crate) fn read(&self, rel: &str) -> Vec<u8> {
        fs::read(self.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    pub(crate) fn read_text(&self, rel: &str) -> String {
        String::from_utf8(self.read(rel)).unwrap()
    }

    pub(crate) fn set_mode(&self, rel: &str, mode: u32) {
        fs::set_permissions(self.path(rel), fs::Permissions::from_mode(mode)).unwrap();
    }

    pub(crate) fn mode(&self, rel: &str) -> u32 {
        fs::metadata(self.path(rel)).unwrap().permissions().mode() & 0o7777
    }

    /// `tug ARGS…` in the working directory.
    pub(crate) fn tug(&self, args: &[&str]) -> TestCommand {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tug"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("XDG_CACHE_HOME", self.cache())
            .env("XDG_CONFIG_HOME", self.home().join(".config"))
            .env("TMPDIR", std::env::temp_dir())
            .env("LC_ALL", "C")
            .current_dir(self.work())
            .args(args);
        TestCommand { cmd, stdin: None }
    }
}

pub(crate) fn write_file(path: &Path, content: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// One invocation of the binary, built up before it runs.
pub(crate) struct TestCommand {
    cmd: Command,
    stdin: Option<Vec<u8>>,
}

impl TestCommand {
    pub(crate) fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.cmd.arg(arg.into());
        self
    }

    pub(crate) fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.cmd.env(key, value.into());
        self
    }

    /// Puts `dir` first in PATH (a spy `git`, for instance).
    pub(crate) fn path_first(mut self, dir: &Path) -> Self {
        let mut paths = vec![dir.to_owned()];
        paths.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        self.cmd.env("PATH", std::env::join_paths(paths).unwrap());
        self
    }

    pub(crate) fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// Runs to completion, whatever the exit status.
    pub(crate) fn run(mut self) -> Run {
        let description = format!("{:?}", self.cmd);
        self.cmd
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.cmd.spawn().unwrap();
        if let (Some(data), Some(mut pipe)) = (self.stdin.take(), child.stdin.take()) {
            pipe.write_all(&data).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        Run {
            description,
            status: out.status,
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    /// Runs and asserts exit status 0.
    pub(crate) fn ok(self) -> Run {
        let run = self.run();
        assert!(run.status.success(), "expected success\n{run}");
        run
    }

    /// Runs and asserts exit status 1 (an error tug reports, not a usage error or a crash).
    pub(crate) fn fails(self) -> Run {
        let run = self.run();
        assert_eq!(run.status.code(), Some(1), "expected exit status 1\n{run}");
        assert!(
            run.stderr.starts_with("tug: error: ") || run.stderr.contains("\ntug: error: "),
            "errors go to stderr\n{run}"
        );
        run
    }
}

/// What one invocation printed and how it ended.
pub(crate) struct Run {
    description: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "command: {}\nstatus: {}\n--- stdout\n{}--- stderr\n{}---",
            self.description, self.status, self.stdout, self.stderr
        )
    }
}

/// Every regular file under `dir` (recursively, not following links) whose bytes contain `needle`.
pub(crate) fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                let bytes = fs::read(entry.path()).unwrap_or_default();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(entry.path());
                }
            }
        }
    }
    hits
}

/// Number of regular files under `dir`, recursively.
pub(crate) fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                n += 1;
            }
        }
    }
    n
}
