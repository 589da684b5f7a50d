//! Scratch directories and bare repositories driven through the git CLI.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;

use crate::error::{Error, Result};

/// A temporary directory removed on drop.
pub struct Scratch {
    dir: TempDir,
}

impl Scratch {
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tug-test-")
            .tempdir()
            .map_err(|e| Error::io("create scratch directory in", std::env::temp_dir(), e))?;
        Ok(Self { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, path: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(path)
    }

    /// Creates (with parents) and returns a subdirectory.
    pub fn dir(&self, path: impl AsRef<Path>) -> Result<PathBuf> {
        let dir = self.join(path);
        fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        Ok(dir)
    }
}

const HUMAN_NAME: &str = "Human Operator";
const HUMAN_EMAIL: &str = "human@example.invalid";

/// A `git` command with an isolated environment: no system or global config, no inherited
/// `GIT_*` variables, no prompts, a fixed identity for the "human" side of tests.
pub fn git_command() -> Command {
    let mut cmd = Command::new("git");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GIT_") {
            cmd.env_remove(&name);
        }
    }
    let home = std::env::temp_dir().join("tug-testkit-home");
    let _ = fs::create_dir_all(&home);
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", home)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .env("GIT_AUTHOR_NAME", HUMAN_NAME)
        .env("GIT_AUTHOR_EMAIL", HUMAN_EMAIL)
        .env("GIT_COMMITTER_NAME", HUMAN_NAME)
        .env("GIT_COMMITTER_EMAIL", HUMAN_EMAIL)
        .env_remove("SSH_ASKPASS")
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "credential.helper=",
            "-c",
            "advice.detachedHead=false",
        ])
        .stdin(Stdio::null());
    cmd
}

/// Runs an isolated git command with `args` (in `cwd` when given) and returns its stdout.
pub fn run_git(cwd: Option<&Path>, args: &[&str]) -> Result<Vec<u8>> {
    let mut cmd = git_command();
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    cmd.args(args);
    output(cmd, None)
}

pub(crate) fn output(mut cmd: Command, stdin: Option<&[u8]>) -> Result<Vec<u8>> {
    let description = format!(
        "{:?} {:?}",
        cmd.get_program(),
        cmd.get_args().collect::<Vec<_>>()
    );
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io("run", description.clone(), e))?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(data)
            .map_err(|e| Error::io("write stdin of", description.clone(), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io("wait for", description.clone(), e))?;
    if !out.status.success() {
        return Err(Error::Command {
            command: description,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(out.stdout)
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).trim().to_owned()
}

/// One entry of a repository's initial commit.
#[derive(Clone, Debug)]
pub enum Entry {
    File { path: String, content: Vec<u8> },
    Executable { path: String, content: Vec<u8> },
    Symlink { path: String, target: String },
}

impl Entry {
    pub fn file(path: &str, content: impl Into<Vec<u8>>) -> Self {
        Entry::File {
            path: path.to_owned(),
            content: content.into(),
        }
    }

    pub fn symlink(path: &str, target: &str) -> Self {
        Entry::Symlink {
            path: path.to_owned(),
            target: target.to_owned(),
        }
    }
}

/// A commit as `git log` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub commit: String,
    pub parents: Vec<String>,
    pub author_name: String,
    pub author_email: String,
    pub committer_name: String,
    pub committer_email: String,
    pub subject: String,
    /// The whole message.
    pub message: String,
    pub trailers: Vec<(String, String)>,
}

/// A bare repository in its own scratch directory, as a remote for tests. Its directory's
/// parent ([`BareRepo::root`]) can be served by the servers of this crate.
pub struct BareRepo {
    scratch: Scratch,
    path: PathBuf,
    name: String,
}

impl BareRepo {
    /// `manifests.git` with one commit on `main` holding `files`.
    pub fn with_files(files: &[(&str, &[u8])]) -> Result<Self> {
        let entries: Vec<Entry> = files
            .iter()
            .map(|(path, content)| Entry::file(path, content.to_vec()))
            .collect();
        Self::with_entries(&entries)
    }

    pub fn with_entries(entries: &[Entry]) -> Result<Self> {
        let repo = Self::empty()?;
        if !entries.is_empty() {
            repo.import("main", entries, "Initial manifests")?;
        }
        Ok(repo)
    }

    /// `manifests.git` without any commit.
    pub fn empty() -> Result<Self> {
        let scratch = Scratch::new()?;
        let name = "manifests.git".to_owned();
        let path = scratch.join(&name);
        let path_text = path.to_string_lossy().into_owned();
        run_git(
            None,
            &["init", "--quiet", "--bare", "-b", "main", &path_text],
        )?;
        let repo = Self {
            scratch,
            path,
            name,
        };
        // Servers accept anonymous pushes only with these.
        repo.set_config("daemon.receivepack", "true")?;
        repo.set_config("http.receivepack", "true")?;
        Ok(repo)
    }

    /// Adds a commit with `entries` on top of `branch` through `git fast-import`.
    fn import(&self, branch: &str, entries: &[Entry], message: &str) -> Result<()> {
        let mut stream = Vec::new();
        stream.extend_from_slice(format!("commit refs/heads/{branch}\n").as_bytes());
        stream.extend_from_slice(
            format!("committer {HUMAN_NAME} <{HUMAN_EMAIL}> 1700000000 +0000\n").as_bytes(),
        );
        stream.extend_from_slice(format!("data {}\n{message}\n", message.len()).as_bytes());
        for entry in entries {
            let (mode, path, data) = match entry {
                Entry::File { path, content } => ("100644", path, content.as_slice()),
                Entry::Executable { path, content } => ("100755", path, content.as_slice()),
                Entry::Symlink { path, target } => ("120000", path, target.as_bytes()),
            };
            stream.extend_from_slice(
                format!("M {mode} inline {path}\ndata {}\n", data.len()).as_bytes(),
            );
            stream.extend_from_slice(data);
            stream.push(b'\n');
        }
        stream.extend_from_slice(b"done\n");
        let mut cmd = git_command();
        cmd.arg("--git-dir")
            .arg(&self.path)
            .args(["fast-import", "--quiet", "--done"]);
        output(cmd, Some(&stream))?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory holding the repository; serve this to reach it as [`BareRepo::name`].
    pub fn root(&self) -> &Path {
        self.scratch.path()
    }

    /// `manifests.git`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn file_url(&self) -> String {
        format!("file://{}", self.path.display())
    }

    pub fn git(&self, args: &[&str]) -> Result<Vec<u8>> {
        let mut cmd = git_command();
        cmd.arg("--git-dir").arg(&self.path).args(args);
        output(cmd, None)
    }

    pub fn set_config(&self, key: &str, value: &str) -> Result<()> {
        self.git(&["config", key, value]).map(|_| ())
    }

    /// The commit `branch` points at, if the branch exists.
    pub fn tip(&self, branch: &str) -> Result<Option<String>> {
        match self.git(&[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}^{{commit}}"),
        ]) {
            Ok(out) => Ok(Some(text(out))),
            Err(Error::Command { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The content of `path` at `rev`, `None` when there is no such file.
    pub fn read_file(&self, rev: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let spec = format!("{rev}:{path}");
        if self.git(&["cat-file", "-e", &spec]).is_err() {
            return Ok(None);
        }
        self.git(&["cat-file", "blob", &spec]).map(Some)
    }

    /// The values of trailer `key` on the commits of every branch (each commit once).
    pub fn trailer_values_on_all_branches(&self, key: &str) -> Result<Vec<String>> {
        trailer_values_on_all_branches(&self.path, key)
    }

    /// History reachable from `rev`, newest first.
    pub fn log(&self, rev: &str) -> Result<Vec<LogEntry>> {
        let out = self.git(&[
            "log",
            "-z",
            "--format=%H%x1f%P%x1f%an%x1f%ae%x1f%cn%x1f%ce%x1f%s%x1f%B",
            rev,
            "--",
        ])?;
        let mut entries = Vec::new();
        for record in out.split(|&b| b == 0).filter(|r| !r.is_empty()) {
            let record = String::from_utf8_lossy(record);
            let fields: Vec<&str> = record.splitn(8, '\x1f').collect();
            let [commit, parents, an, ae, cn, ce, subject, message] = fields[..] else {
                return Err(Error::Command {
                    command: "git log".to_owned(),
                    status: "unparsable output".to_owned(),
                    stderr: record.into_owned(),
                });
            };
            entries.push(LogEntry {
                commit: commit.to_owned(),
                parents: parents.split_whitespace().map(str::to_owned).collect(),
                author_name: an.to_owned(),
                author_email: ae.to_owned(),
                committer_name: cn.to_owned(),
                committer_email: ce.to_owned(),
                subject: subject.to_owned(),
                message: message.to_owned(),
                trailers: self.trailers(message)?,
            });
        }
        Ok(entries)
    }

    fn trailers(&self, message: &str) -> Result<Vec<(String, String)>> {
        let mut cmd = git_command();
        cmd.args(["interpret-trailers", "--parse"]);
        let out = String::from_utf8_lossy(&output(cmd, Some(message.as_bytes()))?).into_owned();
        Ok(out
            .lines()
            .filter_map(|line| {
                line.split_once(": ")
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect())
    }

    /// Commits as a human would, from a separate clone: rewrites `path` on `branch` with
    /// `edit(current content)`, commits and pushes. Returns the new commit.
    pub fn human_commit(
        &self,
        branch: &str,
        path: &str,
        edit: impl FnOnce(Option<&[u8]>) -> Vec<u8>,
        message: &str,
    ) -> Result<String> {
        let work = Scratch::new()?;
        let url = self.file_url();
        let dir = work.join("clone");
        let dir_text = dir.to_string_lossy().into_owned();
        run_git(
            None,
            &["clone", "--quiet", "--branch", branch, &url, &dir_text],
        )?;
        let file = dir.join(path);
        let current = fs::read(&file).ok();
        let updated = edit(current.as_deref());
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
        }
        fs::write(&file, updated).map_err(|e| Error::io("write", &file, e))?;
        run_git(Some(&dir), &["add", "--", path])?;
        run_git(Some(&dir), &["commit", "--quiet", "-m", message])?;
        run_git(
            Some(&dir),
            &[
                "push",
                "--quiet",
                "origin",
                &format!("HEAD:refs/heads/{branch}"),
            ],
        )?;
        Ok(text(run_git(Some(&dir), &["rev-parse", "HEAD"])?))
    }

    /// Counts commits reachable from `rev`.
    pub fn commit_count(&self, rev: &str) -> Result<usize> {
        text(self.git(&["rev-list", "--count", rev, "--"])?)
            .parse()
            .map_err(|_| Error::Command {
                command: "git rev-list --count".to_owned(),
                status: "unparsable output".to_owned(),
                stderr: String::new(),
            })
    }
}

/// The values of trailer `key` on the commits of every branch of the bare repository
/// `git_dir`, each commit read once: how tests and benchmarks count what landed.
pub fn trailer_values_on_all_branches(git_dir: &Path, key: &str) -> Result<Vec<String>> {
    let mut cmd = git_command();
    cmd.arg("--git-dir")
        .arg(git_dir)
        .args(["log", "--all"])
        .arg(format!(
            "--format=%(trailers:key={key},valueonly,separator=%x2c)"
        ));
    let out = output(cmd, None)?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
        .collect())
}
