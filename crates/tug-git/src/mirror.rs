//! One bare mirror per remote: cloned once, fetched afterwards, pushed to with compare-and-swap.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use crate::env::{Auth, CommandObserver, GitEnv, short_hash};
use crate::error::GitError;
use crate::object::ObjectId;
use crate::refs::{read_ref, write_ref};
use crate::reject::{PushOutcome, Rejection};
use crate::smart_http::{HttpPush, HttpPusher, Update};
use crate::store::{ObjectStore, ObjectView};
use crate::tree::TreeView;

/// A remote repository and how to authenticate to it.
#[derive(Clone, Debug)]
pub struct Remote {
    /// `https://`, `http://`, `ssh://`, `user@host:path`, `git://` or `file://`. It must not
    /// carry a password: credentials go in `auth`.
    pub url: String,
    pub auth: Auth,
}

impl Remote {
    pub fn new(url: impl Into<String>, auth: Auth) -> Self {
        Self {
            url: url.into(),
            auth,
        }
    }
}

#[derive(Clone, Default)]
pub struct MirrorOptions {
    /// The git executable; `git` from `PATH` when unset.
    pub git_program: Option<PathBuf>,
    /// The configuration entry the mirror belongs to: two entries naming the same URL (with
    /// other credentials, say) get a mirror each, so one never works in the other's.
    pub entry: Option<String>,
    /// Sees the argv of every git process the mirror starts.
    pub observer: Option<CommandObserver>,
}

/// A bare clone of one remote under the data directory, with one long-running object reader.
/// Several threads may read through it; landing on one branch must be serialised by the caller.
pub struct Mirror {
    git_dir: PathBuf,
    url: String,
    env: GitEnv,
    store: ObjectStore,
    /// Set while [`Mirror::maintain`] runs: one repack at a time.
    maintaining: std::sync::atomic::AtomicBool,
    /// Packs the last repack left: a geometric repack keeps about log₂(objects) of them, so
    /// the next one is due when that many and [`MAX_PACKS`] more are there, not before.
    packs_kept: std::sync::atomic::AtomicUsize,
    /// Pushes to an HTTP(S) remote without `git push`.
    http: Option<HttpPusher>,
}

/// A mirror with this many more packs than its last repack left is due for a repack (each
/// landed batch adds one, so does a fetch of a large push). Counting from what the last repack kept matters:
/// counted from zero, a mirror whose geometric progression is ten packs long repacked after
/// every seventh batch, a repack of a large repository costing half a second of CPU each time.
const MAX_PACKS: usize = 16;
/// Fetches of one branch before a local ref that keeps changing under them is an error.
const LOCAL_REF_TRIES: u32 = 5;
/// Nor more loose objects (fetches of small pushes unpack them) than about this many, estimated
/// from one of the 256 fan-out directories as `gc --auto` does.
const MAX_LOOSE_OBJECTS: usize = 2048;

/// A roll-up due since [`MAX_PACKS`] packs (or [`MAX_LOOSE_OBJECTS`] loose objects) can wait
/// for a quiet moment until there are this many times as many.
const OVERDUE: usize = 4;

/// How soon a mirror wants [`Mirror::maintain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaintenanceDue {
    /// Nothing to roll up yet.
    No,
    /// Worth doing once the mirror's writers have nothing waiting: a roll-up shares the CPU
    /// with the requests and pushes of a busy moment, so it waits for a quiet one.
    WhenIdle,
    /// Overdue: a mirror this scattered slows every read down, so now, however busy.
    Now,
}

/// What [`Mirror::maintain`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintenance {
    pub packs_before: usize,
    pub packs_after: usize,
    pub duration: std::time::Duration,
}

/// Refuses URLs that carry a password in their user info, without repeating the password.
pub fn check_remote_url(url: &str) -> Result<(), GitError> {
    if url.trim().is_empty() {
        return Err(GitError::InvalidRemote {
            reason: "the URL is empty".to_owned(),
        });
    }
    if url.starts_with('-') {
        return Err(GitError::InvalidRemote {
            reason: "a URL must not start with '-'".to_owned(),
        });
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if let Some((userinfo, host)) = authority.rsplit_once('@')
            && userinfo.contains(':')
        {
            return Err(GitError::InvalidRemote {
                reason: format!(
                    "the {scheme} URL for host {host} carries a password in its user info; give credentials as Auth::Http instead"
                ),
            });
        }
    }
    Ok(())
}

pub(crate) fn validate_branch(branch: &str) -> Result<(), GitError> {
    let bad = |reason: &str| {
        Err(GitError::InvalidBranch {
            branch: branch.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if branch.is_empty() {
        return bad("empty");
    }
    if branch.starts_with('-')
        || branch.starts_with('/')
        || branch.ends_with('/')
        || branch.ends_with('.')
    {
        return bad("must not start with '-' or '/' or end with '/' or '.'");
    }
    if branch.contains("..") || branch.contains("//") || branch.contains("@{") || branch == "@" {
        return bad("must not contain '..', '//' or '@{'");
    }
    if branch
        .chars()
        .any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c))
    {
        return bad("must not contain spaces, control characters or any of ~^:?*[\\");
    }
    if branch
        .split('/')
        .any(|part| part.starts_with('.') || part.ends_with(".lock"))
    {
        return bad("no component may start with '.' or end with '.lock'");
    }
    Ok(())
}

/// A directory name for the mirror of `url` for configuration entry `entry`: readable, and
/// unique through a hash of both.
fn mirror_dir_name(url: &str, entry: Option<&str>) -> String {
    let last = url
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("repo");
    let last = last.strip_suffix(".git").unwrap_or(last);
    let readable: String = last
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(40)
        .collect();
    let readable = readable.trim_start_matches('.');
    let readable = if readable.is_empty() {
        "repo"
    } else {
        readable
    };
    let identity = match entry {
        Some(entry) => format!("{entry}\n{url}"),
        None => url.to_owned(),
    };
    format!("{readable}-{}.git", &short_hash(identity.as_bytes())[..12])
}

/// Sorts a failed network command into unreachable (transient), refused credentials, or other.
pub(crate) fn classify_failure(
    op: &'static str,
    url: &str,
    output: &Output,
    env: &GitEnv,
) -> GitError {
    let stderr = env.redact(String::from_utf8_lossy(&output.stderr).trim());
    classify_message(op, url, output.status.to_string(), stderr)
}

/// [`classify_failure`] on the (redacted) message git printed.
fn classify_message(op: &'static str, url: &str, status: String, stderr: String) -> GitError {
    let lower = stderr.to_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    if any(&[
        "authentication failed",
        "could not read username",
        "could not read password",
        "permission denied",
        "host key verification failed",
        "no matching host key",
        "returned error: 401",
        "returned error: 403",
        "invalid username or password",
    ]) {
        return GitError::AuthFailed {
            op,
            url: url.to_owned(),
            detail: stderr,
        };
    }
    if any(&[
        "could not resolve host",
        "connection refused",
        "connection reset",
        "connection timed out",
        "operation timed out",
        "failed to connect",
        "unable to connect",
        "no route to host",
        "network is unreachable",
        "the remote end hung up unexpectedly",
        "early eof",
        "connection closed by",
        // curl's words for a server that dropped the connection (an overloaded smart-HTTP
        // server closes it without an answer: "Empty reply from server", curl error 52).
        "empty reply from server",
        "recv failure",
        "send failure",
        "transfer closed with outstanding read data",
        "returned error: 502",
        "returned error: 503",
        "returned error: 504",
        "ssh: connect to host",
    ]) {
        return GitError::Unreachable {
            op,
            url: url.to_owned(),
            detail: stderr,
        };
    }
    GitError::Command {
        op,
        status,
        detail: stderr,
    }
}

impl Mirror {
    /// Opens the mirror of `remote` under `data_dir`, cloning it on first use. The data
    /// directory also holds the private HOME, askpass script and SSH sockets of the git
    /// processes.
    pub fn open(data_dir: &Path, remote: Remote, options: MirrorOptions) -> Result<Self, GitError> {
        check_remote_url(&remote.url)?;
        let private_dir = data_dir.join("git");
        let mirrors_dir = data_dir.join("mirrors");
        fs::create_dir_all(&mirrors_dir)
            .map_err(|e| GitError::io("create directory", &mirrors_dir, e))?;
        let program = options.git_program.unwrap_or_else(|| PathBuf::from("git"));
        let env = GitEnv::new(&private_dir, remote.auth, program, options.observer)?;
        let git_dir = mirrors_dir.join(mirror_dir_name(&remote.url, options.entry.as_deref()));
        if !git_dir.join("HEAD").exists() {
            clone_bare(&env, &remote.url, &mirrors_dir, &git_dir)?;
        }
        check_repository_format(&env, &git_dir)?;
        let store = ObjectStore::new(git_dir.clone(), env.clone());
        let http = HttpPusher::for_url(&remote.url);
        Ok(Self {
            git_dir,
            url: remote.url,
            env,
            store,
            maintaining: std::sync::atomic::AtomicBool::new(false),
            packs_kept: std::sync::atomic::AtomicUsize::new(0),
            http,
        })
    }

    /// How many packs the mirror has.
    pub fn pack_count(&self) -> Result<usize, GitError> {
        let dir = self.git_dir.join("objects").join("pack");
        let entries = fs::read_dir(&dir).map_err(|e| GitError::io("list", &dir, e))?;
        Ok(entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
            .count())
    }

    /// Whether [`Mirror::maintain`] has work: too many packs or loose objects.
    pub fn needs_maintenance(&self) -> bool {
        self.maintenance_due() != MaintenanceDue::No
    }

    /// How soon [`Mirror::maintain`] should run. Cheap enough to ask after every batch (two
    /// directory listings).
    pub fn maintenance_due(&self) -> MaintenanceDue {
        let loose = fs::read_dir(self.git_dir.join("objects").join("17"))
            .map(|entries| entries.count() * 256)
            .unwrap_or(0);
        let kept = self.packs_kept.load(std::sync::atomic::Ordering::Relaxed);
        let packs = self.pack_count().unwrap_or(0);
        if loose > OVERDUE * MAX_LOOSE_OBJECTS || packs > kept + OVERDUE * MAX_PACKS {
            MaintenanceDue::Now
        } else if loose > MAX_LOOSE_OBJECTS || packs > kept + MAX_PACKS {
            MaintenanceDue::WhenIdle
        } else {
            MaintenanceDue::No
        }
    }

    /// Keeps the number of packs logarithmic in the number of objects: a geometric roll-up
    /// (the packs `git repack --geometric=2` would choose, see [`crate::maintain`]) puts the
    /// small packs every batch adds — and loose objects — into one, leaving the large packs
    /// alone, and a multi-pack index lets readers find an object with one lookup. Concurrent
    /// readers, fetches and pushes are safe: no object is removed, and a pack is deleted only
    /// once the pack replacing it is in place. `None` when there was nothing to do or another
    /// call is already at work.
    pub fn maintain(&self) -> Result<Option<Maintenance>, GitError> {
        use std::sync::atomic::Ordering;
        if !self.needs_maintenance() {
            return Ok(None);
        }
        if self.maintaining.swap(true, Ordering::SeqCst) {
            return Ok(None);
        }
        let started = std::time::Instant::now();
        let result = (|| {
            let crate::maintain::RolledUp {
                packs_before,
                packs_after,
            } = crate::maintain::roll_up_packs(&self.env, &self.git_dir)?;
            self.packs_kept.store(packs_after, Ordering::Relaxed);
            Ok(Some(Maintenance {
                packs_before,
                packs_after,
                duration: started.elapsed(),
            }))
        })();
        self.maintaining.store(false, Ordering::SeqCst);
        result
    }

    pub fn path(&self) -> &Path {
        &self.git_dir
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn store(&self) -> &ObjectStore {
        &self.store
    }

    /// The tip of `branch` as the mirror last saw it; `None` when the branch does not exist.
    pub fn branch_tip(&self, branch: &str) -> Result<Option<ObjectId>, GitError> {
        validate_branch(branch)?;
        read_ref(&self.git_dir, &format!("refs/heads/{branch}"))
    }

    /// The files of a commit.
    pub fn tree_at(&self, commit: ObjectId) -> Result<TreeView<'_>, GitError> {
        Ok(TreeView::new(
            ObjectView::committed(&self.store),
            self.store.tree_of_commit(commit)?,
        ))
    }

    /// Fetches every branch, removing branches deleted on the remote.
    pub fn fetch(&self) -> Result<(), GitError> {
        let mut cmd = self.env.network(Some(&self.git_dir));
        cmd.args([
            "fetch",
            "--quiet",
            "--prune",
            "--no-tags",
            "--no-write-fetch-head",
            "--",
        ])
        .arg(&self.url)
        .arg("+refs/heads/*:refs/heads/*");
        let output = self.env.output(cmd)?;
        if !output.status.success() {
            return Err(classify_failure("fetch", &self.url, &output, &self.env));
        }
        Ok(())
    }

    /// Fetches one branch and returns its tip; `None` (and the local ref removed) when the
    /// remote has no such branch.
    pub fn fetch_branch(&self, branch: &str) -> Result<Option<ObjectId>, GitError> {
        validate_branch(branch)?;
        let refname = format!("refs/heads/{branch}");
        let fetch = || {
            let mut cmd = self.env.network(Some(&self.git_dir));
            if self.url.starts_with("git://") {
                // Over git daemon, protocol v2's request/response turns stall ~40 ms each on
                // loopback (measured: 50 ms vs 10 ms per fetch); a fetch after a lost push race
                // sits in the window where the next race can be lost, so it must be short. v0
                // costs a full ref advertisement, which is small for a manifest repository.
                cmd.args(["-c", "protocol.version=0"]);
            }
            cmd.args([
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-write-fetch-head",
                "--",
            ])
            .arg(&self.url)
            .arg(format!("+{refname}:{refname}"));
            self.env.output(cmd)
        };
        let mut output = fetch()?;
        // Another process moved the local ref while this fetch ran: a git child of a server
        // killed a moment ago (SIGKILL does not reach it) that is still fetching into this
        // mirror. The objects are here by now; fetching again settles the ref.
        let mut tries = 1;
        while !output.status.success()
            && String::from_utf8_lossy(&output.stderr).contains("cannot lock ref")
        {
            if tries == LOCAL_REF_TRIES {
                return Err(GitError::RefRace {
                    path: self.git_dir.clone(),
                    name: refname,
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(20) * tries);
            tries += 1;
            output = fetch()?;
        }
        if !output.status.success() {
            if String::from_utf8_lossy(&output.stderr).contains("couldn't find remote ref") {
                if read_ref(&self.git_dir, &refname)?.is_some() {
                    let mut delete = self.env.local(&self.git_dir);
                    delete.args(["update-ref", "-d", &refname]);
                    self.env.run(delete, "update-ref -d")?;
                }
                return Ok(None);
            }
            return Err(classify_failure("fetch", &self.url, &output, &self.env));
        }
        read_ref(&self.git_dir, &refname)
    }

    /// Stops what the mirror keeps running between commands (ssh connection-sharing masters).
    /// Call when the server stops; a later command starts them again.
    pub fn close(&self) {
        let stopped = self.env.stop_connection_sharing();
        if stopped > 0 {
            tracing::debug!(url = %self.env.redact(&self.url), stopped, "stopped ssh connection sharing");
        }
    }

    /// Pushes `new` to `branch` if and only if the remote branch is still at `expected_old`
    /// (absent when `None`). `pack`, when given, holds every object `new` adds to
    /// `expected_old`; an HTTP(S) remote gets it as it is.
    pub(crate) fn push(
        &self,
        branch: &str,
        new: ObjectId,
        expected_old: Option<ObjectId>,
        pack: Option<&Path>,
        timeout: std::time::Duration,
    ) -> Result<PushOutcome, GitError> {
        let refname = format!("refs/heads/{branch}");
        if let (Some(http), Some(pack)) = (&self.http, pack) {
            let update = Update {
                refname: &refname,
                new,
                expected_old,
                pack,
                timeout,
            };
            match http.push(&self.env, &update) {
                HttpPush::Done(outcome) => return outcome,
                HttpPush::Fallback(reason) => {
                    tracing::debug!(branch, reason, "pushing with git push");
                }
            }
        }
        let lease = match expected_old {
            Some(old) => format!("--force-with-lease={refname}:{old}"),
            None => format!("--force-with-lease={refname}:"),
        };
        let mut cmd = self.env.network(Some(&self.git_dir));
        cmd.args([
            "push",
            "--porcelain",
            "--atomic",
            "--no-verify",
            &lease,
            "--",
        ])
        .arg(&self.url)
        .arg(format!("{new}:{refname}"));
        let Some(output) = self.env.output_within(cmd, timeout)? else {
            // Whether the remote took the push is unknown: a transient error, and the retry
            // finds the commits by their trailers if they landed.
            return Err(GitError::Unreachable {
                op: "push",
                url: self.env.redact(&self.url),
                detail: format!(
                    "no answer within {} s; the push was stopped",
                    timeout.as_secs()
                ),
            });
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let status_line = stdout
            .lines()
            .find(|line| line.contains(&format!(":{refname}\t")));
        match status_line {
            Some(line) if output.status.success() && !line.starts_with('!') => {
                Ok(PushOutcome::Accepted)
            }
            Some(line) => {
                let summary = self
                    .env
                    .redact(line.rsplit('\t').next().unwrap_or(line).trim());
                let stderr = self
                    .env
                    .redact(String::from_utf8_lossy(&output.stderr).trim());
                let moved = crate::reject::classify(&summary, &stderr) == Rejection::Moved;
                if moved {
                    Ok(PushOutcome::Moved(summary))
                } else {
                    let reason = if stderr.is_empty() {
                        summary
                    } else {
                        format!("{summary}; {stderr}")
                    };
                    Err(GitError::PushRejected {
                        url: self.url.clone(),
                        branch: branch.to_owned(),
                        reason,
                    })
                }
            }
            None => Err(classify_failure("push", &self.url, &output, &self.env)),
        }
    }

    pub(crate) fn set_branch(&self, branch: &str, oid: ObjectId) -> Result<(), GitError> {
        write_ref(&self.git_dir, &format!("refs/heads/{branch}"), oid)
    }

    /// Whether `ancestor` is `descendant` or in its history; `descendant` may be abbreviated.
    /// A descendant the mirror does not hold is not a descendant.
    pub fn is_ancestor(&self, ancestor: ObjectId, descendant: &str) -> Result<bool, GitError> {
        if descendant.is_empty() || !descendant.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(false);
        }
        let mut cmd = self.env.local(&self.git_dir);
        cmd.args(["merge-base", "--is-ancestor"])
            .arg(ancestor.to_hex())
            .arg(descendant);
        let output = self.env.output(cmd)?;
        Ok(output.status.success())
    }

    /// Finds commits on the first-parent history of `branch` (at most `max_commits`, newest
    /// first) that carry the trailer `key` with one of `values`. Used after a crash to learn
    /// which requests already landed. The newest commit wins when a value appears twice.
    pub fn find_trailer(
        &self,
        branch: &str,
        key: &str,
        values: &[&str],
        max_commits: usize,
    ) -> Result<HashMap<String, ObjectId>, GitError> {
        crate::commit::validate_trailer_key(key)?;
        let mut found = HashMap::new();
        let Some(tip) = self.branch_tip(branch)? else {
            return Ok(found);
        };
        if values.is_empty() || max_commits == 0 {
            return Ok(found);
        }
        let mut cmd = self.env.local(&self.git_dir);
        cmd.args(["log", "--first-parent", "-z", "--no-color"])
            .arg(format!("--max-count={max_commits}"))
            .arg(format!(
                "--format=%H%x1f%(trailers:key={key},valueonly,unfold,separator=%x1f)"
            ))
            .arg(tip.to_hex())
            .arg("--")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.env.observe(&cmd);
        let mut child = cmd.spawn().map_err(|e| self.env.spawn_error(e))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(GitError::Command {
                op: "log",
                status: "no stdout".to_owned(),
                detail: String::new(),
            });
        };
        let mut reader = BufReader::new(stdout);
        let mut record = Vec::new();
        let mut complete = false;
        loop {
            record.clear();
            let read = reader
                .read_until(0, &mut record)
                .map_err(|e| GitError::io("read git log of", &self.git_dir, e))?;
            if read == 0 {
                break;
            }
            let text =
                String::from_utf8_lossy(record.strip_suffix(&[0]).unwrap_or(&record)).into_owned();
            let mut fields = text.split('\x1f');
            let Some(commit) = fields.next().and_then(|hex| ObjectId::from_hex(hex.trim())) else {
                continue;
            };
            for value in fields.map(str::trim) {
                if values.contains(&value) && !found.contains_key(value) {
                    found.insert(value.to_owned(), commit);
                }
            }
            if found.len() == values.len() {
                complete = true;
                break;
            }
        }
        if complete {
            // Everything was found: the rest of the history is not needed.
            let _ = child.kill();
            let _ = child.wait();
            return Ok(found);
        }
        let output = child
            .wait_with_output()
            .map_err(|e| self.env.spawn_error(e))?;
        if !output.status.success() {
            return Err(GitError::Command {
                op: "log",
                status: output.status.to_string(),
                detail: self
                    .env
                    .redact(String::from_utf8_lossy(&output.stderr).trim()),
            });
        }
        Ok(found)
    }
}

fn clone_bare(env: &GitEnv, url: &str, mirrors_dir: &Path, git_dir: &Path) -> Result<(), GitError> {
    // Clone beside the final place and rename, so a crash mid-clone leaves no half mirror that
    // a later open would take for a complete one.
    let staging = tempfile::Builder::new()
        .prefix(".clone-")
        .tempdir_in(mirrors_dir)
        .map_err(|e| GitError::io("create clone directory in", mirrors_dir, e))?;
    let target = staging.path().join("repo.git");
    let mut cmd = env.network(None);
    cmd.args(["clone", "--bare", "--quiet", "--no-tags", "--"])
        .arg(url)
        .arg(&target);
    let output = env.output(cmd)?;
    if !output.status.success() {
        return Err(classify_failure("clone", url, &output, env));
    }
    let mut config = env.local(&target);
    config.args(["config", "core.logAllRefUpdates", "false"]);
    env.run(config, "config")?;
    match fs::rename(&target, git_dir) {
        Ok(()) => Ok(()),
        // Another opener of the same remote finished its clone first; use that one.
        Err(_) if git_dir.join("HEAD").exists() => Ok(()),
        Err(e) => Err(GitError::io("move clone into", git_dir, e)),
    }
}

fn check_repository_format(env: &GitEnv, git_dir: &Path) -> Result<(), GitError> {
    let mut cmd = env.local(git_dir);
    cmd.args(["config", "--get-regexp", r"^extensions\."]);
    let output = env.output(cmd)?;
    // Exit status 1 means no extension is set: a plain SHA-1 repository with files refs.
    if !output.status.success() && output.status.code() != Some(1) {
        return Err(GitError::Command {
            op: "config",
            status: output.status.to_string(),
            detail: env.redact(String::from_utf8_lossy(&output.stderr).trim()),
        });
    }
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        let unsupported = match key {
            "extensions.objectformat" => value != "sha1",
            "extensions.refstorage" => value != "files",
            _ => false,
        };
        if unsupported {
            return Err(GitError::UnsupportedRepository {
                path: git_dir.to_owned(),
                reason: format!(
                    "{key} = {value}; tug supports SHA-1 objects and the files ref backend"
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_passwords_are_refused_without_echoing_them() {
        let err = check_remote_url("https://bot:s3cr3t@git.example.com/org/repo.git").unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("git.example.com"), "{text}");
        check_remote_url("https://bot@git.example.com/org/repo.git").unwrap();
        check_remote_url("git@github.com:org/repo.git").unwrap();
    }

    #[test]
    fn a_dropped_connection_is_transient_refused_credentials_are_not() {
        let classify = |stderr: &str| {
            classify_message(
                "push",
                "http://127.0.0.1/x.git",
                "exit status: 128".to_owned(),
                stderr.to_owned(),
            )
        };
        for transient in [
            "fatal: unable to access 'http://127.0.0.1/x.git/': Empty reply from server",
            "error: RPC failed; curl 56 Recv failure: Connection reset by peer",
            "fatal: unable to access 'http://h/x.git/': Failed to connect to h port 80",
            "fatal: unable to access 'http://h/x.git/': The requested URL returned error: 503",
        ] {
            assert!(classify(transient).is_transient(), "{transient}");
        }
        for permanent in [
            "fatal: Authentication failed for 'http://h/x.git/'",
            "fatal: repository 'http://h/x.git/' not found",
        ] {
            assert!(!classify(permanent).is_transient(), "{permanent}");
        }
    }

    #[test]
    fn branch_names_follow_git_rules() {
        for good in ["main", "release/1.2", "env-prod_x"] {
            validate_branch(good).unwrap();
        }
        for bad in [
            "", "-x", "a..b", "a b", "a/", "x.lock", "a/.b", "a:b", "a@{1}",
        ] {
            assert!(validate_branch(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn mirror_names_are_readable_and_distinct() {
        let a = mirror_dir_name("https://git.example.com/org/manifests.git", None);
        let b = mirror_dir_name("https://git.example.com/other/manifests.git", None);
        assert!(a.starts_with("manifests-") && a.ends_with(".git"), "{a}");
        assert_ne!(a, b);
        // Two configuration entries with one URL: a mirror each.
        let url = "https://git.example.com/org/manifests.git";
        let (one, two) = (
            mirror_dir_name(url, Some("platform")),
            mirror_dir_name(url, Some("platform-readonly")),
        );
        assert_ne!(one, two);
        assert!(one.starts_with("manifests-"), "{one}");
    }
}
