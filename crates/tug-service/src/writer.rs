//! The per-branch writers. Exactly one writer task runs per (repository, branch) that has work, in
//! this process under a database lease (so across replicas too). A writer claims every task
//! queued for its branch, lands them in one push (one commit each), records each task's result,
//! and goes again; tasks that arrive during a push go into the next one. An idle writer exits.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Notify};
use tracing::{Instrument as _, debug, error, info, warn};
use tug_deploy::{REQUEST_TRAILER, TaskChange};
use tug_git::{
    Auth, Identity, LandOptions, LandResult, MaintenanceDue, Mirror, MirrorOptions, Remote, Secret,
};
use tug_store::{BranchKey, Job, Level, Store, Task, TaskId, TaskOutcome};

use crate::config::{Config, RepositoryConfig, SigningConfig};
use crate::metrics::Metrics;
use crate::notify::{BranchNotice, BranchOutcome, JobNotification, Notifier};
use crate::shutdown::Shutdown;
use crate::signals::JobSignals;

/// How long a writer's lease on its branch lasts without renewal. A replica that dies holds its
/// branches at most this long (plus one dispatcher round) before another replica takes them.
const LEASE_TTL: Duration = Duration::from_secs(5);
/// How often a writer renews its lease while it builds and pushes a batch: three chances before
/// the lease would lapse.
const HEARTBEAT: Duration = Duration::from_millis(1500);
/// An idle writer waits this long for new work before exiting.
const IDLE_EXIT: Duration = Duration::from_secs(20);
/// How long after a batch lands the writer waits for as many new tasks as that batch had: about the
/// time its callers need to read their results and send their next requests. Without it, the
/// first caller back goes alone and the others wait for its push; callers split into groups
/// that take turns, each waiting for two pushes. A lone caller pays nothing: its next request
/// completes the count at once. 64 callers need 20–60 ms to come back on this project's
/// benchmark machine (the longer on PostgreSQL); the wait ends as soon as they are all back.
const LINGER: Duration = Duration::from_millis(80);
/// Within the linger, requests arrive in a burst (the callers of the last batch, each after
/// reading its result): the writer asks the store again once the burst has been quiet this long,
/// not once per request, or at once when as many tasks as it awaits were stored by this replica.
/// Each claim is a database transaction; on PostgreSQL one that waits for its commit to be
/// flushed, so a claim per request would eat the linger by itself.
const BURST_QUIET: Duration = Duration::from_millis(4);
/// While the callers of a batch come back, the tasks they stored are claimed in parts of this
/// many and built on the branch's tip while the rest arrive (see [`Gathering`]), rather than
/// all at once when the burst is over. Each claim is a database transaction: a part must be
/// large enough that the claims cost less than the build they take off the cycle.
const GATHER_PART: usize = 64;
/// A transient failure (remote down) is retried this many times before the task fails.
const MAX_ATTEMPTS: u32 = 30;
/// How far back a writer looks for commits of a task that may have landed before a crash.
const RECOVERY_DEPTH: usize = 2000;

/// A task's result with the events that explain it.
type Outcome = (TaskId, TaskOutcome, Vec<(Level, String)>);

pub struct Writers {
    store: Arc<dyn Store>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    notifier: Arc<Notifier>,
    signal: Arc<JobSignals>,
    owner: String,
    /// The lease owner of the previous process on this data directory, whose leases
    /// [`Writers::release_previous_leases`] drops.
    previous_owner: Option<String>,
    /// Held for the life of the process: proves no other live process uses the data directory.
    _data_dir_lock: Option<std::fs::File>,
    mirrors: Mutex<HashMap<String, Arc<Mirror>>>,
    running: Mutex<HashMap<BranchKey, Arc<Wakeup>>>,
    /// Resolves when the server shuts down: writers finish the push in flight and stop.
    shutdown: Shutdown,
    /// Work that outlives a batch (metrics, notifications), which shutdown waits for.
    background: Background,
}

/// Counts background tasks so shutdown can wait for them.
#[derive(Default, Clone)]
struct Background(Arc<std::sync::atomic::AtomicUsize>);

struct BackgroundGuard(Arc<std::sync::atomic::AtomicUsize>);

impl Background {
    fn enter(&self) -> BackgroundGuard {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        BackgroundGuard(self.0.clone())
    }

    fn is_idle(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst) == 0
    }
}

impl Drop for BackgroundGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Writers {
    pub fn new(
        store: Arc<dyn Store>,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        notifier: Arc<Notifier>,
        signal: Arc<JobSignals>,
        shutdown: Shutdown,
    ) -> Arc<Self> {
        let owner = format!("{}-{}", hostname(), uuid::Uuid::now_v7());
        let (data_dir_lock, previous_owner) = take_over_data_dir(&config.data_dir, &owner);
        Arc::new(Writers {
            store,
            config,
            metrics,
            notifier,
            signal,
            owner,
            previous_owner,
            _data_dir_lock: data_dir_lock,
            mirrors: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            shutdown,
            background: Background::default(),
        })
    }

    /// Drops the branch leases a previous process on this data directory still held when it died
    /// (SIGKILL, OOM, power loss), so its unfinished tasks resume now rather than when the leases
    /// expire. Call before the dispatcher starts.
    pub async fn release_previous_leases(&self) {
        let Some(previous) = &self.previous_owner else {
            return;
        };
        let branches = match self.store.queue_depths().await {
            Ok(depths) => depths,
            Err(e) => {
                warn!(error = %e, "cannot list branches with unfinished tasks");
                return;
            }
        };
        for (branch, _) in branches {
            if let Err(e) = self.store.unlock_branch(&branch, previous).await {
                warn!(repository = %branch.repository, branch = %branch.branch, error = %e, "cannot release the previous process's lease");
            }
        }
    }

    /// Makes sure a writer serves `branch`, waking it if it is waiting: a task of `branch` was
    /// just stored.
    pub async fn wake(self: &Arc<Self>, branch: &BranchKey) {
        self.wake_for(branch, 1).await;
    }

    /// [`Writers::wake`] for `stored` tasks just stored (none: a look for work left behind).
    async fn wake_for(self: &Arc<Self>, branch: &BranchKey, stored: usize) {
        if self.shutdown.is_set() {
            return;
        }
        let mut running = self.running.lock().await;
        if let Some(w) = running.get(branch) {
            w.stored(stored);
            return;
        }
        let wakeup = Arc::new(Wakeup::default());
        running.insert(branch.clone(), wakeup.clone());
        let this = self.clone();
        let branch = branch.clone();
        tokio::spawn(async move { this.run_branch(branch, wakeup).await });
    }

    /// Finds branches with work nobody serves: at start-up (jobs queued before a restart), after
    /// a retry delay, and when another replica's lease expired. Runs until shutdown.
    pub async fn dispatch(self: Arc<Self>, every: Duration) {
        let mut shutdown = self.shutdown.clone();
        loop {
            match self.store.runnable_branches().await {
                Ok(branches) => {
                    for b in branches {
                        self.wake_for(&b, 0).await;
                    }
                }
                Err(e) => warn!(error = %e, "cannot list runnable branches"),
            }
            if let Ok(depths) = self.store.queue_depths().await {
                self.metrics.set_queue_depths(
                    depths
                        .iter()
                        .map(|(b, d)| (b.repository.as_str(), b.branch.as_str(), *d)),
                );
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = shutdown.wait() => return,
            }
        }
    }

    /// Waits until every writer has stopped (after the shutdown latch fired), then stops what
    /// the mirrors keep running (ssh connection-sharing masters), so nothing outlives the server.
    pub async fn drain(&self, deadline: Duration) {
        let started = Instant::now();
        while started.elapsed() < deadline {
            if self.running.lock().await.is_empty() && self.background.is_idle() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mirrors: Vec<Arc<Mirror>> = self.mirrors.lock().await.values().cloned().collect();
        let _ = tokio::task::spawn_blocking(move || {
            for mirror in mirrors {
                mirror.close();
            }
        })
        .await;
    }

    async fn run_branch(self: Arc<Self>, branch: BranchKey, wakeup: Arc<Wakeup>) {
        let notify = &wakeup.notify;
        let mut shutdown = self.shutdown.clone();
        // When the last batch landed and its size, for the claim right after it.
        let mut just_landed: Option<(Instant, usize)> = None;
        // When this loop last took or renewed the lease.
        let mut leased_at: Option<Instant> = None;
        let mut flight = InFlight::default();
        loop {
            // A batch claimed ahead lands before the writer stops: its callers are waiting.
            if self.shutdown.is_set() && flight.ahead.is_none() {
                break;
            }
            // A lease renewed moments ago has most of its time left, and a claim checks it
            // anyway: renewing it before every batch would cost a flushed commit per batch on
            // PostgreSQL. A batch renews it itself while it runs (`land_leased`).
            if leased_at.is_none_or(|at| at.elapsed() > LEASE_TTL / 2) {
                match self
                    .store
                    .lock_branch(&branch, &self.owner, LEASE_TTL)
                    .await
                {
                    Ok(true) => leased_at = Some(Instant::now()),
                    Ok(false) => break, // another replica writes this branch; the dispatcher retries
                    Err(e) => {
                        warn!(repository = %branch.repository, branch = %branch.branch, error = %e, "cannot lease branch");
                        break;
                    }
                }
            }
            if let Some(next) = flight.ahead.take() {
                // Claimed while the last batch was pushed: its callers waited for that push
                // already, and nothing they could join is in flight. It goes now.
                let landed = next.tasks.len();
                if !self.land_leased(&branch, next, &mut flight).await {
                    break;
                }
                just_landed = Some((Instant::now(), landed));
                continue;
            }
            let batch = self.batch_max();
            // What the claims below take, stored from now on, counts towards the callers
            // awaited.
            wakeup.take_stored();
            // Right after a batch its callers are still reading their results: nothing may be
            // waiting, and a claim that finds nothing still locks the lease row (a flushed
            // commit on PostgreSQL). Count first, claim when there is something to take.
            let waiting = match &just_landed {
                Some(_) => self.store.waiting(&branch).await.unwrap_or(1),
                None => 1,
            };
            let mut gathered: Option<Gathering> = None;
            let mut tasks = if waiting == 0 {
                Vec::new()
            } else {
                match self.store.claim(&branch, &self.owner, batch).await {
                    Ok(t) => t,
                    Err(e) => {
                        warn!(repository = %branch.repository, branch = %branch.branch, error = %e, "cannot claim tasks");
                        break;
                    }
                }
            };
            if let Some((mut landed_at, landed)) = just_landed.take() {
                // The callers of the batch that just landed are reading their results and
                // sending their next requests now. Give them a moment to join the next push,
                // rather than let the first one to return go alone and the rest wait behind it.
                // Those callers come in addition to the requests already waiting (taken by the
                // claim above): a batch that was short because some callers came back late
                // must not stay short, the latecomers taking the places of the next callers.
                let target = (tasks.len() + landed).min(batch);
                // What is claimed is built while the rest come back.
                let mut gathering = None;
                if tasks.len() < target {
                    gathering = self.start_gathering(&branch).await;
                    if let Some(g) = &mut gathering
                        && !g.add(&branch, &tasks)
                        && let Some(g) = gathering.take()
                    {
                        g.give_up(&branch.branch).await;
                    }
                }
                // They come back once they have their results: the moment starts when those
                // are recorded. A batch already full lands without waiting for that.
                if tasks.len() < target
                    && let Some(pending) = flight.recording.take()
                {
                    pending.wait().await;
                    landed_at = Instant::now();
                }
                let deadline = tokio::time::Instant::from_std(landed_at + LINGER);
                while tasks.len() < target && tokio::time::Instant::now() < deadline {
                    tokio::select! {
                        _ = tokio::time::timeout_at(deadline, notify.notified()) => {}
                        () = shutdown.wait() => break,
                    }
                    // Every caller awaited is stored (one task short, the request just announced
                    // completes the batch): claim at once. Otherwise let the burst finish first,
                    // unless a part's worth is there to build while the rest arrive.
                    // The count knows only this replica's requests; another's wait for the quiet.
                    if target - tasks.len() > 1 {
                        loop {
                            let stored = wakeup.stored_since_claim();
                            if stored >= target - tasks.len()
                                || (gathering.is_some() && stored >= GATHER_PART)
                            {
                                break;
                            }
                            let quiet = (tokio::time::Instant::now() + BURST_QUIET).min(deadline);
                            if tokio::time::timeout_at(quiet, notify.notified())
                                .await
                                .is_err()
                            {
                                break;
                            }
                        }
                    }
                    wakeup.take_stored();
                    match self
                        .store
                        .claim(&branch, &self.owner, batch - tasks.len())
                        .await
                    {
                        Ok(more) => {
                            if let Some(g) = &mut gathering
                                && !g.add(&branch, &more)
                                && let Some(g) = gathering.take()
                            {
                                g.give_up(&branch.branch).await;
                            }
                            tasks.extend(more);
                        }
                        Err(e) => {
                            warn!(repository = %branch.repository, branch = %branch.branch, error = %e, "cannot claim tasks");
                            break;
                        }
                    }
                }
                gathered = gathering;
            }
            if !tasks.is_empty() {
                let landed = tasks.len();
                let next = match gathered.take() {
                    Some(g) => g.into_batch(tasks),
                    None => Ahead::plain(tasks),
                };
                if !self.land_leased(&branch, next, &mut flight).await {
                    break;
                }
                just_landed = Some((Instant::now(), landed));
                continue;
            }
            if let Some(g) = gathered.take() {
                g.give_up(&branch.branch).await;
            }
            if waiting == 0 {
                // Nobody came back within the linger: look again the usual way (a claim), not
                // only when the next request wakes the writer.
                continue;
            }
            // A quiet moment: what the batches left in the mirror is rolled up now, while the
            // CPU has nothing better to do.
            let opened = self.mirrors.lock().await.get(&branch.repository).cloned();
            if let Some(mirror) = opened
                && mirror.maintenance_due() != MaintenanceDue::No
            {
                roll_up(mirror, branch.repository.clone());
            }
            // Nothing to do: wait for a wake-up, or exit when idle. The final check happens with
            // the registry locked, so a wake-up can never fall between the check and the exit.
            let woken = tokio::select! {
                r = tokio::time::timeout(IDLE_EXIT, notify.notified()) => r.is_ok(),
                () = shutdown.wait() => false,
            };
            if woken {
                continue;
            }
            if let Some(pending) = flight.recording.take() {
                pending.wait().await;
            }
            let mut running = self.running.lock().await;
            match self.store.claim(&branch, &self.owner, batch).await {
                Ok(tasks) if !tasks.is_empty() => {
                    drop(running);
                    if !self
                        .land_leased(&branch, Ahead::plain(tasks), &mut flight)
                        .await
                    {
                        break;
                    }
                }
                _ => {
                    // Given up before this writer leaves the registry: a writer woken for the
                    // branch right after must not have its fresh lease dropped by this one.
                    let _ = self.store.unlock_branch(&branch, &self.owner).await;
                    running.remove(&branch);
                    return;
                }
            }
        }
        if let Some(pending) = flight.recording.take() {
            pending.wait().await;
        }
        // A batch claimed ahead and not landed (the lease was lost, or the branch is another
        // replica's now) goes back to the queue when the lease lapses, and whoever lands it
        // builds it again: nothing will push what was built here, so its pack goes now rather
        // than at the mirror's next maintenance.
        if let Some(Ahead {
            prepared: Some(preparing),
            ..
        }) = flight.ahead.take()
        {
            discard_built(preparing, &branch.branch).await;
        }
        // Given up before this writer leaves the registry: shutdown waits for the registry to
        // empty and then closes the store, and a lease still held then would keep the branch
        // from the other replicas until it lapses. The registry stays locked meanwhile, so a
        // wake-up waits and starts a new writer rather than notifying this one.
        let mut running = self.running.lock().await;
        let _ = self.store.unlock_branch(&branch, &self.owner).await;
        running.remove(&branch);
    }

    /// The mirror of `repo`, opened (and cloned) on first use; shared with the release index.
    pub(crate) async fn mirror(
        &self,
        repo: &RepositoryConfig,
    ) -> Result<Arc<Mirror>, tug_git::GitError> {
        let mut mirrors = self.mirrors.lock().await;
        if let Some(m) = mirrors.get(&repo.name) {
            return Ok(m.clone());
        }
        let auth = if let Some(h) = &repo.http {
            Auth::Http {
                username: h.username.clone(),
                password: Secret::new(h.password.expose()),
            }
        } else if let Some(s) = &repo.ssh {
            Auth::Ssh {
                private_key_file: s.private_key_file.clone(),
                known_hosts_file: s
                    .known_hosts_file
                    .clone()
                    .unwrap_or_else(|| self.config.data_dir.join("known_hosts")),
            }
        } else {
            Auth::None
        };
        let data_dir = self.config.data_dir.clone();
        let entry = repo.name.clone();
        let remote = Remote::new(repo.url.clone(), auth);
        let mirror = tokio::task::spawn_blocking(move || {
            let options = MirrorOptions {
                entry: Some(entry),
                ..MirrorOptions::default()
            };
            let m = Mirror::open(&data_dir, remote, options)?;
            m.fetch()?;
            Ok::<_, tug_git::GitError>(m)
        })
        .await
        .map_err(|e| tug_git::GitError::Command {
            op: "open",
            status: "panicked".to_owned(),
            detail: e.to_string(),
        })??;
        let mirror = Arc::new(mirror);
        mirrors.insert(repo.name.clone(), mirror.clone());
        Ok(mirror)
    }

    /// Lands a batch while a heartbeat renews the branch's lease. False when the lease was lost
    /// on the way: the batch was not pushed (or, if the push was already under way, is found by
    /// its trailers by whoever holds the branch now), nothing was recorded, and this writer
    /// must stop.
    async fn land_leased(
        self: &Arc<Self>,
        branch: &BranchKey,
        batch: Ahead,
        flight: &mut InFlight,
    ) -> bool {
        let held = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let heartbeat = {
            let (store, held) = (self.store.clone(), held.clone());
            let (branch, owner) = (branch.clone(), self.owner.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(HEARTBEAT).await;
                    let renewed = store.lock_branch(&branch, &owner, LEASE_TTL).await;
                    if !matches!(renewed, Ok(true)) {
                        warn!(
                            repository = %branch.repository, branch = %branch.branch,
                            "lost the branch lease during a batch; this writer stops"
                        );
                        held.store(false, std::sync::atomic::Ordering::SeqCst);
                        return;
                    }
                }
            })
        };
        self.land_batch(branch, batch, held.clone(), flight).await;
        heartbeat.abort();
        held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How `repo`'s batches are committed.
    fn land_options(&self, repo: &RepositoryConfig) -> LandOptions {
        let mut opts = LandOptions::new(Identity::new(
            self.config.commit.committer_name.clone(),
            self.config.commit.committer_email.clone(),
        ));
        opts.allow_empty = false;
        opts.signer = repo
            .signing
            .as_ref()
            .and_then(SigningConfig::signer)
            .map(|(signer, _)| signer);
        opts
    }

    /// Starts building the next batch on the branch's tip while its tasks are still being
    /// claimed (see [`Gathering`]). None when the repository's mirror is not open or the branch
    /// has no tip in it: the batch is built the usual way when it lands.
    async fn start_gathering(&self, branch: &BranchKey) -> Option<Gathering> {
        let repo = self.config.repository(&branch.repository)?;
        let mirror = self.mirrors.lock().await.get(&branch.repository).cloned()?;
        let base = mirror.branch_tip(&branch.branch).ok().flatten()?;
        let opts = self.land_options(repo);
        let (parts, arriving) = std::sync::mpsc::channel::<Vec<TracedChange>>();
        let name = branch.branch.clone();
        let built = tokio::task::spawn_blocking(move || {
            let mut changes: Vec<TracedChange> = Vec::new();
            let mut building = tug_git::Building::new(&name, base);
            let (mut took, mut parts, mut last) = (Duration::ZERO, 0, Duration::ZERO);
            while let Ok(part) = arriving.recv() {
                parts += 1;
                let started = Instant::now();
                let from = changes.len();
                changes.extend(part);
                let refs: Vec<&dyn tug_git::Change> = changes[from..]
                    .iter()
                    .map(|c| c as &dyn tug_git::Change)
                    .collect();
                let added = match &mut building {
                    Ok(batch) => batch.add(&mirror, &refs, &opts),
                    Err(_) => Ok(()),
                };
                drop(refs);
                if let Err(e) = added {
                    building = Err(e);
                }
                last = started.elapsed();
                took += last;
            }
            let started = Instant::now();
            let prepared = building.and_then(|batch| batch.finish(&mirror));
            let finished = started.elapsed();
            debug!(
                tasks = changes.len(),
                parts,
                last_part_ms = last.as_millis() as u64,
                finish_ms = finished.as_millis() as u64,
                "built a batch while its requests arrived"
            );
            (changes, prepared, took + finished)
        });
        Some(Gathering {
            parts,
            built,
            spans: HashMap::new(),
        })
    }

    fn batch_max(&self) -> usize {
        usize::try_from(self.config.limits.batch_max)
            .unwrap_or(64)
            .max(1)
    }

    /// Lands one batch of tasks of `branch` and records every outcome, in a `writer.batch` span
    /// linked to each task's request, and one `task` span per task whose parent is its request
    /// (see [`crate::telemetry`]). `held` turns false when the branch's lease is lost: no push
    /// starts after that.
    async fn land_batch(
        self: &Arc<Self>,
        branch: &BranchKey,
        claimed: Ahead,
        held: Arc<std::sync::atomic::AtomicBool>,
        flight: &mut InFlight,
    ) {
        let Ahead {
            tasks,
            spans,
            prepared,
        } = claimed;
        let batch = tracing::info_span!(
            parent: None,
            "writer.batch",
            repository = %branch.repository,
            branch = %branch.branch,
            batch_size = tasks.len(),
            attempts = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        for t in &tasks {
            if let Some(traceparent) = crate::telemetry::from_payload(&t.payload) {
                crate::telemetry::link(&batch, traceparent);
            }
        }
        let spans = spans.unwrap_or_else(|| task_spans(branch, &tasks));
        crate::telemetry::adopt(&batch, None);
        self.land_batch_in(branch, tasks, &spans, held, prepared, flight)
            .instrument(batch)
            .await;
    }

    /// Claims the branch's waiting tasks while the batch before them is pushed (`pushing` is
    /// the commit that push sets the branch to, for `pushed` tasks) and builds them on top of
    /// it, so that they are pushed as soon as that push is accepted. Tasks claimed before
    /// (their writer died) or unreadable are only claimed: they take the usual way.
    ///
    /// A few tasks waiting beside a large batch are left for the batch after it: pushed on
    /// their own they would pay a whole push for a few commits, and on a closed loop their
    /// callers would go on as a small group of their own, paying that push every round. Left
    /// waiting, they join the callers of the large batch when those come back.
    async fn claim_ahead(
        self: &Arc<Self>,
        branch: &BranchKey,
        mirror: &Arc<Mirror>,
        opts: &LandOptions,
        pushing: tug_git::ObjectId,
        pushed: usize,
    ) -> Option<Ahead> {
        // A count is a read; a claim, even of nothing, a write (on PostgreSQL a flushed one).
        let waiting = self.store.waiting(branch).await.unwrap_or(u64::MAX);
        if !worth_claiming_ahead(waiting, pushed) {
            return None;
        }
        let tasks = match self
            .store
            .claim(branch, &self.owner, self.batch_max())
            .await
        {
            Ok(tasks) if !tasks.is_empty() => tasks,
            Ok(_) => return None,
            Err(e) => {
                warn!(repository = %branch.repository, branch = %branch.branch, error = %e, "cannot claim tasks");
                return None;
            }
        };
        let spans = task_spans(branch, &tasks);
        let prepared = changes_to_build(&tasks, &spans).map(|changes| {
            let (m, b, mut opts) = (mirror.clone(), branch.branch.clone(), opts.clone());
            opts.on_push = None;
            tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let refs: Vec<&dyn tug_git::Change> =
                    changes.iter().map(|c| c as &dyn tug_git::Change).collect();
                let prepared = tug_git::prepare(&m, &b, pushing, &refs, &opts);
                drop(refs);
                (changes, prepared, started.elapsed())
            })
        });
        Some(Ahead {
            tasks,
            spans: Some(spans),
            prepared,
        })
    }

    /// When the batch landed whole, its results are recorded in the background (`recording`)
    /// while the caller goes on to the next batch: the next push need not wait for this one's
    /// store writes. The previous batch's recording is over before this one's starts.
    async fn land_batch_in(
        self: &Arc<Self>,
        branch: &BranchKey,
        tasks: Vec<Task>,
        spans: &HashMap<TaskId, tracing::Span>,
        held: Arc<std::sync::atomic::AtomicBool>,
        prepared: Option<Preparing>,
        flight: &mut InFlight,
    ) {
        let InFlight {
            recording,
            ahead,
            pace,
        } = flight;
        let started = Instant::now();
        let Some(repo) = self.config.repository(&branch.repository).cloned() else {
            let outcomes = tasks
                .iter()
                .map(|t| {
                    let msg = format!("repository {} is no longer configured", branch.repository);
                    (
                        t.id,
                        TaskOutcome::Failed(msg.clone()),
                        vec![(Level::Error, format!("[ERROR] {msg}"))],
                    )
                })
                .collect();
            self.finish(&tasks, outcomes).await;
            return;
        };
        let mirror = match self.mirror(&repo).await {
            Ok(m) => m,
            Err(e) => {
                self.postpone_or_fail(&tasks, &e.to_string(), e.is_transient())
                    .await;
                return;
            }
        };

        // Decode payloads; a payload that does not decode fails its task alone.
        let mut outcomes = Vec::new();
        let mut landed = None;
        let mut deferred = None;
        let mut work: Vec<(&Task, TaskChange)> = Vec::new();
        for t in &tasks {
            let change = serde_json::from_value::<TaskChange>(t.payload.clone())
                .map(|c| c.for_request(t.job_id.clone()))
                .map_err(|e| e.to_string());
            match change {
                Ok(change) => work.push((t, change)),
                Err(e) => outcomes.push((
                    t.id,
                    TaskOutcome::Failed(format!("stored task is unreadable: {e}")),
                    vec![(
                        Level::Error,
                        format!("[ERROR] stored task is unreadable: {e}"),
                    )],
                )),
            }
        }

        // A task claimed before (the writer died) may have landed already: find it by trailer.
        let retried: Vec<String> = work
            .iter()
            .filter(|(t, _)| t.attempts > 1)
            .map(|(t, _)| t.job_id.clone())
            .collect();
        if !retried.is_empty() {
            let m = mirror.clone();
            let b = branch.branch.clone();
            let found = tokio::task::spawn_blocking(move || {
                m.fetch_branch(&b)?;
                let ids: Vec<&str> = retried.iter().map(String::as_str).collect();
                m.find_trailer(&b, REQUEST_TRAILER, &ids, RECOVERY_DEPTH)
            })
            .await;
            match found {
                Ok(Ok(found)) => {
                    work.retain(|(t, _)| match found.get(&t.job_id) {
                        Some(commit) => {
                            outcomes.push(landed_outcome(
                                t,
                                &repo.url,
                                &branch.branch,
                                &commit.to_hex(),
                                true,
                            ));
                            false
                        }
                        None => true,
                    });
                }
                Ok(Err(e)) => {
                    self.postpone_or_fail(&tasks, &e.to_string(), e.is_transient())
                        .await;
                    return;
                }
                Err(e) => warn!(error = %e, "recovery lookup panicked"),
            }
        }

        if !work.is_empty() {
            let mut opts = self.land_options(&repo);
            opts.may_push = Some(Arc::new(move || {
                held.load(std::sync::atomic::Ordering::SeqCst)
            }));
            // Built while the batch before was pushed, from the same tasks in the same order.
            let waiting_for_build = Instant::now();
            let built = match prepared {
                Some(preparing) => match preparing.await {
                    Ok((changes, Ok(prepared), took)) if changes.len() == work.len() => {
                        pace.observe_build(took, changes.len());
                        Some((changes, prepared))
                    }
                    Ok((_, Err(e), _)) => {
                        debug!(error = %e, "the batch built ahead is built again");
                        None
                    }
                    // Tasks went again and joined it: built without them, it is built again.
                    Ok((_, Ok(prepared), _)) => {
                        prepared.discard(&branch.branch);
                        None
                    }
                    Err(e) => {
                        warn!(error = %e, "building a batch ahead panicked");
                        None
                    }
                },
                None => None,
            };
            let built_ahead = built.is_some();
            let ahead_wait = waiting_for_build.elapsed();
            let (changes, prepared) = match built {
                Some((changes, prepared)) => (changes, Some(prepared)),
                None => (
                    work.iter()
                        .map(|(t, c)| TracedChange::new(c.clone(), t, spans))
                        .collect(),
                    None,
                ),
            };
            // Told right before a push which commit it sends, the next batch is claimed and
            // built on top of it while the remote takes this one.
            let (pushing_to, mut pushing) = tokio::sync::mpsc::unbounded_channel();
            let ahead_opts = opts.clone();
            opts.on_push = Some(Arc::new(move |tip| {
                let _ = pushing_to.send(tip);
            }));
            let m = mirror.clone();
            let b = branch.branch.clone();
            let batch = tracing::Span::current();
            let landing = Instant::now();
            // The changes come back with the report: what each one's application found (the
            // keys it added) is in the changes that were applied, which are the ones built
            // ahead when the batch was.
            let mut land = tokio::task::spawn_blocking(move || {
                let refs: Vec<&dyn tug_git::Change> =
                    changes.iter().map(|c| c as &dyn tug_git::Change).collect();
                let report =
                    batch.in_scope(|| tug_git::land_prepared(&m, &b, &refs, &opts, prepared));
                drop(refs);
                (report, changes)
            });
            let claim_after = pace.claim_after(self.batch_max());
            // The commit being pushed, and when to claim the batch that goes on top of it.
            let mut claim_at: Option<(tokio::time::Instant, tug_git::ObjectId)> = None;
            let report = loop {
                let claim_due = claim_at.map(|(at, _)| at);
                tokio::select! {
                    report = &mut land => break report,
                    Some(tip) = pushing.recv(), if ahead.is_none() => {
                        // A push after a lost race sends another commit: build on that one.
                        claim_at = Some((tokio::time::Instant::now() + claim_after, tip));
                    }
                    () = async {
                        match claim_due {
                            Some(at) => tokio::time::sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    }, if ahead.is_none() && !self.shutdown.is_set() => {
                        if let Some((_, tip)) = claim_at.take() {
                            *ahead = self
                                .claim_ahead(branch, &mirror, &ahead_opts, tip, work.len())
                                .await;
                        }
                    }
                }
            };
            if let Some(previous) = recording.take() {
                previous.wait().await;
            }
            let (report, applied) = match report {
                Ok((report, changes)) => (Ok(report), changes),
                Err(e) => (Err(e), Vec::new()),
            };
            match report {
                Ok(Ok(report)) => {
                    tracing::Span::current().record("attempts", report.attempts);
                    self.metrics.observe_batch_size(work.len());
                    if report.pushed {
                        self.metrics.observe_push_duration(report.push_time);
                    }
                    // One push and one build: what the next claim ahead is timed by. A batch
                    // built ahead was measured while it was built.
                    if report.pushed && report.attempts == 1 {
                        pace.observe_push(report.push_time);
                        if !built_ahead {
                            pace.observe_build(report.apply_time, work.len());
                        }
                    }
                    // Pushes that lost their race (those of a rest deferred after a landed
                    // part included); a batch landed in parts made several that did not.
                    let lost = report.attempts.saturating_sub(report.landed_pushes.max(1));
                    for _ in 0..lost {
                        self.metrics.inc_push_retries(&branch.repository);
                        self.metrics.inc_push_conflicts(&branch.repository);
                    }
                    // A batch landed in parts on a contended branch may leave a rest: the
                    // landed part is recorded below, the rest goes again.
                    let landed_count = report.results.len();
                    if let Some(e) = &report.deferred {
                        warn!(
                            landed = landed_count, rest = work.len() - landed_count, error = %e,
                            "part of the batch landed, the rest goes again"
                        );
                    }
                    for (i, ((t, change), result)) in work.iter().zip(report.results).enumerate() {
                        let committed = matches!(result, LandResult::Committed { .. });
                        let mut outcome = match result {
                            LandResult::Committed { commit } => {
                                let mut outcome = landed_outcome(
                                    t,
                                    &repo.url,
                                    &branch.branch,
                                    &commit.to_hex(),
                                    false,
                                );
                                outcome.2.splice(0..0, delivery_progress(&repo.url, change));
                                outcome
                            }
                            LandResult::UpToDate => (
                                t.id,
                                TaskOutcome::Succeeded(serde_json::json!({
                                    "repository": branch.repository, "url": repo.url,
                                    "branch": branch.branch, "status": "up_to_date",
                                })),
                                vec![(
                                    Level::Info,
                                    format!(
                                        "[INFO] branch {} in repository {} already holds the requested state; nothing to commit",
                                        branch.branch, repo.url
                                    ),
                                )],
                            ),
                            LandResult::Failed(e) => {
                                // In the task's span: the line carries the request's trace id.
                                let span = spans
                                    .get(&t.id)
                                    .cloned()
                                    .unwrap_or_else(tracing::Span::none);
                                span.in_scope(|| {
                                    warn!(
                                        job = %t.job_id, repository = %branch.repository,
                                        branch = %branch.branch, attempt = t.attempts,
                                        error = %e, "job failed"
                                    );
                                });
                                (
                                    t.id,
                                    TaskOutcome::Failed(e.to_string()),
                                    vec![(Level::Error, format!("[ERROR] {e}"))],
                                )
                            }
                        };
                        if committed {
                            let created = applied
                                .get(i)
                                .map(|c| c.change.created.lines())
                                .unwrap_or_default();
                            report_created(&mut outcome, &created);
                        }
                        outcomes.push(outcome);
                    }
                    landed = Some(Landed {
                        tasks: landed_count,
                        attempts: report.attempts,
                        pushes: report.landed_pushes,
                        fetch: report.fetch_time,
                        apply: report.apply_time,
                        push: report.push_time,
                        land: landing.elapsed(),
                        ahead_wait,
                    });
                    if let Some(e) = report.deferred {
                        deferred = Some((
                            work[landed_count..]
                                .iter()
                                .map(|(t, _)| (*t).clone())
                                .collect::<Vec<Task>>(),
                            e,
                        ));
                    }
                }
                Ok(Err(e)) => {
                    // Outcomes found during recovery are final; the rest waits or fails.
                    let rest: Vec<Task> = work.iter().map(|(t, _)| (*t).clone()).collect();
                    self.finish(&tasks, outcomes).await;
                    if let tug_git::GitError::BranchContended { attempts, .. } = &e {
                        for _ in 0..*attempts {
                            self.metrics.inc_push_conflicts(&branch.repository);
                        }
                    }
                    self.not_landed(&rest, &e).await;
                    if !matches!(e, tug_git::GitError::Fenced { .. }) {
                        self.fall_in_behind(branch, ahead).await;
                    }
                    return;
                }
                Err(e) => {
                    let rest: Vec<Task> = work.iter().map(|(t, _)| (*t).clone()).collect();
                    self.finish(&tasks, outcomes).await;
                    self.postpone_or_fail(&rest, &format!("writer panicked: {e}"), false)
                        .await;
                    self.fall_in_behind(branch, ahead).await;
                    return;
                }
            }
        }
        let failed = outcomes
            .iter()
            .filter(|(_, outcome, _)| matches!(outcome, TaskOutcome::Failed(_)))
            .count();
        drop(work);
        let in_background = deferred.is_none();
        let (this, key) = (self.clone(), branch.clone());
        let record = async move {
            let recording = Instant::now();
            this.finish(&tasks, outcomes).await;
            if let Some((rest, e)) = &deferred {
                this.not_landed(rest, e).await;
            }
            if let Some(landed) = landed {
                landed.log(&key, failed, recording, started);
                // Each batch leaves a pack in the mirror. The roll-up waits for the writer to
                // find nothing waiting (`run_branch`), unless so many have piled up under a
                // steady load that they slow every git operation down: then it starts now, in
                // the background so the next batch does not wait.
                if mirror.maintenance_due() == MaintenanceDue::Now {
                    roll_up(mirror, key.repository.clone());
                }
            }
        }
        .instrument(tracing::Span::current());
        // Nothing landed (every task was found landed before): no land took the previous one.
        if let Some(previous) = recording.take() {
            previous.wait().await;
        }
        // A rest that did not land goes around before the next claim, so it is not left behind.
        if in_background {
            *recording = Some(PendingRecord(tokio::spawn(record)));
        } else {
            record.await;
            self.fall_in_behind(branch, ahead).await;
        }
    }

    /// The batch before `ahead` did not land whole. What of it goes again at once is older
    /// than `ahead`'s tasks and must not land after them (the later request for an image
    /// wins), so it is claimed now and lands with them, in request order. Built without them,
    /// what was built ahead is built again, and its pack goes; when nothing joins, it lands as
    /// built if it sits on the branch's tip (`land_prepared` checks).
    async fn fall_in_behind(self: &Arc<Self>, branch: &BranchKey, ahead: &mut Option<Ahead>) {
        let Some(next) = ahead.as_mut() else {
            return;
        };
        match self
            .store
            .claim(branch, &self.owner, self.batch_max())
            .await
        {
            Ok(older) if !older.is_empty() => {
                if let Some(preparing) = next.prepared.take() {
                    discard_built(preparing, &branch.branch).await;
                }
                let spans = task_spans(branch, &older);
                next.spans.get_or_insert_with(HashMap::new).extend(spans);
                next.tasks.extend(older);
                next.tasks.sort_by_key(|t| t.id);
            }
            Ok(_) => {}
            Err(e) => {
                warn!(repository = %branch.repository, branch = %branch.branch, error = %e, "cannot claim tasks");
            }
        }
    }

    /// Records outcomes and tells streams; metrics and notifications for the jobs that are now
    /// finished follow in the background, so the next batch does not wait for them.
    async fn finish(&self, tasks: &[Task], outcomes: Vec<Outcome>) {
        if outcomes.is_empty() {
            return;
        }
        match self.store.finish_tasks(outcomes).await {
            Ok(results) => {
                for r in results {
                    if let Err(e) = r {
                        warn!(error = %e, "task result not recorded");
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot record task results"),
        }
        let mut jobs: Vec<String> = tasks.iter().map(|t| t.job_id.clone()).collect();
        jobs.sort_unstable();
        jobs.dedup();
        // The batch's jobs read back at once and handed to their streams with the signal: one
        // read instead of one per waiting caller (on PostgreSQL, a round trip each).
        let read: Vec<_> = match self.store.jobs_with_events(&jobs).await {
            Ok(read) => read.into_iter().map(Arc::new).collect(),
            Err(e) => {
                warn!(error = %e, "cannot read the recorded jobs back; their streams read them");
                for job_id in &jobs {
                    self.signal.send(job_id);
                }
                Vec::new()
            }
        };
        // Counted before the streams hear of them. The snapshots go on to the background only
        // when notifications need them: a follower takes its job out of a snapshot nobody
        // else holds, and copies it (request, payloads, events) otherwise.
        count_ended(&self.metrics, &read);
        let unread_now = read.is_empty();
        let notify = if self.notifier.is_empty() {
            Vec::new()
        } else {
            read.clone()
        };
        for snapshot in read {
            self.signal.send_read(snapshot);
        }
        // Metrics and notifications read again what could not be read now.
        let unread = if unread_now { jobs } else { Vec::new() };
        if notify.is_empty() && unread.is_empty() {
            return;
        }
        let after = AfterJobs {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            notifier: self.notifier.clone(),
        };
        let guard = self.background.enter();
        tokio::spawn(async move {
            after.after_jobs(notify, &unread).await;
            drop(guard);
        });
    }
}

/// A batch's changes being built on top of the batch before it, and what that gave.
type Preparing = tokio::task::JoinHandle<(
    Vec<TracedChange>,
    Result<tug_git::Prepared, tug_git::GitError>,
    Duration,
)>;

/// The changes of `tasks`, to be built before their batch lands. None when one of them was
/// claimed before (its writer died: it may have landed, which its batch looks up first) or
/// cannot be read (it fails in its batch): those take the usual way.
fn changes_to_build(
    tasks: &[Task],
    spans: &HashMap<TaskId, tracing::Span>,
) -> Option<Vec<TracedChange>> {
    tasks
        .iter()
        .map(|t| {
            let change = serde_json::from_value::<TaskChange>(t.payload.clone()).ok()?;
            (t.attempts <= 1)
                .then(|| TracedChange::new(change.for_request(t.job_id.clone()), t, spans))
        })
        .collect()
}

/// A batch being claimed in parts while the callers of the batch before come back, and built
/// part by part on the branch's tip as they are claimed: what arrived first is built while
/// the rest are on their way, and only the last part is built once all are in. Every task
/// claimed goes in, in the order claimed, or the whole batch is given up and built when it
/// lands.
struct Gathering {
    parts: std::sync::mpsc::Sender<Vec<TracedChange>>,
    built: Preparing,
    spans: HashMap<TaskId, tracing::Span>,
}

impl Gathering {
    /// Adds the next part; false when it cannot be built ahead (see [`changes_to_build`]).
    fn add(&mut self, branch: &BranchKey, tasks: &[Task]) -> bool {
        if tasks.is_empty() {
            return true;
        }
        let spans = task_spans(branch, tasks);
        let Some(changes) = changes_to_build(tasks, &spans) else {
            return false;
        };
        self.spans.extend(spans);
        self.parts.send(changes).is_ok()
    }

    /// The batch of `tasks`, all of them added, in order, built as they came.
    fn into_batch(self, tasks: Vec<Task>) -> Ahead {
        let Gathering {
            parts,
            built,
            spans,
        } = self;
        drop(parts);
        Ahead {
            tasks,
            spans: Some(spans),
            prepared: Some(built),
        }
    }

    /// Lets go of what was built. The build writes into the mirror that the batch's land
    /// reads: it ends first.
    async fn give_up(self, branch: &str) {
        let Gathering { parts, built, .. } = self;
        drop(parts);
        discard_built(built, branch).await;
    }
}

/// Lets go of a batch built ahead that will not land as built, with its pack. The build writes
/// into the mirror that later lands read: it finishes first.
async fn discard_built(preparing: Preparing, branch: &str) {
    if let Ok((_, Ok(prepared), _)) = preparing.await {
        prepared.discard(branch);
    }
}

/// A claimed batch about to land: its tasks and, when claimed while the batch before it was
/// pushed, their spans and their changes being built ahead.
struct Ahead {
    tasks: Vec<Task>,
    spans: Option<HashMap<TaskId, tracing::Span>>,
    prepared: Option<Preparing>,
}

impl Ahead {
    fn plain(tasks: Vec<Task>) -> Self {
        Ahead {
            tasks,
            spans: None,
            prepared: None,
        }
    }
}

/// One `task` span per task, a root whose remote parent is the task's request (see
/// [`crate::telemetry`]).
fn task_spans(branch: &BranchKey, tasks: &[Task]) -> HashMap<TaskId, tracing::Span> {
    tasks
        .iter()
        .map(|t| {
            let span = tracing::info_span!(
                parent: None,
                "task",
                job = %t.job_id,
                repository = %branch.repository,
                branch = %branch.branch,
                attempt = t.attempts,
                trace_id = tracing::field::Empty,
            );
            crate::telemetry::adopt(&span, crate::telemetry::from_payload(&t.payload));
            (t.id, span)
        })
        .collect()
}

/// Rolls the mirror's packs up in the background (one roll-up at a time per mirror: a second
/// call while one runs does nothing).
fn roll_up(mirror: Arc<Mirror>, repository: String) {
    tokio::task::spawn_blocking(move || match mirror.maintain() {
        Ok(Some(done)) => info!(
            repository = %repository,
            packs_before = done.packs_before,
            packs_after = done.packs_after,
            ms = done.duration.as_millis() as u64,
            "repacked the mirror"
        ),
        Ok(None) => {}
        Err(e) => warn!(repository = %repository, error = %e, "cannot repack the mirror"),
    });
}

/// How a branch's writer learns of new work: woken, with a count of the tasks stored for it
/// since its last claim, so that it claims as soon as the callers it awaits are all back.
#[derive(Default)]
struct Wakeup {
    notify: Notify,
    stored: std::sync::atomic::AtomicUsize,
}

impl Wakeup {
    fn stored(&self, tasks: usize) {
        self.stored
            .fetch_add(tasks, std::sync::atomic::Ordering::Relaxed);
        self.notify.notify_one();
    }

    fn stored_since_claim(&self) -> usize {
        self.stored.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Called right before a claim: what is stored from now on is for a later one.
    fn take_stored(&self) {
        self.stored.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What a branch writer carries from one batch to the next.
#[derive(Default)]
struct InFlight {
    /// The last batch's results being recorded while the next batch lands.
    recording: Option<PendingRecord>,
    /// The next batch, claimed (and being built) while the last one was pushed.
    ahead: Option<Ahead>,
    pace: Pace,
}

/// How long this branch's pushes and builds have been taking: when, during a push, to claim the
/// next batch.
///
/// Claimed the moment a push starts, the next batch holds only the requests waiting then; the
/// callers coming back from the batch before have not arrived yet and go in a push of their
/// own. On a closed loop the callers split into groups that each pay a whole push (the
/// remote's fixed cost per push: receive-pack, the connectivity walk, the ref update). Claimed
/// as late as still leaves time to build a full batch, the next batch takes everyone who
/// arrived during the push, and is still ready when the push ends.
#[derive(Default)]
struct Pace {
    /// A moving average of one push's duration.
    push: Option<Duration>,
    /// A moving average of the time to build one task's change.
    build_per_task: Option<Duration>,
}

/// A batch claimed ahead must hold at least this fraction (1/n) of the batch being pushed.
const SMALL_GROUP_RATIO: u64 = 4;

/// Whether `waiting` tasks are claimed while a batch of `pushed` is pushed (see
/// [`Writers::claim_ahead`]). Beside a small batch anything waiting goes: the groups of a
/// closed loop that small pay little for their own pushes, and a caller alone must not wait.
fn worth_claiming_ahead(waiting: u64, pushed: usize) -> bool {
    let pushed = u64::try_from(pushed).unwrap_or(u64::MAX);
    let small_batch = pushed < SMALL_GROUP_RATIO * SMALL_GROUP_RATIO;
    waiting > 0 && (small_batch || waiting.saturating_mul(SMALL_GROUP_RATIO) >= pushed)
}

/// Headroom between the expected end of a build and the expected end of the push it follows.
const PACE_MARGIN: Duration = Duration::from_millis(10);

impl Pace {
    fn average(old: Option<Duration>, new: Duration) -> Duration {
        old.map_or(new, |old| (old * 3 + new) / 4)
    }

    fn observe_push(&mut self, took: Duration) {
        self.push = Some(Self::average(self.push, took));
    }

    fn observe_build(&mut self, took: Duration, tasks: usize) {
        if let Some(per_task) = u32::try_from(tasks)
            .ok()
            .filter(|&n| n > 0)
            .map(|n| took / n)
        {
            self.build_per_task = Some(Self::average(self.build_per_task, per_task));
        }
    }

    /// How long after a push starts the next batch is claimed: the expected push less the time
    /// to build `batch_max` tasks. At once while nothing has been measured yet.
    fn claim_after(&self, batch_max: usize) -> Duration {
        match (self.push, self.build_per_task) {
            (Some(push), Some(per_task)) => {
                let build = per_task.saturating_mul(u32::try_from(batch_max).unwrap_or(u32::MAX));
                push.saturating_sub(build.saturating_add(PACE_MARGIN))
            }
            _ => Duration::ZERO,
        }
    }
}

/// A landed batch's results being recorded while its writer goes on.
struct PendingRecord(tokio::task::JoinHandle<()>);

impl PendingRecord {
    async fn wait(self) {
        if let Err(e) = self.0.await {
            warn!(error = %e, "recording a batch's results panicked");
        }
    }
}

impl Landed {
    fn log(&self, branch: &BranchKey, failed: usize, recording: Instant, started: Instant) {
        info!(
            repository = %branch.repository, branch = %branch.branch,
            tasks = self.tasks, failed, attempts = self.attempts, pushes = self.pushes,
            fetch_ms = self.fetch.as_millis() as u64,
            apply_ms = self.apply.as_millis() as u64,
            push_ms = self.push.as_millis() as u64,
            land_ms = self.land.as_millis() as u64,
            ahead_wait_ms = self.ahead_wait.as_millis() as u64,
            record_ms = recording.elapsed().as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "landed batch"
        );
    }
}

/// Counts the jobs among `jobs` that have ended, and how long each took.
fn count_ended(metrics: &Metrics, jobs: &[crate::signals::Snapshot]) {
    let now = jiff::Timestamp::now();
    for job in jobs.iter().map(|snapshot| &snapshot.0) {
        if !job.state.is_terminal() {
            continue;
        }
        metrics.inc_jobs(job.state.as_str());
        if let Ok(d) = Duration::try_from(now.duration_since(job.created_at)) {
            metrics.observe_job_duration(d);
        }
    }
}

/// Per finished job: metrics and notifications.
struct AfterJobs {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    notifier: Arc<Notifier>,
}

impl AfterJobs {
    /// Notifications for `jobs` (counted already), and metrics and notifications for the jobs
    /// `unread`, read first.
    async fn after_jobs(&self, mut jobs: Vec<crate::signals::Snapshot>, unread: &[String]) {
        if !unread.is_empty() {
            match self.store.jobs_with_events(unread).await {
                Ok(read) => {
                    let read: Vec<_> = read.into_iter().map(Arc::new).collect();
                    count_ended(&self.metrics, &read);
                    jobs.extend(read);
                }
                Err(e) => warn!(error = %e, "cannot read the finished jobs"),
            }
        }
        if self.notifier.is_empty() {
            return;
        }
        for snapshot in &jobs {
            if snapshot.0.state.is_terminal() {
                self.notify(&snapshot.0).await;
            }
        }
    }

    async fn notify(&self, job: &Job) {
        let job_id = job.id.as_str();
        // One replica sends a job's notifications, however many finished its tasks.
        match self.store.claim_notification(job_id, "job").await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                warn!(job = %job_id, error = %e, "cannot claim the job's notifications");
                return;
            }
        }
        let request: Option<tug_spec::DeployRequest> =
            serde_json::from_value(job.request.clone()).ok();
        let notify = request
            .as_ref()
            .and_then(|r| r.notify.clone())
            .unwrap_or_default();
        if notify.disabled {
            return;
        }
        let branches = job
            .tasks
            .iter()
            .map(|t| BranchNotice {
                repository: t.branch.repository.clone(),
                branch: t.branch.branch.clone(),
                outcome: match (&t.state, &t.result) {
                    (tug_store::TaskState::Failed, _) => BranchOutcome::Failed {
                        error: t.last_error.clone().unwrap_or_else(|| "failed".to_owned()),
                    },
                    (_, Some(r)) if r.get("commit").is_some() => BranchOutcome::Committed {
                        commit: r["commit"].as_str().unwrap_or_default().to_owned(),
                    },
                    _ => BranchOutcome::UpToDate,
                },
            })
            .collect();
        let notification = JobNotification {
            job_id: job.id.clone(),
            status: job.state.as_str().to_owned(),
            requested_by: job.requested_by.clone(),
            finished_at: jiff::Timestamp::now(),
            branches,
            message: notify.message.clone(),
            context: notify.context.clone(),
        };
        let notifier = self.notifier.clone();
        // Never let a slow sink hold the writer.
        tokio::spawn(async move {
            for outcome in notifier.notify(&notification).await {
                if let Err(e) = &outcome.result {
                    warn!(sink = %outcome.sink, error = %e, "notification failed");
                }
            }
        });
    }
}

impl Writers {
    async fn postpone_or_fail(&self, tasks: &[Task], error: &str, transient: bool) {
        let (retry, fail): (Vec<&Task>, Vec<&Task>) = tasks
            .iter()
            .partition(|t| transient && t.attempts < MAX_ATTEMPTS);
        if !fail.is_empty() {
            let outcomes = fail
                .iter()
                .map(|t| {
                    let msg = if transient {
                        format!("gave up after {} attempts: {error}", t.attempts)
                    } else {
                        error.to_owned()
                    };
                    error!(
                        job = %t.job_id, repository = %t.branch.repository,
                        branch = %t.branch.branch, attempt = t.attempts,
                        error = %msg, "job failed"
                    );
                    (
                        t.id,
                        TaskOutcome::Failed(msg.clone()),
                        vec![(Level::Error, format!("[ERROR] {msg}"))],
                    )
                })
                .collect();
            let owned: Vec<Task> = fail.iter().map(|t| (*t).clone()).collect();
            self.finish(&owned, outcomes).await;
        }
        if retry.is_empty() {
            return;
        }
        // The backoff grows with failures, not with claims: a task taken over from a writer
        // that died was claimed twice without failing once, and must not wait as if it had.
        let failures = retry
            .iter()
            .map(|t| {
                if t.last_error.is_some() {
                    t.attempts
                } else {
                    1
                }
            })
            .max()
            .unwrap_or(1);
        let retry_in = backoff(failures);
        let ids = retry.iter().map(|t| (t.id, error.to_owned())).collect();
        for t in &retry {
            warn!(
                job = %t.job_id, repository = %t.branch.repository, branch = %t.branch.branch,
                attempt = t.attempts, max_attempts = MAX_ATTEMPTS,
                next_retry_in_s = retry_in.as_secs().max(1), error = %error,
                "push failed; retrying"
            );
        }
        let message = format!("[WARN] {error}; retrying in {}s", retry_in.as_secs().max(1));
        let retry: Vec<Task> = retry.into_iter().cloned().collect();
        self.postpone(&retry, ids, retry_in, &message).await;
    }

    /// Makes `tasks` runnable again after `retry_in` and tells their streams why.
    async fn postpone(
        &self,
        tasks: &[Task],
        ids: Vec<(tug_store::TaskId, String)>,
        retry_in: Duration,
        message: &str,
    ) {
        if let Err(e) = self.store.postpone_tasks(ids, retry_in).await {
            warn!(error = %e, "cannot postpone tasks");
        }
        let events = tasks
            .iter()
            .map(|t| tug_store::NewEvent {
                job_id: t.job_id.clone(),
                task_id: Some(t.id),
                level: Level::Warn,
                message: message.to_owned(),
            })
            .collect();
        let _ = self.store.append_events(events).await;
        for t in tasks {
            self.signal.send(&t.job_id);
        }
    }
}

impl Writers {
    /// Tasks whose changes `land` did not push, for `error`: a contended branch makes them
    /// runnable at once, a transient error waits, anything else fails them; after a fence
    /// they are left alone, as the branch's new writer runs them again (recording anything
    /// here would be refused by the lease fence anyway).
    async fn not_landed(&self, rest: &[Task], error: &tug_git::GitError) {
        match error {
            tug_git::GitError::Fenced { .. } => {}
            tug_git::GitError::BranchContended { .. } => {
                self.retry_contended(rest, &error.to_string()).await;
            }
            _ => {
                self.postpone_or_fail(rest, &error.to_string(), error.is_transient())
                    .await
            }
        }
    }

    /// Others kept landing commits on the branch while this batch was re-applied and pushed:
    /// nothing is wrong with the remote or the requests, so they go again shortly, however
    /// often that happens (a busy branch delays a request; it never fails it).
    async fn retry_contended(&self, tasks: &[Task], error: &str) {
        // Runnable at once: the writer's next claim takes them again, and `land` already
        // spaced its attempts with a jittered backoff.
        let retry_in = Duration::ZERO;
        warn!(tasks = tasks.len(), error, "branch busy, batch goes again");
        let ids = tasks.iter().map(|t| (t.id, error.to_owned())).collect();
        let message = format!("[WARN] {error} (others are pushing); trying again");
        self.postpone(tasks, ids, retry_in, &message).await;
    }
}

/// What landing a batch took, for its log line.
struct Landed {
    tasks: usize,
    /// Push attempts, lost races included.
    attempts: u32,
    /// Pushes that landed: more than one when a contended branch took the batch in parts.
    pushes: u32,
    fetch: Duration,
    apply: Duration,
    push: Duration,
    /// The whole landing: the above, and what lies between them.
    land: Duration,
    /// How long the landing waited for the batch to finish being built ahead: the part of its
    /// build that the push before it, or its callers' return, did not hide.
    ahead_wait: Duration,
}

/// A task's change as the write path applies it: each application (one per push attempt) is
/// an `edit` span under the task's span, so the request's trace shows its edits.
struct TracedChange {
    change: TaskChange,
    span: tracing::Span,
    applied: AtomicU32,
}

impl TracedChange {
    /// `task`'s change, its edits traced under the task's span.
    fn new(change: TaskChange, task: &Task, spans: &HashMap<TaskId, tracing::Span>) -> Self {
        TracedChange {
            change,
            span: spans
                .get(&task.id)
                .cloned()
                .unwrap_or_else(tracing::Span::none),
            applied: AtomicU32::new(0),
        }
    }
}

impl tug_git::Change for TracedChange {
    fn apply(
        &self,
        files: &dyn tug_git::FileSource,
    ) -> Result<Vec<tug_git::FileWrite>, tug_git::ChangeError> {
        let attempt = self.applied.fetch_add(1, Ordering::Relaxed) + 1;
        let _edit = tracing::info_span!(parent: &self.span, "edit", attempt).entered();
        tug_git::Change::apply(&self.change, files)
    }

    fn commit_meta(&self) -> tug_git::CommitMeta {
        tug_git::Change::commit_meta(&self.change)
    }
}

/// 1 s, 2 s, 4 s … up to a minute, so a remote that is down is not hammered.
fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// The Delivery server's progress lines for the steps of a landed change, worded as it words
/// them (scripts written for it grep them): `try updating the URL repository`, then one `the
/// kustomize command to modify the NAME image was successful` per kustomize image. The push line
/// follows in [`landed_outcome`].
fn delivery_progress(url: &str, change: &TaskChange) -> Vec<(Level, String)> {
    let mut lines = vec![(
        Level::Info,
        format!("[INFO] try updating the {url} repository"),
    )];
    for path in change.paths() {
        for image in path.kustomize.iter().flat_map(|k| &k.images) {
            lines.push((
                Level::Info,
                format!(
                    "[INFO] the kustomize command to modify the {} image was successful",
                    image.name
                ),
            ));
        }
    }
    lines
}

fn landed_outcome(t: &Task, url: &str, branch: &str, commit: &str, recovered: bool) -> Outcome {
    let message = if recovered {
        format!(
            "[INFO] the commit {commit} for this request was already pushed to branch {branch} in repository {url}"
        )
    } else {
        format!(
            "[INFO] the push to commit updates to branch {branch} in repository {url} was successful ({commit})"
        )
    };
    (
        t.id,
        TaskOutcome::Succeeded(serde_json::json!({
            "repository": t.branch.repository, "url": url, "branch": branch,
            "status": "committed", "commit": commit,
        })),
        vec![(Level::Info, message)],
    )
}

/// A landed request whose edits only added something (a new `images:` entry, a new key): a
/// `[WARN]` line per addition before the result, and the additions under `created` in it.
fn report_created(outcome: &mut Outcome, created: &[String]) {
    if created.is_empty() {
        return;
    }
    if let TaskOutcome::Succeeded(result) = &mut outcome.1 {
        result["created"] = serde_json::json!(created);
    }
    let warnings = created.iter().map(|c| {
        (
            Level::Warn,
            format!(
                "[WARN] {c}: added, not changed; if this is a typo, fix the request (with strict, such a request is refused)"
            ),
        )
    });
    outcome.2.splice(0..0, warnings);
}

/// Locks `data_dir/writer.lock` and swaps the lease owner recorded in `data_dir/writer-owner`
/// for `owner`, returning the lock and the previous owner. Only the process holding the lock may
/// release that owner's leases: the lock is free only when the previous process is gone. Any
/// failure leaves the leases to expire on their own.
fn take_over_data_dir(
    data_dir: &std::path::Path,
    owner: &str,
) -> (Option<std::fs::File>, Option<String>) {
    let lock_path = data_dir.join("writer.lock");
    let lock = match std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
    {
        Ok(f) => f,
        Err(e) => {
            warn!(path = %lock_path.display(), error = %e, "cannot open the data directory lock");
            return (None, None);
        }
    };
    if let Err(e) = lock.try_lock() {
        warn!(path = %lock_path.display(), error = %e, "another process holds the data directory lock; leases of a previous run are left to expire");
        return (None, None);
    }
    let owner_path = data_dir.join("writer-owner");
    let previous = std::fs::read_to_string(&owner_path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    if let Err(e) = std::fs::write(&owner_path, owner) {
        warn!(path = %owner_path.display(), error = %e, "cannot record the lease owner");
    }
    (Some(lock), previous)
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "tug".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_few_tasks_beside_a_large_batch_wait_for_the_batch_after_it() {
        assert!(!worth_claiming_ahead(0, 1), "nothing waiting: no claim");
        assert!(!worth_claiming_ahead(0, 256));
        // Beside a small batch everything goes ahead, however little.
        assert!(worth_claiming_ahead(1, 1));
        assert!(worth_claiming_ahead(1, 15));
        // Beside a large one, at least a quarter of it.
        assert!(!worth_claiming_ahead(3, 16));
        assert!(worth_claiming_ahead(4, 16));
        assert!(!worth_claiming_ahead(9, 138));
        assert!(worth_claiming_ahead(64, 256));
        assert!(!worth_claiming_ahead(63, 256));
        // A count that failed (`u64::MAX`) claims, as before the count existed.
        assert!(worth_claiming_ahead(u64::MAX, 256));
    }

    #[test]
    fn a_writer_counts_the_tasks_stored_since_its_last_claim() {
        let wakeup = Wakeup::default();
        wakeup.stored(1);
        wakeup.stored(2);
        assert_eq!(wakeup.stored_since_claim(), 3);
        wakeup.take_stored();
        assert_eq!(wakeup.stored_since_claim(), 0);
        // A look for work left behind wakes without counting.
        wakeup.stored(0);
        assert_eq!(wakeup.stored_since_claim(), 0);
    }

    #[tokio::test]
    async fn a_wakeup_before_the_writer_waits_is_not_lost() {
        let wakeup = Wakeup::default();
        wakeup.stored(1);
        tokio::time::timeout(Duration::from_secs(5), wakeup.notify.notified())
            .await
            .expect("the stored permit wakes the writer at once");
    }

    #[test]
    fn the_next_batch_is_claimed_at_once_until_pushes_and_builds_are_measured() {
        let mut pace = Pace::default();
        assert_eq!(pace.claim_after(256), Duration::ZERO);
        pace.observe_push(200 * MS);
        assert_eq!(
            pace.claim_after(256),
            Duration::ZERO,
            "no build measured yet"
        );
        pace.observe_build(Duration::ZERO, 0);
        assert_eq!(
            pace.claim_after(256),
            Duration::ZERO,
            "an empty build says nothing"
        );
    }

    #[test]
    fn the_next_batch_is_claimed_as_late_as_a_full_batch_can_still_be_built() {
        let mut pace = Pace::default();
        pace.observe_push(200 * MS);
        pace.observe_build(64 * MS, 128);
        // 200 ms of push less 256 × 0.5 ms of build less the margin.
        assert_eq!(pace.claim_after(256), 200 * MS - 128 * MS - PACE_MARGIN);
        // A build as long as the push: claimed at once, not after the push.
        assert_eq!(pace.claim_after(1024), Duration::ZERO);
    }

    #[test]
    fn one_slow_push_moves_the_estimate_a_quarter_of_the_way() {
        let mut pace = Pace::default();
        pace.observe_push(100 * MS);
        pace.observe_push(500 * MS);
        assert_eq!(pace.push, Some(200 * MS));
        pace.observe_build(40 * MS, 100);
        pace.observe_build(200 * MS, 100);
        assert_eq!(pace.build_per_task, Some(Duration::from_micros(800)));
    }
}
