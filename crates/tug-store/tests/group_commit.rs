//! Group commit and the batch writes of the SQLite store, on real database files. Batch methods
//! are also checked through the trait's default implementations, which other stores inherit.

// The harness helpers below are test code too, outside any `#[test]` function.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tempfile::TempDir;
use tug_store::{
    BranchKey, Enqueued, Event, Job, JobFilter, JobState, Level, ManualClock, NewEvent, NewJob,
    NewTask, Result, SqliteStore, Store, StoreError, Task, TaskId, TaskOutcome, TaskState,
};

const TTL: Duration = Duration::from_secs(30);

async fn open(dir: &TempDir, clock: &Arc<ManualClock>) -> SqliteStore {
    SqliteStore::open_with_clock(&dir.path().join("tug.db"), clock.clone())
        .await
        .unwrap()
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        jiff::Timestamp::from_second(1_750_000_000).unwrap(),
    ))
}

fn branch(repository: &str, branch: &str) -> BranchKey {
    BranchKey {
        repository: repository.to_owned(),
        branch: branch.to_owned(),
    }
}

fn deploy(key: Option<&str>, image: &str, branches: &[&BranchKey]) -> NewJob {
    NewJob {
        idempotency_key: key.map(str::to_owned),
        kind: "deploy".to_owned(),
        requested_by: "ci-token".to_owned(),
        request: json!({ "image": image, "service": "shop" }),
        tasks: branches
            .iter()
            .map(|branch| NewTask {
                branch: (*branch).clone(),
                payload: json!({ "set_image": image }),
            })
            .collect(),
    }
}

/// A store that only implements the required methods, so the batch methods run the trait's
/// default implementations (on top of the SQLite store's single writes).
struct SingleWrites(SqliteStore);

#[async_trait]
impl Store for SingleWrites {
    async fn enqueue(&self, job: NewJob) -> Result<Enqueued> {
        self.0.enqueue(job).await
    }
    async fn job(&self, id: &str) -> Result<Option<Job>> {
        self.0.job(id).await
    }
    async fn task(&self, id: TaskId) -> Result<Option<Task>> {
        self.0.task(id).await
    }
    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        self.0.list_jobs(filter).await
    }
    async fn append_event(
        &self,
        job_id: &str,
        task_id: Option<TaskId>,
        level: Level,
        message: &str,
    ) -> Result<Event> {
        self.0.append_event(job_id, task_id, level, message).await
    }
    async fn events(&self, job_id: &str, after_seq: i64) -> Result<Vec<Event>> {
        self.0.events(job_id, after_seq).await
    }
    async fn runnable_branches(&self) -> Result<Vec<BranchKey>> {
        self.0.runnable_branches().await
    }
    async fn lock_branch(&self, branch: &BranchKey, owner: &str, ttl: Duration) -> Result<bool> {
        self.0.lock_branch(branch, owner, ttl).await
    }
    async fn unlock_branch(&self, branch: &BranchKey, owner: &str) -> Result<()> {
        self.0.unlock_branch(branch, owner).await
    }
    async fn claim(&self, branch: &BranchKey, owner: &str, max: usize) -> Result<Vec<Task>> {
        self.0.claim(branch, owner, max).await
    }
    async fn finish_task(&self, task_id: TaskId, outcome: TaskOutcome) -> Result<()> {
        self.0.finish_task(task_id, outcome).await
    }
    async fn postpone_task(&self, task_id: TaskId, error: &str, retry_in: Duration) -> Result<()> {
        self.0.postpone_task(task_id, error, retry_in).await
    }
    async fn queue_depths(&self) -> Result<Vec<(BranchKey, u64)>> {
        self.0.queue_depths().await
    }
    async fn waiting(&self, branch: &BranchKey) -> Result<u64> {
        self.0.waiting(branch).await
    }
    async fn claim_notification(&self, job_id: &str, channel: &str) -> Result<bool> {
        self.0.claim_notification(job_id, channel).await
    }
    async fn ping(&self) -> Result<()> {
        self.0.ping().await
    }
}

/// Both flavours of every batch test: the SQLite store's own batches, and the defaults.
async fn stores() -> Vec<(TempDir, Arc<ManualClock>, Box<dyn Store>)> {
    let mut stores: Vec<(TempDir, Arc<ManualClock>, Box<dyn Store>)> = Vec::new();
    for defaults in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let clock = clock();
        let store = open(&dir, &clock).await;
        let store: Box<dyn Store> = if defaults {
            Box::new(SingleWrites(store))
        } else {
            Box::new(store)
        };
        stores.push((dir, clock, store));
    }
    stores
}

#[tokio::test]
async fn finish_tasks_finishes_each_task_alone_with_its_events() {
    for (_dir, _clock, store) in stores().await {
        let prod = branch("gitops/prod", "main");
        let staging = branch("gitops/staging", "main");
        let both = store
            .enqueue(deploy(None, "shop:1", &[&prod, &staging]))
            .await
            .unwrap()
            .job;
        let single = store
            .enqueue(deploy(None, "shop:2", &[&prod]))
            .await
            .unwrap()
            .job;
        let unclaimed = store
            .enqueue(deploy(None, "web:1", &[&branch("gitops/web", "main")]))
            .await
            .unwrap()
            .job;
        assert!(store.lock_branch(&prod, "writer-a", TTL).await.unwrap());
        let claimed = store.claim(&prod, "writer-a", 10).await.unwrap();
        assert_eq!(claimed.len(), 2);
        let (on_both, on_single) = (claimed[0].id, claimed[1].id);
        assert_eq!(on_both, both.tasks[0].id);

        let results = store
            .finish_tasks(vec![
                (
                    on_both,
                    TaskOutcome::Succeeded(json!({ "commit": "aaa" })),
                    vec![(Level::Info, "pushed aaa".to_owned())],
                ),
                (
                    9_999,
                    TaskOutcome::Succeeded(json!({})),
                    vec![(Level::Info, "never stored".to_owned())],
                ),
                (
                    unclaimed.tasks[0].id,
                    TaskOutcome::Succeeded(json!({})),
                    vec![(Level::Info, "never stored".to_owned())],
                ),
                (
                    on_single,
                    TaskOutcome::Failed("path apps/shop vanished".to_owned()),
                    vec![
                        (Level::Warn, "edit failed".to_owned()),
                        (Level::Error, "path apps/shop vanished".to_owned()),
                    ],
                ),
                // Already finished by the first entry: the second outcome is refused.
                (
                    on_both,
                    TaskOutcome::Failed("late".to_owned()),
                    vec![(Level::Info, "never stored".to_owned())],
                ),
            ])
            .await
            .unwrap();
        assert_eq!(results.len(), 5);
        assert!(results[0].is_ok(), "{:?}", results[0]);
        assert!(
            matches!(results[1], Err(StoreError::UnknownTask(9_999))),
            "{:?}",
            results[1]
        );
        assert!(
            matches!(results[2], Err(StoreError::LeaseLost(id)) if id == unclaimed.tasks[0].id),
            "{:?}",
            results[2]
        );
        assert!(results[3].is_ok(), "{:?}", results[3]);
        assert!(
            matches!(results[4], Err(StoreError::LeaseLost(id)) if id == on_both),
            "{:?}",
            results[4]
        );

        let both = store.job(&both.id).await.unwrap().unwrap();
        assert_eq!(both.state, JobState::Running, "staging still waits");
        assert_eq!(both.tasks[0].state, TaskState::Succeeded);
        assert_eq!(both.tasks[0].result, Some(json!({ "commit": "aaa" })));
        let single = store.job(&single.id).await.unwrap().unwrap();
        assert_eq!(single.state, JobState::Failed);
        assert_eq!(
            single.tasks[0].last_error.as_deref(),
            Some("path apps/shop vanished")
        );
        let unclaimed = store.job(&unclaimed.id).await.unwrap().unwrap();
        assert_eq!(unclaimed.state, JobState::Queued);

        let events = store.events(&both.id, 0).await.unwrap();
        assert_eq!(
            events
                .iter()
                .map(|e| (e.seq, e.task_id, e.message.as_str()))
                .collect::<Vec<_>>(),
            vec![(1, Some(on_both), "pushed aaa")]
        );
        let events = store.events(&single.id, 0).await.unwrap();
        assert_eq!(
            events
                .iter()
                .map(|e| (e.seq, e.level, e.task_id, e.message.as_str()))
                .collect::<Vec<_>>(),
            vec![
                (1, Level::Warn, Some(on_single), "edit failed"),
                (2, Level::Error, Some(on_single), "path apps/shop vanished"),
            ]
        );
        assert!(store.events(&unclaimed.id, 0).await.unwrap().is_empty());
        assert!(store.finish_tasks(Vec::new()).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn postpone_tasks_postpones_each_task_alone() {
    for (_dir, clock, store) in stores().await {
        let prod = branch("gitops/prod", "main");
        let mut jobs = Vec::new();
        for n in 0..3 {
            jobs.push(
                store
                    .enqueue(deploy(None, &format!("shop:{n}"), &[&prod]))
                    .await
                    .unwrap()
                    .job,
            );
        }
        assert!(store.lock_branch(&prod, "writer-a", TTL).await.unwrap());
        let claimed = store.claim(&prod, "writer-a", 2).await.unwrap();
        assert_eq!(claimed.len(), 2);
        let results = store
            .postpone_tasks(
                vec![
                    (claimed[0].id, "remote unreachable".to_owned()),
                    (jobs[2].tasks[0].id, "not claimed".to_owned()),
                    (claimed[1].id, "remote unreachable again".to_owned()),
                ],
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        assert!(results[0].is_ok(), "{:?}", results[0]);
        assert!(
            matches!(results[1], Err(StoreError::LeaseLost(id)) if id == jobs[2].tasks[0].id),
            "{:?}",
            results[1]
        );
        assert!(results[2].is_ok(), "{:?}", results[2]);

        let retry_at = clock.now_ms() + 60_000;
        for (job, error) in jobs
            .iter()
            .zip(["remote unreachable", "remote unreachable again"])
        {
            let job = store.job(&job.id).await.unwrap().unwrap();
            assert_eq!(job.state, JobState::Pending);
            assert_eq!(job.tasks[0].state, TaskState::Pending);
            assert_eq!(job.tasks[0].last_error.as_deref(), Some(error));
            assert_eq!(
                job.tasks[0].retry_at.map(|at| at.as_millisecond()),
                Some(retry_at)
            );
        }
        let third = store.job(&jobs[2].id).await.unwrap().unwrap();
        assert_eq!(third.state, JobState::Queued);
        assert_eq!(third.tasks[0].last_error, None);
    }
}

#[tokio::test]
async fn append_events_numbers_each_job_densely() {
    for (_dir, _clock, store) in stores().await {
        let main = branch("gitops/prod", "main");
        let a = store
            .enqueue(deploy(None, "shop:1", &[&main]))
            .await
            .unwrap()
            .job;
        let b = store
            .enqueue(deploy(None, "shop:2", &[&main]))
            .await
            .unwrap()
            .job;
        let event = |job: &Job, task: Option<TaskId>, message: &str| NewEvent {
            job_id: job.id.clone(),
            task_id: task,
            level: Level::Info,
            message: message.to_owned(),
        };
        let appended = store
            .append_events(vec![
                event(&a, None, "accepted"),
                event(&b, None, "accepted"),
                event(&a, Some(a.tasks[0].id), "edited"),
            ])
            .await
            .unwrap();
        assert_eq!(
            appended
                .iter()
                .map(|e| (e.job_id.as_str(), e.seq, e.message.as_str()))
                .collect::<Vec<_>>(),
            vec![
                (a.id.as_str(), 1, "accepted"),
                (b.id.as_str(), 1, "accepted"),
                (a.id.as_str(), 2, "edited"),
            ]
        );
        assert_eq!(store.events(&a.id, 0).await.unwrap(), {
            let mut of_a = appended.clone();
            of_a.remove(1);
            of_a
        });
        assert!(store.append_events(Vec::new()).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn append_events_stores_all_or_none_in_the_sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, &clock()).await;
    let main = branch("gitops/prod", "main");
    let a = store
        .enqueue(deploy(None, "shop:1", &[&main]))
        .await
        .unwrap()
        .job;
    let b = store
        .enqueue(deploy(None, "shop:2", &[&main]))
        .await
        .unwrap()
        .job;
    let event = |job_id: &str, task_id: Option<TaskId>| NewEvent {
        job_id: job_id.to_owned(),
        task_id,
        level: Level::Info,
        message: "x".to_owned(),
    };
    let unknown = store
        .append_events(vec![event(&a.id, None), event("no-such-job", None)])
        .await;
    assert!(
        matches!(unknown, Err(StoreError::UnknownJob(ref id)) if id == "no-such-job"),
        "{unknown:?}"
    );
    let foreign = store
        .append_events(vec![event(&a.id, None), event(&a.id, Some(b.tasks[0].id))])
        .await;
    assert!(
        matches!(foreign, Err(StoreError::Invalid(_))),
        "{foreign:?}"
    );
    assert!(store.events(&a.id, 0).await.unwrap().is_empty());
    // Nothing refused left a gap.
    let next = store
        .append_event(&a.id, None, Level::Info, "first")
        .await
        .unwrap();
    assert_eq!(next.seq, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_of_concurrent_clients_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = Arc::new(open(&dir, &clock).await);
    let clients = 64;
    let each = 8;
    let handles: Vec<_> = (0..clients)
        .map(|client| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for n in 0..each {
                    let env = branch("gitops/prod", &format!("env-{}", client % 4));
                    // Every request is sent twice, as a client retrying after a timeout would.
                    let key = format!("c{client}-{n}");
                    let job = store
                        .enqueue(deploy(Some(&key), "shop:1", &[&env]))
                        .await?
                        .job;
                    let again = store.enqueue(deploy(Some(&key), "shop:1", &[&env])).await?;
                    assert!(!again.created);
                    assert_eq!(again.job.id, job.id);
                    let event = store
                        .append_event(&job.id, Some(job.tasks[0].id), Level::Info, "accepted")
                        .await?;
                    assert_eq!(event.seq, 1);
                    acknowledged.push(job.id);
                }
                Ok::<_, StoreError>(acknowledged)
            })
        })
        .collect();
    let mut acknowledged = BTreeSet::new();
    for handle in handles {
        acknowledged.extend(handle.await.unwrap().unwrap());
    }
    assert_eq!(acknowledged.len(), clients * each);

    // Dropped, not closed: the file alone must hold every acknowledged write.
    drop(Arc::into_inner(store).unwrap());
    let store = open(&dir, &clock).await;
    let everything = JobFilter {
        limit: Some(10_000),
        ..JobFilter::default()
    };
    let stored: BTreeSet<String> = store
        .list_jobs(&everything)
        .await
        .unwrap()
        .into_iter()
        .map(|job| job.id)
        .collect();
    assert_eq!(stored, acknowledged);
    for id in acknowledged.iter().take(8) {
        assert_eq!(store.events(id, 0).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn a_closed_store_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, &clock()).await;
    store.close().await;
    let refused = store
        .enqueue(deploy(None, "shop:1", &[&branch("gitops/prod", "main")]))
        .await;
    assert!(
        matches!(refused, Err(StoreError::GroupCommit(_))),
        "{refused:?}"
    );
}

trait NowMs {
    fn now_ms(&self) -> i64;
}

impl NowMs for ManualClock {
    fn now_ms(&self) -> i64 {
        tug_store::Clock::now(self).as_millisecond()
    }
}
