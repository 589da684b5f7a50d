//! One test suite for every [`Store`] backend: each test runs against SQLite (a real database
//! file in a temporary directory) and PostgreSQL (a real server started for the test, see
//! `tug_testkit::Postgres`). Time is a `ManualClock`, so lease expiry and retry delays are reached
//! by moving the clock, never by waiting.

// The harness helpers below are test code too, outside any `#[test]` function.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tempfile::TempDir;
use tug_store::{
    AuditLog, AuditQuery, AuditResult, BranchKey, Clock as _, JobFilter, JobState, Level,
    ManualClock, NewAuditRecord, NewJob, NewTask, PgConfig, PgStore, SqliteStore, Store,
    StoreError, TaskOutcome, TaskState,
};
use tug_testkit::Postgres;

const TTL: Duration = Duration::from_secs(30);

enum Backend {
    Sqlite(TempDir),
    // The server lives as long as the harness.
    Postgres(#[allow(dead_code)] Box<Postgres>, String),
}

struct Harness {
    backend: Backend,
    clock: Arc<ManualClock>,
    store: Arc<dyn Store>,
    audit: Arc<dyn AuditLog>,
}

impl Harness {
    async fn sqlite() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let clock = clock();
        let store = SqliteStore::open_with_clock(&dir.path().join("tug.db"), clock.clone())
            .await
            .unwrap();
        let store = Arc::new(store);
        Harness {
            backend: Backend::Sqlite(dir),
            clock,
            audit: store.clone(),
            store,
        }
    }

    async fn postgres() -> Harness {
        let server = Postgres::start().unwrap();
        let url = server.create_database("tug").unwrap();
        let clock = clock();
        let store = PgStore::connect_with_clock(&PgConfig::new(url.clone()), clock.clone())
            .await
            .unwrap();
        let store = Arc::new(store);
        Harness {
            backend: Backend::Postgres(Box::new(server), url),
            clock,
            audit: store.clone(),
            store,
        }
    }

    /// Drops the store (not closed: the database must hold everything acknowledged so far on
    /// its own) and opens it again.
    async fn reopen(self) -> Harness {
        let Harness {
            backend,
            clock,
            store,
            audit,
        } = self;
        drop((store, audit));
        let (store, audit): (Arc<dyn Store>, Arc<dyn AuditLog>) = match &backend {
            Backend::Sqlite(dir) => {
                let store = Arc::new(
                    SqliteStore::open_with_clock(&dir.path().join("tug.db"), clock.clone())
                        .await
                        .unwrap(),
                );
                (store.clone(), store)
            }
            Backend::Postgres(_, url) => {
                let store = Arc::new(
                    PgStore::connect_with_clock(&PgConfig::new(url.clone()), clock.clone())
                        .await
                        .unwrap(),
                );
                (store.clone(), store)
            }
        };
        Harness {
            backend,
            clock,
            store,
            audit,
        }
    }

    /// Rows in `table`, read over a connection of its own.
    async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        match &self.backend {
            Backend::Sqlite(dir) => {
                let pool = sqlx::SqlitePool::connect(&format!(
                    "sqlite://{}",
                    dir.path().join("tug.db").display()
                ))
                .await
                .unwrap();
                sqlx::query_scalar(&sql).fetch_one(&pool).await.unwrap()
            }
            Backend::Postgres(_, url) => {
                let pool = sqlx::PgPool::connect(url).await.unwrap();
                sqlx::query_scalar(&sql).fetch_one(&pool).await.unwrap()
            }
        }
    }

    async fn job_states(&self) -> Vec<JobState> {
        let jobs = self.store.list_jobs(&JobFilter::default()).await.unwrap();
        jobs.into_iter().map(|job| job.state).collect()
    }
}

fn clock() -> Arc<ManualClock> {
    let start = jiff::Timestamp::from_second(1_750_000_000).unwrap();
    Arc::new(ManualClock::new(start))
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
                payload: json!({ "set_image": image, "path": "apps/shop/kustomization.yaml" }),
            })
            .collect(),
    }
}

async fn enqueued_job_survives_reopening_the_file(h: Harness) {
    let main = branch("gitops/prod", "main");
    let staging = branch("gitops/staging", "main");
    let enqueued = h
        .store
        .enqueue(deploy(Some("build-41"), "shop:1.4.2", &[&main, &staging]))
        .await
        .unwrap();
    assert!(enqueued.created);
    let id = enqueued.job.id.clone();

    let h = h.reopen().await;
    let job = h
        .store
        .job(&id)
        .await
        .unwrap()
        .expect("job after reopening");
    assert_eq!(job.id, id);
    assert_eq!(job.idempotency_key.as_deref(), Some("build-41"));
    assert_eq!(job.kind, "deploy");
    assert_eq!(job.requested_by, "ci-token");
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(
        job.request,
        json!({ "image": "shop:1.4.2", "service": "shop" })
    );
    assert_eq!(job.created_at, h.clock.now_for_tests());
    let branches: Vec<_> = job.tasks.iter().map(|task| task.branch.clone()).collect();
    assert_eq!(branches, vec![main, staging]);
    for task in &job.tasks {
        assert_eq!(task.state, TaskState::Queued);
        assert_eq!(task.attempts, 0);
        assert_eq!(task.job_id, id);
        assert_eq!(task.payload["set_image"], "shop:1.4.2");
    }
    assert_eq!(job.tasks, enqueued.job.tasks);
    assert!(h.store.job("no-such-job").await.unwrap().is_none());
}

async fn same_idempotency_key_returns_the_existing_job(h: Harness) {
    let main = branch("gitops/prod", "main");
    let first = h
        .store
        .enqueue(deploy(Some("build-7"), "shop:1.0.0", &[&main]))
        .await
        .unwrap();
    let again = h
        .store
        .enqueue(deploy(
            Some("build-7"),
            "shop:2.0.0",
            &[&main, &branch("other", "x")],
        ))
        .await
        .unwrap();
    assert!(first.created);
    assert!(!again.created);
    assert_eq!(again.job.id, first.job.id);
    assert_eq!(again.job.request["image"], "shop:1.0.0");
    assert_eq!(h.count("jobs").await, 1);
    assert_eq!(h.count("tasks").await, 1);

    // Without a key every request is a new job.
    let a = h
        .store
        .enqueue(deploy(None, "shop:3", &[&main]))
        .await
        .unwrap();
    let b = h
        .store
        .enqueue(deploy(None, "shop:3", &[&main]))
        .await
        .unwrap();
    assert!(a.created && b.created);
    assert_ne!(a.job.id, b.job.id);
    assert_eq!(h.count("jobs").await, 3);
}

async fn enqueue_rejects_jobs_without_tasks_or_with_a_branch_twice(h: Harness) {
    let empty = h.store.enqueue(deploy(None, "shop:1", &[])).await;
    assert!(matches!(empty, Err(StoreError::Invalid(_))), "{empty:?}");
    let main = branch("gitops/prod", "main");
    let twice = h
        .store
        .enqueue(deploy(None, "shop:1", &[&main, &main]))
        .await;
    let Err(StoreError::Invalid(message)) = twice else {
        panic!("expected Invalid, got {twice:?}");
    };
    assert!(message.contains("gitops/prod"), "{message}");
    assert_eq!(h.count("jobs").await, 0);
}

async fn claim_takes_a_branch_oldest_first_up_to_max(h: Harness) {
    let main = branch("gitops/prod", "main");
    let other = branch("gitops/prod", "release");
    let mut ids = Vec::new();
    for n in 0..5 {
        let job = h
            .store
            .enqueue(deploy(None, &format!("shop:{n}"), &[&main]))
            .await
            .unwrap()
            .job;
        ids.push(job.tasks[0].id);
        h.store
            .enqueue(deploy(None, "web:1", &[&other]))
            .await
            .unwrap();
    }
    assert!(h.store.lock_branch(&main, "writer-a", TTL).await.unwrap());

    let first = h.store.claim(&main, "writer-a", 2).await.unwrap();
    assert_eq!(first.iter().map(|t| t.id).collect::<Vec<_>>(), ids[..2]);
    for task in &first {
        assert_eq!(task.state, TaskState::Running);
        assert_eq!(task.attempts, 1);
        assert_eq!(task.claimed_by.as_deref(), Some("writer-a"));
        assert_eq!(task.branch, main);
    }
    // Its own running tasks are not handed out again.
    let rest = h.store.claim(&main, "writer-a", 10).await.unwrap();
    assert_eq!(rest.iter().map(|t| t.id).collect::<Vec<_>>(), ids[2..]);
    assert!(
        h.store
            .claim(&main, "writer-a", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        h.store
            .claim(&main, "writer-a", 0)
            .await
            .unwrap()
            .is_empty()
    );

    let job = h.store.job(&first[0].job_id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Running);
    assert_eq!(
        h.store.queue_depths().await.unwrap(),
        vec![(main, 5), (other, 5)],
        "the other branch is untouched"
    );
}

async fn claim_requires_the_branch_lease(h: Harness) {
    let main = branch("gitops/prod", "main");
    h.store
        .enqueue(deploy(None, "shop:1", &[&main]))
        .await
        .unwrap();

    let unlocked = h.store.claim(&main, "writer-a", 5).await;
    assert!(
        matches!(unlocked, Err(StoreError::BranchNotLeased { .. })),
        "{unlocked:?}"
    );

    assert!(h.store.lock_branch(&main, "writer-b", TTL).await.unwrap());
    let foreign = h.store.claim(&main, "writer-a", 5).await;
    let Err(error) = foreign else {
        panic!("claimed under another writer's lease: {foreign:?}");
    };
    assert_eq!(
        error.to_string(),
        "writer-a does not hold the lease of branch main of gitops/prod"
    );

    h.clock.advance(TTL);
    let expired = h.store.claim(&main, "writer-b", 5).await;
    assert!(
        matches!(expired, Err(StoreError::BranchNotLeased { .. })),
        "{expired:?}"
    );
    assert_eq!(h.job_states().await, vec![JobState::Queued]);
}

async fn branch_lease_is_exclusive_renewable_and_expires(h: Harness) {
    let main = branch("gitops/prod", "main");
    let other = branch("gitops/prod", "release");

    assert!(h.store.lock_branch(&main, "writer-a", TTL).await.unwrap());
    assert!(!h.store.lock_branch(&main, "writer-b", TTL).await.unwrap());
    assert!(
        h.store.lock_branch(&other, "writer-b", TTL).await.unwrap(),
        "leases are per branch"
    );

    // Renewal at +20 s moves the expiry to +50 s.
    h.clock.advance(Duration::from_secs(20));
    assert!(h.store.lock_branch(&main, "writer-a", TTL).await.unwrap());
    h.clock.advance(Duration::from_secs(20));
    assert!(!h.store.lock_branch(&main, "writer-b", TTL).await.unwrap());
    h.clock.advance(Duration::from_secs(9));
    assert!(!h.store.lock_branch(&main, "writer-b", TTL).await.unwrap());

    // At +50 s the lease has expired: writer-b takes over and writer-a is out.
    h.clock.advance(Duration::from_secs(1));
    assert!(h.store.lock_branch(&main, "writer-b", TTL).await.unwrap());
    assert!(!h.store.lock_branch(&main, "writer-a", TTL).await.unwrap());

    // Only the holder can give it up.
    h.store.unlock_branch(&main, "writer-a").await.unwrap();
    assert!(!h.store.lock_branch(&main, "writer-a", TTL).await.unwrap());
    h.store.unlock_branch(&main, "writer-b").await.unwrap();
    assert!(h.store.lock_branch(&main, "writer-a", TTL).await.unwrap());
}

async fn tasks_of_a_dead_writer_are_claimed_again(h: Harness) {
    let main = branch("gitops/prod", "main");
    let job = h
        .store
        .enqueue(deploy(None, "shop:1", &[&main]))
        .await
        .unwrap()
        .job;

    assert!(h.store.lock_branch(&main, "writer-a", TTL).await.unwrap());
    let claimed = h.store.claim(&main, "writer-a", 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        h.store.runnable_branches().await.unwrap().is_empty(),
        "a task running under a live lease is not runnable"
    );

    // writer-a stops renewing.
    h.clock.advance(TTL);
    assert_eq!(
        h.store.runnable_branches().await.unwrap(),
        vec![main.clone()]
    );
    assert!(h.store.lock_branch(&main, "writer-b", TTL).await.unwrap());

    assert_eq!(
        h.store.runnable_branches().await.unwrap(),
        vec![main.clone()],
        "still runnable under writer-b's live lease: writer-b has not claimed it yet"
    );

    // writer-a wakes up after the takeover: its result no longer counts.
    let late = h
        .store
        .finish_task(claimed[0].id, TaskOutcome::Succeeded(json!({})))
        .await;
    assert!(
        matches!(late, Err(StoreError::LeaseLost(id)) if id == claimed[0].id),
        "{late:?}"
    );

    let again = h.store.claim(&main, "writer-b", 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, claimed[0].id);
    assert_eq!(again[0].attempts, 2);
    assert_eq!(again[0].claimed_by.as_deref(), Some("writer-b"));

    h.store
        .finish_task(
            again[0].id,
            TaskOutcome::Succeeded(json!({ "commit": "4b825dc6" })),
        )
        .await
        .unwrap();
    let job = h.store.job(&job.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.tasks[0].result, Some(json!({ "commit": "4b825dc6" })));
    assert!(h.store.runnable_branches().await.unwrap().is_empty());
    assert!(h.store.queue_depths().await.unwrap().is_empty());

    // Finishing twice is refused: the task is no longer running.
    let twice = h
        .store
        .finish_task(again[0].id, TaskOutcome::Failed("x".into()))
        .await;
    assert!(matches!(twice, Err(StoreError::LeaseLost(_))), "{twice:?}");
    let unknown = h
        .store
        .finish_task(9_999, TaskOutcome::Failed("x".into()))
        .await;
    assert!(
        matches!(unknown, Err(StoreError::UnknownTask(9_999))),
        "{unknown:?}"
    );
}

async fn tasks_left_running_by_an_unlock_are_runnable_again(h: Harness) {
    let main = branch("gitops/prod", "main");
    h.store
        .enqueue(deploy(None, "shop:1", &[&main]))
        .await
        .unwrap();
    assert!(h.store.lock_branch(&main, "writer-a", TTL).await.unwrap());
    let claimed = h.store.claim(&main, "writer-a", 1).await.unwrap();
    h.store.unlock_branch(&main, "writer-a").await.unwrap();

    assert_eq!(
        h.store.runnable_branches().await.unwrap(),
        vec![main.clone()]
    );
    let late = h.store.postpone_task(claimed[0].id, "x", TTL).await;
    assert!(matches!(late, Err(StoreError::LeaseLost(_))), "{late:?}");
    assert!(h.store.lock_branch(&main, "writer-b", TTL).await.unwrap());
    let again = h.store.claim(&main, "writer-b", 1).await.unwrap();
    assert_eq!(again[0].id, claimed[0].id);
    assert_eq!(again[0].attempts, 2);
}

async fn postponed_task_waits_for_its_retry_time(h: Harness) {
    let main = branch("gitops/prod", "main");
    let job = h
        .store
        .enqueue(deploy(None, "shop:1", &[&main]))
        .await
        .unwrap()
        .job;
    assert_eq!(
        h.store.runnable_branches().await.unwrap(),
        vec![main.clone()]
    );

    assert!(h.store.lock_branch(&main, "writer-a", TTL).await.unwrap());
    let task = h.store.claim(&main, "writer-a", 1).await.unwrap().remove(0);
    h.store
        .postpone_task(
            task.id,
            "git push: could not resolve host",
            Duration::from_secs(60),
        )
        .await
        .unwrap();

    let pending = h.store.job(&job.id).await.unwrap().unwrap();
    assert_eq!(pending.state, JobState::Pending);
    let stored = &pending.tasks[0];
    assert_eq!(stored.state, TaskState::Pending);
    assert_eq!(
        stored.last_error.as_deref(),
        Some("git push: could not resolve host")
    );
    assert_eq!(
        stored.retry_at.map(|at| at.as_millisecond()),
        Some(h.clock.now_for_tests().as_millisecond() + 60_000)
    );
    assert!(h.store.runnable_branches().await.unwrap().is_empty());
    assert!(
        h.store
            .claim(&main, "writer-a", 1)
            .await
            .unwrap()
            .is_empty()
    );

    h.clock.advance(Duration::from_secs(59));
    assert!(h.store.lock_branch(&main, "writer-a", TTL).await.unwrap());
    assert!(h.store.runnable_branches().await.unwrap().is_empty());
    assert!(
        h.store
            .claim(&main, "writer-a", 1)
            .await
            .unwrap()
            .is_empty()
    );

    h.clock.advance(Duration::from_secs(1));
    assert_eq!(
        h.store.runnable_branches().await.unwrap(),
        vec![main.clone()]
    );
    let retried = h.store.claim(&main, "writer-a", 1).await.unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].attempts, 2);
    assert_eq!(retried[0].retry_at, None);
    assert_eq!(
        h.store.job(&job.id).await.unwrap().unwrap().state,
        JobState::Running
    );

    h.store
        .finish_task(
            retried[0].id,
            TaskOutcome::Succeeded(json!({ "up_to_date": true })),
        )
        .await
        .unwrap();
    let done = h.store.job(&job.id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(
        done.tasks[0].last_error.as_deref(),
        Some("git push: could not resolve host"),
        "the transient error stays on record"
    );
}

async fn pending_task_holds_back_later_tasks_of_its_branch_only(h: Harness) {
    let main = branch("gitops/prod", "main");
    let other = branch("gitops/staging", "main");
    h.store
        .enqueue(deploy(None, "shop:1", &[&main]))
        .await
        .unwrap();
    assert!(h.store.lock_branch(&main, "writer-a", TTL).await.unwrap());
    let first = h.store.claim(&main, "writer-a", 1).await.unwrap().remove(0);
    h.store
        .postpone_task(first.id, "remote unreachable", Duration::from_secs(60))
        .await
        .unwrap();

    // shop:2 arrives while shop:1 waits: it must not land first and be overwritten later.
    let second = h
        .store
        .enqueue(deploy(None, "shop:2", &[&main]))
        .await
        .unwrap()
        .job;
    h.store
        .enqueue(deploy(None, "shop:2", &[&other]))
        .await
        .unwrap();
    assert_eq!(h.store.runnable_branches().await.unwrap(), vec![other]);
    assert!(
        h.store
            .claim(&main, "writer-a", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        h.store.job(&second.id).await.unwrap().unwrap().state,
        JobState::Queued
    );

    h.clock.advance(Duration::from_secs(60));
    assert!(h.store.lock_branch(&main, "writer-a", TTL).await.unwrap());
    let batch = h.store.claim(&main, "writer-a", 10).await.unwrap();
    assert_eq!(
        batch.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![first.id, second.tasks[0].id]
    );
}

async fn job_state_is_derived_from_its_tasks(h: Harness) {
    let prod = branch("gitops/prod", "main");
    let staging = branch("gitops/staging", "main");
    let job = h
        .store
        .enqueue(deploy(None, "shop:1", &[&prod, &staging]))
        .await
        .unwrap()
        .job;
    let state = async |h: &Harness| h.store.job(&job.id).await.unwrap().unwrap().state;
    assert_eq!(state(&h).await, JobState::Queued);

    assert!(h.store.lock_branch(&prod, "writer-a", TTL).await.unwrap());
    assert!(
        h.store
            .lock_branch(&staging, "writer-b", TTL)
            .await
            .unwrap()
    );
    let on_prod = h.store.claim(&prod, "writer-a", 1).await.unwrap().remove(0);
    assert_eq!(state(&h).await, JobState::Running);

    h.store
        .finish_task(
            on_prod.id,
            TaskOutcome::Succeeded(json!({ "commit": "aaa" })),
        )
        .await
        .unwrap();
    assert_eq!(
        state(&h).await,
        JobState::Running,
        "staging still waits for its writer"
    );

    let on_staging = h
        .store
        .claim(&staging, "writer-b", 1)
        .await
        .unwrap()
        .remove(0);
    h.store
        .postpone_task(on_staging.id, "remote unreachable", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(state(&h).await, JobState::Pending);

    h.clock.advance(Duration::from_secs(5));
    let on_staging = h
        .store
        .claim(&staging, "writer-b", 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(state(&h).await, JobState::Running);
    h.store
        .finish_task(
            on_staging.id,
            TaskOutcome::Failed("path apps/shop vanished".into()),
        )
        .await
        .unwrap();
    let failed = h.store.job(&job.id).await.unwrap().unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.tasks[1].state, TaskState::Failed);
    assert_eq!(
        failed.tasks[1].last_error.as_deref(),
        Some("path apps/shop vanished")
    );
    assert_eq!(
        failed.tasks[1].result,
        Some(json!({ "error": "path apps/shop vanished" }))
    );
    assert_eq!(failed.updated_at, h.clock.now_for_tests());

    let both = h
        .store
        .enqueue(deploy(None, "shop:2", &[&prod, &staging]))
        .await
        .unwrap()
        .job;
    for (branch, owner) in [(&prod, "writer-a"), (&staging, "writer-b")] {
        let task = h.store.claim(branch, owner, 1).await.unwrap().remove(0);
        assert_eq!(task.job_id, both.id);
        h.store
            .finish_task(task.id, TaskOutcome::Succeeded(json!({ "commit": "bbb" })))
            .await
            .unwrap();
    }
    assert_eq!(
        h.store.job(&both.id).await.unwrap().unwrap().state,
        JobState::Succeeded
    );
}

async fn events_are_numbered_densely_per_job(h: Harness) {
    let main = branch("gitops/prod", "main");
    let a = h
        .store
        .enqueue(deploy(None, "shop:1", &[&main]))
        .await
        .unwrap()
        .job;
    let b = h
        .store
        .enqueue(deploy(None, "shop:2", &[&main]))
        .await
        .unwrap()
        .job;

    for n in 1..=4 {
        let event = h
            .store
            .append_event(&a.id, Some(a.tasks[0].id), Level::Info, &format!("a{n}"))
            .await
            .unwrap();
        assert_eq!(event.seq, n);
        if n % 2 == 0 {
            let event = h
                .store
                .append_event(&b.id, None, Level::Warn, "b")
                .await
                .unwrap();
            assert_eq!(event.seq, n / 2);
        }
    }
    h.clock.advance(Duration::from_secs(1));
    let last = h
        .store
        .append_event(&a.id, None, Level::Error, "a5")
        .await
        .unwrap();
    assert_eq!(last.seq, 5);
    assert_eq!(last.at, h.clock.now_for_tests());

    let all = h.store.events(&a.id, 0).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(all[0].task_id, Some(a.tasks[0].id));
    assert_eq!(all[4].task_id, None);
    assert_eq!(all[4].level, Level::Error);
    let after = h.store.events(&a.id, 3).await.unwrap();
    assert_eq!(
        after.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
        vec!["a4", "a5"]
    );
    assert!(h.store.events(&a.id, 5).await.unwrap().is_empty());
    assert_eq!(h.store.events(&b.id, 0).await.unwrap().len(), 2);
    assert!(h.store.events("no-such-job", 0).await.unwrap().is_empty());

    let unknown = h
        .store
        .append_event("no-such-job", None, Level::Info, "x")
        .await;
    assert!(matches!(unknown, Err(StoreError::UnknownJob(ref id)) if id == "no-such-job"));
    let foreign = h
        .store
        .append_event(&a.id, Some(b.tasks[0].id), Level::Info, "x")
        .await;
    assert!(
        matches!(foreign, Err(StoreError::Invalid(_))),
        "{foreign:?}"
    );
    // A refused event leaves no gap.
    let next = h
        .store
        .append_event(&a.id, None, Level::Info, "a6")
        .await
        .unwrap();
    assert_eq!(next.seq, 6);
}

async fn list_jobs_filters_newest_first(h: Harness) {
    let prod = branch("gitops/prod", "main");
    let staging = branch("gitops/staging", "main");
    let mut created = Vec::new();
    for (n, branches) in [
        vec![&prod],
        vec![&staging],
        vec![&prod, &staging],
        vec![&staging],
    ]
    .into_iter()
    .enumerate()
    {
        h.clock.advance(Duration::from_secs(1));
        let job = h
            .store
            .enqueue(deploy(None, &format!("shop:{n}"), &branches))
            .await
            .unwrap()
            .job;
        created.push(job.id);
    }
    // The oldest prod job succeeds.
    assert!(h.store.lock_branch(&prod, "writer-a", TTL).await.unwrap());
    let task = h.store.claim(&prod, "writer-a", 1).await.unwrap().remove(0);
    assert_eq!(task.job_id, created[0]);
    h.store
        .finish_task(task.id, TaskOutcome::Succeeded(json!({})))
        .await
        .unwrap();

    let ids = |jobs: Vec<tug_store::Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    let all = h.store.list_jobs(&JobFilter::default()).await.unwrap();
    assert_eq!(all[1].tasks.len(), 2, "jobs come with their tasks");
    assert_eq!(
        ids(all),
        vec![
            created[3].clone(),
            created[2].clone(),
            created[1].clone(),
            created[0].clone()
        ]
    );

    let prod_jobs = JobFilter {
        repository: Some("gitops/prod".into()),
        ..JobFilter::default()
    };
    assert_eq!(
        ids(h.store.list_jobs(&prod_jobs).await.unwrap()),
        vec![created[2].clone(), created[0].clone()]
    );
    let queued_prod = JobFilter {
        state: Some(JobState::Queued),
        ..prod_jobs.clone()
    };
    assert_eq!(
        ids(h.store.list_jobs(&queued_prod).await.unwrap()),
        vec![created[2].clone()]
    );
    let succeeded = JobFilter {
        state: Some(JobState::Succeeded),
        ..JobFilter::default()
    };
    assert_eq!(
        ids(h.store.list_jobs(&succeeded).await.unwrap()),
        vec![created[0].clone()]
    );
    let newest_two = JobFilter {
        limit: Some(2),
        ..JobFilter::default()
    };
    assert_eq!(
        ids(h.store.list_jobs(&newest_two).await.unwrap()),
        vec![created[3].clone(), created[2].clone()]
    );
    let nowhere = JobFilter {
        repository: Some("gitops/none".into()),
        ..JobFilter::default()
    };
    assert!(h.store.list_jobs(&nowhere).await.unwrap().is_empty());
}

async fn queue_depths_count_unfinished_tasks_per_branch(h: Harness) {
    let prod = branch("gitops/prod", "main");
    let staging = branch("gitops/staging", "main");
    assert!(h.store.queue_depths().await.unwrap().is_empty());
    for _ in 0..3 {
        h.store
            .enqueue(deploy(None, "shop:1", &[&prod, &staging]))
            .await
            .unwrap();
    }
    h.store
        .enqueue(deploy(None, "shop:1", &[&staging]))
        .await
        .unwrap();
    assert_eq!(
        h.store.queue_depths().await.unwrap(),
        vec![(prod.clone(), 3), (staging.clone(), 4)]
    );

    // Running and pending still count; finished does not.
    assert!(h.store.lock_branch(&prod, "writer-a", TTL).await.unwrap());
    let claimed = h.store.claim(&prod, "writer-a", 3).await.unwrap();
    h.store
        .finish_task(claimed[0].id, TaskOutcome::Succeeded(json!({})))
        .await
        .unwrap();
    h.store
        .postpone_task(claimed[1].id, "remote unreachable", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        h.store.queue_depths().await.unwrap(),
        vec![(prod, 2), (staging, 4)]
    );
}

async fn concurrent_enqueues_are_all_stored(h: Harness) {
    let store = h.store.clone();
    let per_task = 10;
    let mut handles = Vec::new();
    for writer in 0..16 {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..per_task {
                let env = branch("gitops/prod", &format!("env-{}", n % 3));
                let job = store
                    .enqueue(deploy(Some(&format!("w{writer}-{n}")), "shop:1", &[&env]))
                    .await?;
                ids.push(job.job.id);
            }
            Ok::<_, StoreError>(ids)
        }));
    }
    let mut ids = Vec::new();
    for handle in handles {
        ids.extend(handle.await.unwrap().unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 16 * per_task);
    let depths: u64 = store
        .queue_depths()
        .await
        .unwrap()
        .iter()
        .map(|(_, d)| d)
        .sum();
    assert_eq!(depths, 16 * per_task as u64);

    // 16 clients retrying the same request at once: one job, one creation.
    let mut handles = Vec::new();
    for _ in 0..16 {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            store
                .enqueue(deploy(
                    Some("retried"),
                    "shop:2",
                    &[&branch("gitops/prod", "main")],
                ))
                .await
        }));
    }
    let mut created = 0;
    let mut same = std::collections::BTreeSet::new();
    for handle in handles {
        let enqueued = handle.await.unwrap().unwrap();
        created += usize::from(enqueued.created);
        same.insert(enqueued.job.id);
    }
    assert_eq!(created, 1);
    assert_eq!(same.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enqueue_throughput_with_full_sync() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("tug.db")).await.unwrap());
    let main = branch("gitops/prod", "main");

    let sequential = 200;
    let started = Instant::now();
    for n in 0..sequential {
        store
            .enqueue(deploy(Some(&format!("seq-{n}")), "shop:1", &[&main]))
            .await
            .unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "sequential enqueue, synchronous=FULL: {sequential} in {elapsed:?} = {:.0}/s",
        f64::from(sequential) / elapsed.as_secs_f64()
    );

    let (clients, each) = (16, 25);
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let store = Arc::clone(&store);
            let main = main.clone();
            tokio::spawn(async move {
                for n in 0..each {
                    store
                        .enqueue(deploy(Some(&format!("c{c}-{n}")), "shop:1", &[&main]))
                        .await?;
                }
                Ok::<_, StoreError>(())
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap().unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "concurrent enqueue ({clients} clients), synchronous=FULL: {} in {elapsed:?} = {:.0}/s",
        clients * each,
        f64::from(clients * each) / elapsed.as_secs_f64()
    );
    let everything = JobFilter {
        limit: Some(10_000),
        ..JobFilter::default()
    };
    let stored = store.list_jobs(&everything).await.unwrap();
    assert_eq!(stored.len(), (sequential + clients * each) as usize);
}

trait NowForTests {
    fn now_for_tests(&self) -> jiff::Timestamp;
}

impl NowForTests for ManualClock {
    /// The stored precision: milliseconds.
    fn now_for_tests(&self) -> jiff::Timestamp {
        let now = tug_store::Clock::now(self);
        jiff::Timestamp::from_millisecond(now.as_millisecond()).unwrap()
    }
}

#[tokio::test]
async fn database_runs_in_wal_mode_with_full_sync() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("tug.db")).await.unwrap();
    for pool in [store.pool(), store.read_pool()] {
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(journal, "wal");
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(synchronous, 2, "FULL");
        let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(foreign_keys, 1);
        let busy_timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(pool)
            .await
            .unwrap();
        assert!(busy_timeout >= 1_000, "busy timeout {busy_timeout} ms");
    }
    assert!(dir.path().join("tug.db-wal").exists());
}

/// The fence: a writer whose lease lapsed and was taken over records nothing — not even when it
/// takes the lease back later (a new epoch), while what it claimed under the old one is still
/// in its hands.
async fn a_writer_that_lost_its_lease_records_nothing_even_after_retaking_it(h: Harness) {
    let main = branch("gitops/prod", "main");
    h.store
        .enqueue(deploy(None, "shop:1", &[&main]))
        .await
        .unwrap();
    assert!(h.store.lock_branch(&main, "a", TTL).await.unwrap());
    let claimed = h.store.claim(&main, "a", 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    // A's lease lapses while it pushes; B takes over and gives up again.
    h.clock.advance(TTL + Duration::from_secs(1));
    assert!(h.store.lock_branch(&main, "b", TTL).await.unwrap());
    h.store.unlock_branch(&main, "b").await.unwrap();
    // A comes back and takes the lease again: its old claim is fenced off all the same.
    assert!(h.store.lock_branch(&main, "a", TTL).await.unwrap());
    let refused = h
        .store
        .finish_task(
            claimed[0].id,
            TaskOutcome::Succeeded(json!({"commit": "abc"})),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::LeaseLost(id)) if id == claimed[0].id),
        "{refused:?}"
    );
    let refused = h
        .store
        .postpone_task(claimed[0].id, "late", Duration::from_secs(1))
        .await;
    assert!(
        matches!(refused, Err(StoreError::LeaseLost(_))),
        "{refused:?}"
    );
    // Under its new epoch A claims the task again and may record it.
    let again = h.store.claim(&main, "a", 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
    h.store
        .finish_task(
            again[0].id,
            TaskOutcome::Succeeded(json!({"commit": "abc"})),
        )
        .await
        .unwrap();
    assert_eq!(h.job_states().await, vec![JobState::Succeeded]);
}

/// A renewal while the lease is live keeps the epoch: a long push renewed by its heartbeat can
/// record its outcome.
async fn renewing_a_live_lease_keeps_what_it_claimed(h: Harness) {
    let main = branch("gitops/prod", "main");
    h.store
        .enqueue(deploy(None, "shop:1", &[&main]))
        .await
        .unwrap();
    assert!(h.store.lock_branch(&main, "a", TTL).await.unwrap());
    let claimed = h.store.claim(&main, "a", 10).await.unwrap();
    for _ in 0..5 {
        h.clock.advance(TTL / 2);
        assert!(h.store.lock_branch(&main, "a", TTL).await.unwrap());
        assert!(!h.store.lock_branch(&main, "b", TTL).await.unwrap());
    }
    h.store
        .finish_task(claimed[0].id, TaskOutcome::Succeeded(json!({})))
        .await
        .unwrap();
}

/// However many replicas ask, one sends a finished job's notifications.
async fn a_finished_job_is_claimed_for_notification_once(h: Harness) {
    let main = branch("gitops/prod", "main");
    let job = h
        .store
        .enqueue(deploy(None, "shop:1", &[&main]))
        .await
        .unwrap()
        .job;
    assert!(
        !h.store.claim_notification(&job.id, "job").await.unwrap(),
        "not finished yet"
    );
    assert!(h.store.lock_branch(&main, "a", TTL).await.unwrap());
    let claimed = h.store.claim(&main, "a", 10).await.unwrap();
    h.store
        .finish_task(claimed[0].id, TaskOutcome::Failed("refused".to_owned()))
        .await
        .unwrap();
    let askers: Vec<_> = (0..8)
        .map(|_| {
            let store = h.store.clone();
            let id = job.id.clone();
            tokio::spawn(async move { store.claim_notification(&id, "job").await.unwrap() })
        })
        .collect();
    let mut granted = 0;
    for asker in askers {
        granted += usize::from(asker.await.unwrap());
    }
    assert_eq!(granted, 1);
    // Another channel is claimed on its own.
    assert!(
        h.store
            .claim_notification(&job.id, "release")
            .await
            .unwrap()
    );
    assert!(
        !h.store
            .claim_notification(&job.id, "release")
            .await
            .unwrap()
    );
    assert!(
        !h.store
            .claim_notification("no-such-job", "job")
            .await
            .unwrap()
    );
    h.store.ping().await.unwrap();
}

fn audit_record(actor: &str, action: &str, service: &str, env: &str) -> NewAuditRecord {
    NewAuditRecord {
        actor: actor.to_owned(),
        actor_detail: None,
        action: action.to_owned(),
        service: Some(service.to_owned()),
        environment: Some(env.to_owned()),
        repository: Some("platform".to_owned()),
        branch: Some(env.to_owned()),
        request_id: Some(format!("req-{actor}-{action}")),
        result: AuditResult::Accepted,
        code: None,
        message: format!("{action} by {actor}"),
    }
}

fn actions(records: &[tug_store::AuditRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| format!("{} {}", r.record.actor, r.record.action))
        .collect()
}

async fn audit_records_keep_every_field_and_the_store_clock(h: Harness) {
    let start = h.clock.now();
    let mut refused = audit_record("ci", "deploy", "api", "prod");
    refused.result = AuditResult::Refused;
    refused.code = Some("permission_denied".to_owned());
    refused.actor_detail = Some(json!({"issuer": "https://idp", "subject": "repo:x", "rule": 2}));
    refused.repository = None;
    let stored = h.audit.append_audit(refused.clone()).await.unwrap();
    assert_eq!(stored.at, start);
    assert_eq!(stored.record, refused);
    h.clock.advance(Duration::from_millis(1500));
    let later = h
        .audit
        .append_audit(audit_record("ci", "release", "api", "dev"))
        .await
        .unwrap();
    assert!(
        later.id > stored.id,
        "ids grow: {} then {}",
        stored.id,
        later.id
    );
    assert_eq!(later.at.as_millisecond(), start.as_millisecond() + 1500);

    // Read back after reopening: what was acknowledged is stored, field by field.
    let h = h.reopen().await;
    let listed = h.audit.audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(listed, vec![later, stored]);
}

async fn audit_lists_filter_and_page_newest_first(h: Harness) {
    for (actor, action, service, env) in [
        ("ci", "deploy", "api", "dev"),
        ("ci", "artifact.push", "api", "dev"),
        ("alice", "release", "api", "prod"),
        ("ci", "deploy", "web", "dev"),
        ("alice", "rollback", "api", "prod"),
    ] {
        h.audit
            .append_audit(audit_record(actor, action, service, env))
            .await
            .unwrap();
        h.clock.advance(Duration::from_secs(10));
    }
    let query = |f: &dyn Fn(&mut AuditQuery)| {
        let mut q = AuditQuery::default();
        f(&mut q);
        q
    };
    let list = |q: AuditQuery| {
        let audit = h.audit.clone();
        async move { actions(&audit.audit(&q).await.unwrap()) }
    };
    assert_eq!(
        list(AuditQuery::default()).await,
        [
            "alice rollback",
            "ci deploy",
            "alice release",
            "ci artifact.push",
            "ci deploy"
        ]
    );
    assert_eq!(
        list(query(&|q| q.actor = Some("alice".into()))).await,
        ["alice rollback", "alice release"]
    );
    assert_eq!(
        list(query(&|q| q.action = Some("deploy".into()))).await,
        ["ci deploy", "ci deploy"]
    );
    assert_eq!(
        list(query(&|q| {
            q.service = Some("api".into());
            q.environment = Some("dev".into());
        }))
        .await,
        ["ci artifact.push", "ci deploy"]
    );
    // since is inclusive, until exclusive: records 2 and 3 (at start+10 s and start+20 s).
    let start = h.clock.now().as_millisecond() - 50_000;
    let t = |ms: i64| jiff::Timestamp::from_millisecond(start + ms).unwrap();
    assert_eq!(
        list(query(&|q| {
            q.since = Some(t(10_000));
            q.until = Some(t(30_000));
        }))
        .await,
        ["alice release", "ci artifact.push"]
    );
    assert_eq!(
        list(query(&|q| q.actor = Some("nobody".into()))).await,
        Vec::<String>::new()
    );

    // Paging: two at a time, each page continuing below the last id of the previous one.
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = h
            .audit
            .audit(&AuditQuery {
                limit: Some(2),
                before,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        pages.push(actions(&page));
    }
    assert_eq!(
        pages,
        [
            vec!["alice rollback", "ci deploy"],
            vec!["alice release", "ci artifact.push"],
            vec!["ci deploy"],
        ]
    );
    // Paging combines with filters.
    let first = h
        .audit
        .audit(&query(&|q| {
            q.actor = Some("ci".into());
            q.limit = Some(1);
        }))
        .await
        .unwrap();
    let rest = h
        .audit
        .audit(&query(&|q| {
            q.actor = Some("ci".into());
            q.before = Some(first[0].id);
        }))
        .await
        .unwrap();
    assert_eq!(actions(&first), ["ci deploy"]);
    assert_eq!(actions(&rest), ["ci artifact.push", "ci deploy"]);
}

async fn jobs_read_with_their_events_in_one_go(h: Harness) {
    let (prod, staging) = (
        branch("gitops/prod", "main"),
        branch("gitops/staging", "main"),
    );
    let a = h
        .store
        .enqueue(deploy(None, "shop:1", &[&prod, &staging]))
        .await
        .unwrap()
        .job;
    let b = h
        .store
        .enqueue(deploy(None, "shop:2", &[&prod]))
        .await
        .unwrap()
        .job;
    let (job, events) = h.store.job_with_events(&a.id, 0).await.unwrap().unwrap();
    assert_eq!(job, h.store.job(&a.id).await.unwrap().unwrap());
    assert!(events.is_empty());

    for (task, message) in [(Some(a.tasks[1].id), "one\t\"quoted\" ü"), (None, "two")] {
        h.store
            .append_event(&a.id, task, Level::Warn, message)
            .await
            .unwrap();
    }
    h.store
        .append_event(&b.id, None, Level::Info, "other job")
        .await
        .unwrap();
    let (job, events) = h.store.job_with_events(&a.id, 0).await.unwrap().unwrap();
    assert_eq!(
        job.tasks.len(),
        2,
        "every task, however many rows the read has"
    );
    assert_eq!(events, h.store.events(&a.id, 0).await.unwrap());
    assert_eq!(events[0].message, "one\t\"quoted\" ü");
    assert_eq!(events[0].task_id, Some(a.tasks[1].id));
    assert_eq!(events[1].level, Level::Warn);
    let (_, after) = h.store.job_with_events(&a.id, 1).await.unwrap().unwrap();
    assert_eq!(after, h.store.events(&a.id, 1).await.unwrap());
    assert_eq!(after.len(), 1);
    assert!(
        h.store
            .job_with_events("no-such-job", 0)
            .await
            .unwrap()
            .is_none()
    );

    assert!(h.store.lock_branch(&prod, "writer", TTL).await.unwrap());
    let task = h.store.claim(&prod, "writer", 1).await.unwrap().remove(0);
    assert_eq!(task.job_id, a.id);
    h.store
        .finish_task(task.id, TaskOutcome::Failed("no".to_owned()))
        .await
        .unwrap();
    assert_eq!(
        h.store.job(&a.id).await.unwrap().unwrap().state,
        JobState::Running
    );

    let mut both = h
        .store
        .jobs_with_events(&[b.id.clone(), "no-such-job".to_owned(), a.id.clone()])
        .await
        .unwrap();
    both.sort_by(|x, y| x.0.id.cmp(&y.0.id));
    let mut expected = Vec::new();
    for id in [&a.id, &b.id] {
        expected.push(h.store.job_with_events(id, 0).await.unwrap().unwrap());
    }
    expected.sort_by(|x, y| x.0.id.cmp(&y.0.id));
    assert_eq!(both, expected);
    assert!(h.store.jobs_with_events(&[]).await.unwrap().is_empty());
}

async fn waiting_counts_what_a_claim_could_take_without_taking_it(h: Harness) {
    let (main, other) = (
        branch("gitops/prod", "main"),
        branch("gitops/prod", "other"),
    );
    assert_eq!(h.store.waiting(&main).await.unwrap(), 0);
    for tag in ["shop:1", "shop:2", "shop:3"] {
        h.store.enqueue(deploy(None, tag, &[&main])).await.unwrap();
    }
    h.store
        .enqueue(deploy(None, "shop:4", &[&other]))
        .await
        .unwrap();
    assert_eq!(h.store.waiting(&main).await.unwrap(), 3);
    assert_eq!(
        h.store.waiting(&main).await.unwrap(),
        3,
        "counting takes nothing"
    );
    assert!(h.store.lock_branch(&main, "writer", TTL).await.unwrap());
    let claimed = h.store.claim(&main, "writer", 2).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert_eq!(
        h.store.waiting(&main).await.unwrap(),
        1,
        "running tasks are not waiting"
    );
    // A postponed task waits again once its retry time has come.
    h.store
        .postpone_task(claimed[0].id, "remote down", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(h.store.waiting(&main).await.unwrap(), 1);
    h.clock.advance(Duration::from_secs(31));
    assert_eq!(h.store.waiting(&main).await.unwrap(), 2);
    assert_eq!(h.store.waiting(&other).await.unwrap(), 1);
}

/// PostgreSQL's enqueues share a statement, like SQLite's share a transaction: jobs that
/// arrive together commit together (rows of one transaction share its `xmin`), in arrival
/// order, and a job the database refuses fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_enqueues_arriving_together_share_a_commit_and_fail_alone() {
    let h = Harness::postgres().await;
    let Backend::Postgres(_, url) = &h.backend else {
        unreachable!()
    };
    let main = branch("gitops/prod", "main");
    let together = |prefix: &'static str, n: usize| {
        let store = h.store.clone();
        let mut job = deploy(Some(&format!("{prefix}-{n}")), "shop:1", &[&main]);
        if prefix == "refused" && n == 10 {
            // PostgreSQL's text cannot hold NUL: the statement carrying this job fails.
            job.requested_by = "ci\0token".to_owned();
        }
        tokio::spawn(async move { store.enqueue(job).await })
    };

    let clients = 64;
    let handles: Vec<_> = (0..clients).map(|n| together("together", n)).collect();
    let mut stored = Vec::new();
    for handle in handles {
        let enqueued = handle.await.unwrap().unwrap();
        assert!(enqueued.created);
        stored.push(enqueued.job);
    }
    // Task ids follow job ids (UUIDv7, handed out in arrival order): the branch runs its
    // tasks in the order the jobs came.
    stored.sort_by(|a, b| a.id.cmp(&b.id));
    let task_ids: Vec<_> = stored.iter().map(|job| job.tasks[0].id).collect();
    let mut sorted = task_ids.clone();
    sorted.sort();
    assert_eq!(task_ids, sorted);
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let transactions: i64 = sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        transactions <= clients as i64 / 4,
        "{clients} jobs took {transactions} commits"
    );

    let handles: Vec<_> = (0..16).map(|n| together("refused", n)).collect();
    for (n, handle) in handles.into_iter().enumerate() {
        match handle.await.unwrap() {
            Ok(enqueued) => assert!(n != 10 && enqueued.created, "job {n}"),
            Err(error) => {
                assert_eq!(n, 10, "job {n} failed: {error}");
                assert!(error.to_string().contains("0x00"), "{error}");
            }
        }
    }
    assert_eq!(h.count("jobs").await, clients as i64 + 15);
}

/// Runs each test of the suite once per backend: `sqlite::name` and `postgres::name`.
macro_rules! every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Harness::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Harness::postgres().await).await;
                }
            )*
        }
    };
}

every_backend!(
    enqueued_job_survives_reopening_the_file,
    same_idempotency_key_returns_the_existing_job,
    enqueue_rejects_jobs_without_tasks_or_with_a_branch_twice,
    claim_takes_a_branch_oldest_first_up_to_max,
    claim_requires_the_branch_lease,
    branch_lease_is_exclusive_renewable_and_expires,
    tasks_of_a_dead_writer_are_claimed_again,
    tasks_left_running_by_an_unlock_are_runnable_again,
    postponed_task_waits_for_its_retry_time,
    pending_task_holds_back_later_tasks_of_its_branch_only,
    job_state_is_derived_from_its_tasks,
    events_are_numbered_densely_per_job,
    jobs_read_with_their_events_in_one_go,
    waiting_counts_what_a_claim_could_take_without_taking_it,
    list_jobs_filters_newest_first,
    queue_depths_count_unfinished_tasks_per_branch,
    concurrent_enqueues_are_all_stored,
    a_writer_that_lost_its_lease_records_nothing_even_after_retaking_it,
    renewing_a_live_lease_keeps_what_it_claimed,
    a_finished_job_is_claimed_for_notification_once,
    audit_records_keep_every_field_and_the_store_clock,
    audit_lists_filter_and_page_newest_first,
);
