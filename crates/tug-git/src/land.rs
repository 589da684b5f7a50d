//! Landing a batch of changes on a branch: one commit per change, one compare-and-swap push,
//! and on a moved branch: fetch, re-apply the same changes to the new tip, push again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use tug_clock::{Clock, SystemClock};

use crate::commit::{CommitMeta, Identity, serialize_commit};
use crate::error::{ChangeError, GitError};
use crate::mirror::{Mirror, validate_branch};
use crate::object::{EMPTY_TREE, ObjectId, ObjectKind, commit_tree};
use crate::pack::{Batch, WrittenPack};
use crate::reject::PushOutcome;
use crate::replay::{Applied, Recording};
use crate::sign::Signer;
use crate::store::{ObjectStore, ObjectView, ReadAhead};
use crate::tree::{FileSource, FileWrite, TreeView, apply_writes};

/// One requested change: a pure function of the files at the tip it is applied to. It may be
/// applied several times (once per push attempt), each time to a newer tip.
pub trait Change {
    fn apply(&self, files: &dyn FileSource) -> Result<Vec<FileWrite>, ChangeError>;
    fn commit_meta(&self) -> CommitMeta;
}

#[derive(Clone)]
pub struct LandOptions {
    /// The identity tug commits as.
    pub committer: Identity,
    pub clock: Arc<dyn Clock>,
    /// Push attempts before giving up with [`GitError::BranchContended`]; at least 1.
    pub max_attempts: u32,
    /// Commit every change even when it leaves the files as they were.
    pub allow_empty: bool,
    /// Fetch the branch before the first attempt. Off by default: the mirror's tip is used and
    /// the push's compare-and-swap catches a stale one, which saves a round trip when tug is the
    /// branch's usual writer.
    pub fetch_first: bool,
    /// The first retries go at once; after that, the pause before retry n is random in [d/2, d]
    /// with d = min(backoff_max, backoff_base·2ⁿ⁻⁴).
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Longest a push may take before it is stopped (a transient error).
    pub push_timeout: Duration,
    /// Asked right before every push: `false` means this writer no longer holds the branch
    /// (its lease was taken over) and must not push; `land` then fails with
    /// [`GitError::Fenced`]. `None` pushes unconditionally.
    pub may_push: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
    /// Signs every commit (a `gpgsig` header). The signature is made where the commit is
    /// serialised, so a batch re-applied after a lost race is signed again.
    pub signer: Option<Signer>,
    /// Told the commit a push is about to set the branch to, right before each push: the
    /// caller may [`prepare`] its next batch on top of it while the remote works.
    pub on_push: Option<Arc<dyn Fn(ObjectId) + Send + Sync>>,
}

impl LandOptions {
    pub fn new(committer: Identity) -> Self {
        Self {
            committer,
            clock: Arc::new(SystemClock),
            max_attempts: 8,
            allow_empty: false,
            fetch_first: false,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(500),
            push_timeout: Duration::from_secs(120),
            may_push: None,
            signer: None,
            on_push: None,
        }
    }
}

#[derive(Debug)]
pub enum LandResult {
    Committed {
        commit: ObjectId,
    },
    /// The files already held what the change asked for: no commit.
    UpToDate,
    /// The change could not be applied; it was skipped and the others went on.
    Failed(ChangeError),
}

/// The outcome of [`land`]: one result per change, in order, and what it cost.
#[derive(Debug)]
pub struct LandReport {
    /// One result per change, in order — unless [`LandReport::deferred`] is set: then only the
    /// first changes have results and the rest were not landed.
    pub results: Vec<LandResult>,
    /// Set when a first part of the batch landed and the rest could not (the branch stayed
    /// contended, or an error came after): the changes past `results` are untouched by this
    /// call and the error says why. Without a landed part, `land` returns the error instead.
    pub deferred: Option<GitError>,
    /// The branch tip after landing (`None`: the branch does not exist and nothing was pushed).
    pub tip: Option<ObjectId>,
    /// Whether a push happened (false when no change produced a commit).
    pub pushed: bool,
    /// Push attempts made (0 when nothing was pushed).
    pub attempts: u32,
    /// Pushes that landed: more than one when the batch went in parts on a contended branch.
    pub landed_pushes: u32,
    pub fetches: u32,
    pub fetch_time: Duration,
    /// Time spent applying changes and writing their objects, over all attempts.
    pub apply_time: Duration,
    pub push_time: Duration,
    pub backoff_time: Duration,
    /// Objects written to the mirror (blobs, trees, commits), over all attempts. The objects of
    /// one attempt go into one pack, written before its push.
    pub objects_written: u64,
    /// Requests to the mirror's object reader, each a round trip: a batch reads ahead what its
    /// changes need in a few of them rather than one per object.
    pub object_requests: u64,
}

/// Lands `changes` on `branch` of the mirror's remote. The caller must make sure that only one
/// `land` runs per (mirror, branch) at a time.
///
/// A batch goes in one push. When that push loses its race twice in a row, the next attempts
/// push only the first part of the batch, smaller after every loss down to one commit: the
/// window from reading the tip to the remote's ref update shrinks with the push, so a branch
/// another pusher moves every few hundred milliseconds still takes tug's commits. Each landed
/// part is final; the rest follows on top of it.
pub fn land(
    mirror: &Mirror,
    branch: &str,
    changes: &[&dyn Change],
    opts: &LandOptions,
) -> Result<LandReport, GitError> {
    land_prepared(mirror, branch, changes, opts, None)
}

/// A batch built ahead of its turn on a commit that is not the branch's tip yet — the one the
/// batch before it is pushing — with its objects written (and durable) in the mirror. It goes
/// to [`land_prepared`] with the same changes: when the branch's tip is still that commit by
/// then, its first push sends what was built here; otherwise it is built again (its changes
/// replayed where what they read did not change).
pub struct Prepared {
    base: ObjectId,
    results: Vec<LandResult>,
    /// The last commit built (`base` when no change made one).
    head: ObjectId,
    written: Option<WrittenPack>,
    /// Whether `written` is durable already; otherwise the push makes it so.
    synced: bool,
    applied: Vec<Option<Applied>>,
    took: Duration,
}

impl Prepared {
    /// The commit the batch was built on.
    pub fn base(&self) -> ObjectId {
        self.base
    }

    /// The pack its objects were written to (none when no change made a commit).
    pub fn pack(&self) -> Option<&std::path::Path> {
        self.written.as_ref().map(|w| w.pack.as_path())
    }

    /// Lets go of a batch that will not be landed as built: its objects belong to commits
    /// nobody will push, so its pack goes now rather than at the mirror's next maintenance.
    pub fn discard(self, branch: &str) {
        remove_unused_pack(branch, self.written.as_ref());
    }
}

/// Builds one commit per change on top of `base` (which must be in the mirror: a commit an
/// earlier batch wrote, landed or about to be) and writes them into the mirror as a pack, made
/// durable here, off the path of the push that will send it.
pub fn prepare(
    mirror: &Mirror,
    branch: &str,
    base: ObjectId,
    changes: &[&dyn Change],
    opts: &LandOptions,
) -> Result<Prepared, GitError> {
    let mut building = Building::new(branch, base)?;
    building.add(mirror, changes, opts)?;
    let prepared = building.finish(mirror)?;
    let started = Instant::now();
    if let Some(pack) = &prepared.written {
        pack.sync()?;
    }
    Ok(Prepared {
        synced: true,
        took: prepared.took + started.elapsed(),
        ..prepared
    })
}

/// A batch built in parts, each on top of the one before, while its changes come in: the
/// requests of a closed loop's callers arrive over tens of milliseconds, and what arrived first
/// is built while the rest are on their way. The parts share one set of objects in memory, so
/// the batch becomes one pack and goes in one push.
pub struct Building {
    branch: String,
    base: ObjectId,
    /// The last commit built (`base` when no change made one).
    head: ObjectId,
    batch: Batch,
    results: Vec<LandResult>,
    applied: Vec<Option<Applied>>,
    took: Duration,
}

impl Building {
    /// Starts a batch on `base`, a commit in the mirror (see [`prepare`]); a base the mirror
    /// lacks fails the first part.
    pub fn new(branch: &str, base: ObjectId) -> Result<Self, GitError> {
        validate_branch(branch)?;
        Ok(Self {
            branch: branch.to_owned(),
            base,
            head: base,
            batch: Batch::new(),
            results: Vec::new(),
            applied: Vec::new(),
            took: Duration::ZERO,
        })
    }

    /// How many changes the batch holds so far.
    pub fn len(&self) -> usize {
        self.results.len()
    }

    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }

    /// Builds one commit per change on top of what the batch holds. A change that fails or
    /// finds nothing to do is a result like in [`land`]; an error of the mirror ends the batch.
    pub fn add(
        &mut self,
        mirror: &Mirror,
        changes: &[&dyn Change],
        opts: &LandOptions,
    ) -> Result<(), GitError> {
        let started = Instant::now();
        let mut applied: Vec<Option<Applied>> = changes.iter().map(|_| None).collect();
        let (results, head) = build_commits(
            &self.batch,
            mirror,
            &self.branch,
            Some(self.head),
            changes,
            &mut applied,
            opts,
        )?;
        self.head = head.unwrap_or(self.head);
        self.results.extend(results);
        self.applied.extend(applied);
        self.took += started.elapsed();
        Ok(())
    }

    /// Writes the batch's objects into the mirror as one pack, for [`land_prepared`] with all
    /// the changes added, in order. The pack is made durable while it is pushed.
    pub fn finish(self, mirror: &Mirror) -> Result<Prepared, GitError> {
        let started = Instant::now();
        let written = if self.head == self.base {
            None
        } else {
            let written = mirror.store().write_pack(&self.batch)?;
            mirror.store().cache_trees(self.batch.latest_trees());
            written
        };
        Ok(Prepared {
            base: self.base,
            results: self.results,
            head: self.head,
            written,
            synced: false,
            applied: self.applied,
            took: self.took + started.elapsed(),
        })
    }
}

/// [`land`], starting from `prepared` when it was built on the branch's tip (see
/// [`Prepared`]). `prepared` must have been built from `changes`, in the same order.
pub fn land_prepared(
    mirror: &Mirror,
    branch: &str,
    changes: &[&dyn Change],
    opts: &LandOptions,
    prepared: Option<Prepared>,
) -> Result<LandReport, GitError> {
    validate_branch(branch)?;
    let written_before = mirror.store().objects_written();
    let requests_before = mirror.store().requests();
    let mut report = LandReport {
        results: Vec::with_capacity(changes.len()),
        deferred: None,
        tip: None,
        pushed: false,
        attempts: 0,
        landed_pushes: 0,
        fetches: 0,
        fetch_time: Duration::ZERO,
        apply_time: Duration::ZERO,
        push_time: Duration::ZERO,
        backoff_time: Duration::ZERO,
        objects_written: 0,
        object_requests: 0,
    };
    let outcome = land_parts(mirror, branch, changes, opts, prepared, &mut report);
    report.objects_written = mirror.store().objects_written() - written_before;
    report.object_requests = mirror.store().requests() - requests_before;
    match outcome {
        Ok(()) => Ok(report),
        // Landed commits are in the remote's history: their results must reach the caller, so
        // a later part's failure defers the rest instead of hiding what landed.
        Err(error) if report.landed_pushes > 0 => {
            report.deferred = Some(error);
            Ok(report)
        }
        Err(error) => Err(error),
    }
}

fn land_parts(
    mirror: &Mirror,
    branch: &str,
    changes: &[&dyn Change],
    opts: &LandOptions,
    mut prepared: Option<Prepared>,
    report: &mut LandReport,
) -> Result<(), GitError> {
    let fetch = |report: &mut LandReport| -> Result<Option<ObjectId>, GitError> {
        let started = Instant::now();
        let tip = mirror.fetch_branch(branch);
        report.fetches += 1;
        report.fetch_time += started.elapsed();
        tip
    };
    let mut fetched = opts.fetch_first;
    // When the tip the batch is built on was learnt: a push loses its race when another lands
    // between then and the remote's ref update.
    let mut tip_read = Instant::now();
    let mut tip = if opts.fetch_first {
        fetch(report)?
    } else {
        mirror.branch_tip(branch)?
    };
    let max_attempts = opts.max_attempts.max(1);
    // What each change read and wrote on the last tip, to re-apply it cheaply on the next.
    let mut applied: Vec<Option<Applied>> = changes.iter().map(|_| None).collect();
    // A batch prepared on another commit is rebuilt; what its changes read is replayed.
    let prepared_here = prepared.take().and_then(|mut p| {
        if p.applied.len() != changes.len() {
            p.discard(branch);
            return None;
        }
        if Some(p.base) == tip && p.head != p.base {
            return Some(p);
        }
        std::mem::swap(&mut applied, &mut p.applied);
        p.discard(branch);
        None
    });
    let mut prepared = prepared_here;
    // Changes settled by landed pushes (or found to need none), and how many the next push
    // takes; lost races in a row since the last landed push.
    let mut done = 0;
    let mut per_push = changes.len().max(1);
    let mut lost = 0;
    loop {
        let part = done..(done + per_push).min(changes.len());
        let started = Instant::now();
        let fetched_in = started.duration_since(tip_read);
        let (part_changes, part_applied) = (&changes[part.clone()], &mut applied[part.clone()]);
        let mut build = |tip, report: &mut LandReport| {
            let started = Instant::now();
            let batch = Batch::new();
            let built = build_commits(
                &batch,
                mirror,
                branch,
                tip,
                part_changes,
                part_applied,
                opts,
            )
            .map(|(results, head)| (results, head, batch));
            report.apply_time += started.elapsed();
            built
        };
        // The whole batch, built ahead on this very tip: its pack is written and durable.
        if let Some(p) = prepared.take().filter(|_| part == (0..changes.len())) {
            report.apply_time += p.took;
            applied = p.applied;
            let new_tip = p.head;
            let syncing = p
                .written
                .clone()
                .filter(|_| !p.synced)
                .map(|pack| std::thread::spawn(move || pack.sync()));
            match push_attempt(
                mirror,
                branch,
                new_tip,
                tip,
                p.written.as_ref(),
                opts,
                report,
                part.len(),
            )? {
                PushOutcome::Accepted => {
                    settle_sync(branch, syncing);
                    report.results.extend(p.results);
                    report.tip = Some(new_tip);
                    report.pushed = true;
                    report.landed_pushes += 1;
                    mirror.set_branch(branch, new_tip)?;
                    return Ok(());
                }
                PushOutcome::Moved(reason) => {
                    if let Some(syncing) = syncing {
                        let _ = syncing.join();
                    }
                    remove_unused_pack(branch, p.written.as_ref());
                    tracing::debug!(
                        branch,
                        attempt = report.attempts,
                        reason,
                        "prepared push rejected, branch moved"
                    );
                    lose_race(mirror, branch, &mut lost, max_attempts)?;
                    tip_read = Instant::now();
                    tip = fetch(report)?;
                    fetched = true;
                    continue;
                }
            }
        }
        let (mut results, mut head, mut batch) = build(tip, report)?;
        if head == tip && !fetched {
            // Nothing to push, judged on a tip that may be stale: a no-op or a failure might be
            // different on the remote's real tip, so look once more.
            let fresh = fetch(report)?;
            fetched = true;
            if fresh != tip {
                tip = fresh;
                (results, head, batch) = build(tip, report)?;
            }
        }
        let Some(new_tip) = head.filter(|_| head != tip) else {
            report.results.extend(results);
            report.tip = tip;
            done = part.end;
            if done >= changes.len() {
                return Ok(());
            }
            continue;
        };
        // The push sends objects from the mirror, and the pack stores the batch's repeated trees
        // as deltas that the push copies instead of computing. A rejected attempt leaves its
        // pack behind; its objects are unreferenced and harmless.
        let built_in = started.elapsed();
        let started = Instant::now();
        let written = mirror.store().write_pack(&batch)?;
        // The pack must be durable before the local ref points at it, not before the push:
        // syncing while the remote works on the push takes it off the batch's path.
        let syncing = written
            .clone()
            .map(|pack| std::thread::spawn(move || pack.sync()));
        // A batch prepared on top of this one reads these directories while the push runs.
        if opts.on_push.is_some() {
            mirror.store().cache_trees(batch.latest_trees());
        }
        let packed_in = started.elapsed();
        report.apply_time += packed_in;
        let pushed_at = report.push_time;
        let outcome = push_attempt(
            mirror,
            branch,
            new_tip,
            tip,
            written.as_ref(),
            opts,
            report,
            part.len(),
        )?;
        let push_time = report.push_time - pushed_at;
        match outcome {
            PushOutcome::Accepted => {
                settle_sync(branch, syncing);
                report.results.extend(results);
                report.tip = Some(new_tip);
                report.pushed = true;
                report.landed_pushes += 1;
                done = part.end;
                mirror.set_branch(branch, new_tip)?;
                // The next batch starts from these directories: it need not read them back.
                if opts.on_push.is_none() {
                    mirror.store().cache_trees(batch.latest_trees());
                }
                if done >= changes.len() {
                    return Ok(());
                }
                // The rest goes on top of what just landed, without a fetch: if the branch
                // moved meanwhile, the push says so. A part that landed may grow again.
                tip = Some(new_tip);
                tip_read = Instant::now();
                lost = 0;
                per_push = per_push.saturating_mul(2);
            }
            PushOutcome::Moved(reason) => {
                // Its files go away; a sync still running on them would only find them gone.
                if let Some(syncing) = syncing {
                    let _ = syncing.join();
                }
                remove_unused_pack(branch, written.as_ref());
                tracing::debug!(
                    branch,
                    attempt = report.attempts,
                    commits = part.len(),
                    reason,
                    since_tip_read_ms = tip_read.elapsed().as_millis(),
                    fetch_ms = fetched_in.as_millis(),
                    build_ms = built_in.as_millis(),
                    pack_ms = packed_in.as_millis(),
                    push_ms = push_time.as_millis(),
                    "push rejected, branch moved"
                );
                lose_race(mirror, branch, &mut lost, max_attempts)?;
                // One lost race is usually a one-off push by someone else: the same batch goes
                // again. Losing twice in a row means the branch moves faster than this push
                // takes, so the next one is a quarter of the size.
                if lost >= 2 {
                    per_push = (part.len() / 4).max(1);
                }
                let pause = backoff(opts, lost);
                std::thread::sleep(pause);
                report.backoff_time += pause;
                tip_read = Instant::now();
                tip = fetch(report)?;
                fetched = true;
            }
        }
    }
}

/// Waits for the pack of a landed push to be durable. The remote has the commits now: whatever
/// happens to the local copy, the batch landed. A mirror is a cache (it is fetched again when in
/// doubt), so a pack that cannot be made durable is logged, not turned into failed requests.
fn settle_sync(branch: &str, syncing: Option<std::thread::JoinHandle<Result<(), GitError>>>) {
    match syncing.map(std::thread::JoinHandle::join) {
        Some(Ok(Err(error))) => {
            tracing::warn!(branch, %error, "the pushed batch's local pack is not durable");
        }
        Some(Err(_)) => {
            tracing::warn!(branch, "syncing the pushed batch's local pack panicked");
        }
        Some(Ok(Ok(()))) | None => {}
    }
}

/// The pack of a lost push, or of a batch built ahead on a commit that did not land, holds
/// objects nothing refers to: they are built again on the new tip.
fn remove_unused_pack(branch: &str, written: Option<&WrittenPack>) {
    if let Some(pack) = written {
        tracing::debug!(branch, pack = %pack.pack.display(), "removing a pack no commit will use");
        pack.remove();
    }
}

/// Counts a push that lost its race; too many in a row and the branch is too busy to land on.
fn lose_race(
    mirror: &Mirror,
    branch: &str,
    lost: &mut u32,
    max_attempts: u32,
) -> Result<(), GitError> {
    *lost += 1;
    if *lost >= max_attempts {
        return Err(GitError::BranchContended {
            url: mirror.url().to_owned(),
            branch: branch.to_owned(),
            attempts: *lost,
        });
    }
    Ok(())
}

/// One push of `new_tip` over `tip` (the compare-and-swap), counted in `report`.
#[allow(clippy::too_many_arguments)]
fn push_attempt(
    mirror: &Mirror,
    branch: &str,
    new_tip: ObjectId,
    tip: Option<ObjectId>,
    written: Option<&WrittenPack>,
    opts: &LandOptions,
    report: &mut LandReport,
    commits: usize,
) -> Result<PushOutcome, GitError> {
    report.attempts += 1;
    if opts.may_push.as_ref().is_some_and(|may_push| !may_push()) {
        return Err(GitError::Fenced {
            branch: branch.to_owned(),
        });
    }
    if let Some(on_push) = &opts.on_push {
        on_push(new_tip);
    }
    let started = Instant::now();
    let span = tracing::info_span!(
        "git.push",
        branch,
        attempt = report.attempts,
        changes = commits,
        outcome = tracing::field::Empty,
    );
    let _push = span.enter();
    let pack = written.map(|written| written.pack.as_path());
    let outcome = mirror.push(branch, new_tip, tip, pack, opts.push_timeout);
    span.record(
        "outcome",
        match &outcome {
            Ok(PushOutcome::Accepted) => "accepted",
            Ok(PushOutcome::Moved(_)) => "moved",
            Err(_) => "failed",
        },
    );
    report.push_time += started.elapsed();
    outcome
}

/// Attempts retried without a pause. A lost race means another push landed a moment ago, and
/// the next one — a person's or a bot's on its schedule — is furthest away right now: waiting
/// only spends that gap. Only a branch that keeps moving gets pauses, to spare the remote.
const IMMEDIATE_RETRIES: u32 = 3;

fn backoff(opts: &LandOptions, attempt: u32) -> Duration {
    if attempt <= IMMEDIATE_RETRIES {
        return Duration::ZERO;
    }
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(IMMEDIATE_RETRIES + 1))
        .unwrap_or(u32::MAX);
    let ceiling = opts
        .backoff_base
        .saturating_mul(factor)
        .min(opts.backoff_max);
    let micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
    if micros == 0 {
        return Duration::ZERO;
    }
    Duration::from_micros(rand::rng().random_range(micros / 2..=micros))
}

/// Builds one commit per change on top of `tip` into `batch`, which may hold the commits of an
/// earlier part of the same batch (`tip` may be one of them); returns the results and the last
/// commit. The objects created are not on disk yet.
fn build_commits(
    batch: &Batch,
    mirror: &Mirror,
    branch: &str,
    tip: Option<ObjectId>,
    changes: &[&dyn Change],
    applied: &mut [Option<Applied>],
    opts: &LandOptions,
) -> Result<(Vec<LandResult>, Option<ObjectId>), GitError> {
    let store = mirror.store();
    let mut head = tip;
    let mut tree = match tip {
        Some(commit) => commit_tree(
            commit,
            &ObjectView::with_batch(store, batch).read_kind(commit, ObjectKind::Commit)?,
        )?,
        None => ObjectId::from_hex(EMPTY_TREE).ok_or_else(|| GitError::Command {
            op: "empty tree",
            status: "invalid constant".to_owned(),
            detail: String::new(),
        })?,
    };
    let signer = opts.signer.as_ref().map(Signer::load).transpose()?;
    let ahead = match tip {
        Some(_) => read_ahead(store, batch, tree, changes, applied),
        None => ReadAhead::default(),
    };
    let objects = ObjectView::with_batch(store, batch).with_ahead(&ahead);
    let mut results = Vec::with_capacity(changes.len());
    for (change, memo) in changes.iter().zip(applied.iter_mut()) {
        let meta = change.commit_meta();
        let view = TreeView::new(objects, tree);
        let writes = match memo.as_ref().and_then(|m| m.replay(&view)) {
            Some(writes) => Ok(writes),
            None => {
                let recording = Recording::new(&view);
                let writes = change.apply(&recording);
                *memo = writes.as_ref().ok().map(|w| recording.finish(w));
                writes
            }
        };
        let new_tree = writes.and_then(|writes| apply_writes(objects, batch, tree, &writes));
        let new_tree = match new_tree {
            Ok(new_tree) => new_tree,
            Err(ChangeError::Git(e)) => return Err(e),
            // On a branch that does not exist yet every path is missing: the branch is the
            // whole story, the first missing path would only be noise.
            Err(_) if head.is_none() => {
                results.push(LandResult::Failed(ChangeError::Invalid(format!(
                    "branch {branch} does not exist in {}",
                    mirror.url()
                ))));
                continue;
            }
            Err(e) => {
                results.push(LandResult::Failed(e));
                continue;
            }
        };
        if new_tree == tree && !(meta.allow_empty || opts.allow_empty) {
            results.push(LandResult::UpToDate);
            continue;
        }
        let commit = meta.message().and_then(|message| {
            serialize_commit(
                new_tree,
                head,
                &meta.author,
                &opts.committer,
                opts.clock.now().into(),
                &message,
            )
        });
        let commit = match commit {
            Ok(commit) => commit,
            Err(e) => {
                results.push(LandResult::Failed(ChangeError::Invalid(e.to_string())));
                continue;
            }
        };
        // The object id is that of the signed object: the signature is part of the commit.
        let commit = match &signer {
            Some(signer) => signer.sign_commit(&commit)?,
            None => commit,
        };
        let oid = batch.add(ObjectKind::Commit, &commit, None);
        head = Some(oid);
        tree = new_tree;
        results.push(LandResult::Committed { commit: oid });
    }
    Ok((results, head))
}

/// Probing rounds before a batch is built: a change reading a file some directories deep needs
/// a round for every level not in the tree cache (three for a kustomization under
/// `apps/<service>/<env>/`).
const READ_AHEAD_ROUNDS: usize = 6;

/// Reads ahead, in a few pipelined requests, what `changes` will read on the tree `root`.
/// Every round probes the changes still missing something — each stops at its first object not
/// at hand — then fetches all that they named at once, instead of one round trip per object
/// while the batch is built. A change that completes on what is at hand is recorded, so that
/// building the batch replays it rather than running its edit again. Nothing here decides an
/// outcome: a change left missing something is applied as before, reading what it needs.
fn read_ahead(
    store: &ObjectStore,
    batch: &Batch,
    root: ObjectId,
    changes: &[&dyn Change],
    applied: &mut [Option<Applied>],
) -> ReadAhead {
    let mut ahead = ReadAhead::default();
    if changes.len() < 2 {
        return ahead;
    }
    let mut pending: Vec<usize> = (0..changes.len()).collect();
    for _ in 0..READ_AHEAD_ROUNDS {
        let mut missing = Vec::new();
        for i in pending {
            let view = TreeView::new(ObjectView::probing(store, &ahead).with_own(batch), root);
            let wanted = ahead.wanted();
            if let Some(memo) = &applied[i] {
                let same = memo.replay(&view).is_some();
                if ahead.wanted() > wanted {
                    missing.push(i);
                    continue;
                }
                if same {
                    continue;
                }
                applied[i] = None;
            }
            let recording = Recording::new(&view);
            let writes = changes[i].apply(&recording);
            if ahead.wanted() > wanted {
                missing.push(i);
            } else if let Ok(writes) = &writes {
                applied[i] = Some(recording.finish(writes));
            }
        }
        if missing.is_empty() || !ahead.has_room() {
            break;
        }
        if let Err(error) = ahead.fetch(store) {
            tracing::debug!(%error, "reading ahead stopped; the batch reads what it needs");
            break;
        }
        pending = missing;
    }
    ahead
}
