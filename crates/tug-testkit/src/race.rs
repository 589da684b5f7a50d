//! Other writers on a tug remote: a `pre-receive` hook that moves a branch while a push is in
//! flight (after `git push` checked its lease, before the remote updates the ref), and a person
//! who commits and pushes on a fixed interval.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::repo::{BareRepo, Scratch, run_git};

/// The file in the remote's git directory that records the commit the racing hook wrote.
const RACED_MARKER: &str = "tug-test-raced";

impl BareRepo {
    /// Makes the next push to `branch` lose a race: the remote's `pre-receive` hook commits a
    /// new file `RACE.md` on `branch` and moves the ref, once, so the pushed update finds the
    /// ref at another value — exactly what a concurrent push landing between the ref
    /// advertisement and the update looks like. Every transport runs the same `receive-pack`,
    /// so the race is the same over file://, git daemon, smart HTTP and SSH.
    pub fn move_branch_during_next_push(&self, branch: &str) -> Result<()> {
        let hook = self.path().join("hooks/pre-receive");
        // Ref updates are forbidden inside the push's object quarantine, so the hook leaves it
        // (its own objects go to the main object store, as a concurrent push's would).
        let script = format!(
            r#"#!/bin/sh
cat >/dev/null
[ -e {RACED_MARKER} ] && exit 0
unset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES
tip=$(git rev-parse --verify -q refs/heads/{branch}) || exit 0
export GIT_INDEX_FILE="$PWD/tug-test-race-index"
git read-tree "$tip" || exit 1
blob=$(printf 'moved by a concurrent push\n' | git hash-object -w --stdin) || exit 1
git update-index --add --cacheinfo 100644,"$blob",RACE.md || exit 1
tree=$(git write-tree) || exit 1
rm -f "$GIT_INDEX_FILE"
commit=$(GIT_AUTHOR_NAME=Racer GIT_AUTHOR_EMAIL=racer@example.invalid \
  GIT_COMMITTER_NAME=Racer GIT_COMMITTER_EMAIL=racer@example.invalid git commit-tree -p "$tip" -m "concurrent push" "$tree") || exit 1
git update-ref refs/heads/{branch} "$commit" "$tip" || exit 1
echo "$commit" > {RACED_MARKER}
"#
        );
        fs::write(&hook, script).map_err(|e| Error::io("write", &hook, e))?;
        fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|e| Error::io("chmod", &hook, e))
    }

    /// The commit [`BareRepo::move_branch_during_next_push`] wrote, once the race happened.
    pub fn raced_commit(&self) -> Result<Option<String>> {
        let marker = self.path().join(RACED_MARKER);
        match fs::read_to_string(&marker) {
            Ok(text) => Ok(Some(text.trim().to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", &marker, e)),
        }
    }
}

/// A person committing an unrelated file to a branch on a fixed interval, from a clone of
/// their own, pulling (rebasing) and pushing again whenever someone else pushed first.
pub struct HumanPusher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<HumanReport>>>,
}

/// What the person managed to push.
#[derive(Debug, Default, Clone)]
pub struct HumanReport {
    /// The commits that reached the remote, oldest first.
    pub commits: Vec<String>,
    /// Pushes that were rejected because the branch had moved.
    pub rejected_pushes: usize,
    /// Pushes and pulls that failed otherwise (the server unreachable or restarting) and were
    /// tried again.
    pub failed_attempts: usize,
    /// For each commit in `commits`: from its first push to the push that landed it, the pulls
    /// after lost races included — how long a plain git client took to land on the branch.
    pub landing: Vec<Duration>,
}

impl HumanPusher {
    /// Starts pushing to `branch` of `url` (any URL `git` can push to without prompting) every
    /// `interval` after the last one landed. Each commit adds `human/<n>.txt`.
    pub fn start(url: &str, branch: &str, interval: Duration) -> Result<Self> {
        Self::start_as("human", url, branch, interval)
    }

    /// Like [`HumanPusher::start`], committing under `<name>/` instead: several people push to
    /// one branch without ever writing the same file.
    pub fn start_as(name: &str, url: &str, branch: &str, interval: Duration) -> Result<Self> {
        let work = Scratch::new()?;
        let dir = work.join("clone");
        let dir_text = dir.to_string_lossy().into_owned();
        run_git(
            None,
            &["clone", "--quiet", "--branch", branch, url, &dir_text],
        )?;
        // A background `gc --auto` would hold HEAD's lock while the next commit needs it.
        run_git(Some(&dir), &["config", "gc.auto", "0"])?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let branch = branch.to_owned();
        let name = name.to_owned();
        let thread = std::thread::spawn(move || {
            let _work = work;
            let mut report = HumanReport::default();
            let mut n = 0usize;
            while !flag.load(Ordering::SeqCst) {
                n += 1;
                commit_and_push(&dir, &name, &branch, n, &mut report)?;
                // Pacing, not synchronisation: a person works at their own rhythm, one push per
                // interval, without catching up on pushes a slow machine made them miss.
                std::thread::sleep(interval);
            }
            Ok(report)
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops after the commit in progress and returns what was pushed.
    pub fn stop(mut self) -> Result<HumanReport> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(report)) => report,
            Some(Err(_)) => Err(Error::ServerStart {
                server: "human pusher",
                detail: "its thread panicked".to_owned(),
            }),
            None => Ok(HumanReport::default()),
        }
    }
}

impl Drop for HumanPusher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How long a person waits before trying again after the server did not answer.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

fn commit_and_push(
    dir: &Path,
    name: &str,
    branch: &str,
    n: usize,
    report: &mut HumanReport,
) -> Result<()> {
    let file = dir.join(format!("{name}/{n}.txt"));
    if let Some(parent) = file.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
    }
    fs::write(&file, format!("note {n}\n")).map_err(|e| Error::io("write", &file, e))?;
    let path = format!("{name}/{n}.txt");
    run_git(Some(dir), &["add", "--", &path])?;
    run_git(
        Some(dir),
        &["commit", "--quiet", "-m", &format!("{name} note {n}")],
    )?;
    let refspec = format!("HEAD:refs/heads/{branch}");
    let started = std::time::Instant::now();
    for _ in 0..1000 {
        match run_git(Some(dir), &["push", "--quiet", "origin", &refspec]) {
            Ok(_) => {
                report.landing.push(started.elapsed());
                let head = run_git(Some(dir), &["rev-parse", "HEAD"])?;
                report
                    .commits
                    .push(String::from_utf8_lossy(&head).trim().to_owned());
                return Ok(());
            }
            Err(Error::Command { stderr, .. })
                if stderr.contains("rejected") || stderr.contains("cannot lock ref") =>
            {
                report.rejected_pushes += 1;
                if run_git(
                    Some(dir),
                    &["pull", "--quiet", "--rebase", "origin", branch],
                )
                .is_err()
                {
                    report.failed_attempts += 1;
                    std::thread::sleep(RETRY_PAUSE);
                }
            }
            // A person whose push failed because the server was away tries again a moment
            // later; the push may have landed before the connection dropped, which the next
            // try finds up to date.
            Err(Error::Command { .. }) => {
                report.failed_attempts += 1;
                std::thread::sleep(RETRY_PAUSE);
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::ServerStart {
        server: "human pusher",
        detail: format!("push of note {n} failed 1000 times in a row"),
    })
}
