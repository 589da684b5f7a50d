//! Throughput of the SQLite store with `synchronous=FULL` on a real file. The rates are printed,
//! not asserted: they depend on how fast the disk syncs. For real numbers run
//! `cargo test -p tug-store --release --test throughput -- --nocapture`. What is asserted is that
//! every acknowledged write is stored.

// The harness helpers below are test code too, outside any `#[test]` function.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Notify;
use tug_store::{
    BranchKey, JobFilter, JobState, Level, NewEvent, NewJob, NewTask, SqliteStore, Store,
    StoreError, TaskOutcome,
};

fn branch(name: &str) -> BranchKey {
    BranchKey {
        repository: "gitops/prod".to_owned(),
        branch: name.to_owned(),
    }
}

fn deploy(key: String, branch: &BranchKey) -> NewJob {
    NewJob {
        idempotency_key: Some(key),
        kind: "deploy".to_owned(),
        requested_by: "ci-token".to_owned(),
        request: json!({ "service": "shop", "image": "registry.example/shop:1.4.2" }),
        tasks: vec![NewTask {
            branch: branch.clone(),
            payload: json!({ "set_image": "registry.example/shop:1.4.2",
                             "path": "apps/shop/kustomization.yaml" }),
        }],
    }
}

async fn stored_jobs(store: &SqliteStore) -> Vec<tug_store::Job> {
    let everything = JobFilter {
        limit: Some(100_000),
        ..JobFilter::default()
    };
    store.list_jobs(&everything).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueues_per_second_with_1_and_64_clients() {
    for (clients, each) in [(1_usize, 300_usize), (64, 50)] {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("tug.db")).await.unwrap());
        let started = Instant::now();
        let handles: Vec<_> = (0..clients)
            .map(|client| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let main = branch(&format!("env-{}", client % 8));
                    for n in 0..each {
                        let enqueued = store
                            .enqueue(deploy(format!("c{client}-{n}"), &main))
                            .await?;
                        assert!(enqueued.created);
                    }
                    Ok::<_, StoreError>(())
                })
            })
            .collect();
        for handle in handles {
            handle.await.unwrap().unwrap();
        }
        let elapsed = started.elapsed();
        let total = clients * each;
        println!(
            "enqueue, synchronous=FULL, {clients} client(s): {total} in {elapsed:.2?} = {:.0}/s",
            total as f64 / elapsed.as_secs_f64()
        );
        assert_eq!(stored_jobs(&store).await.len(), total);
    }
}

/// What the server does per deploy request: enqueue, two progress events, then the branch's
/// writer claims whatever is queued and finishes it all at once with one event per task (the
/// git push itself is left out: this measures the store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_requests_per_second_with_64_clients() {
    const CLIENTS: usize = 64;
    const EACH: usize = 40;
    const BRANCHES: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("tug.db")).await.unwrap());
    let queued: Arc<Vec<Notify>> = Arc::new((0..BRANCHES).map(|_| Notify::new()).collect());
    let started = Instant::now();

    let writers: Vec<_> = (0..BRANCHES)
        .map(|b| {
            let (store, queued) = (Arc::clone(&store), Arc::clone(&queued));
            tokio::spawn(async move {
                let main = branch(&format!("env-{b}"));
                let owner = format!("writer-{b}");
                let expected = CLIENTS / BRANCHES * EACH;
                let mut done = 0;
                let mut pushes = 0;
                assert!(
                    store
                        .lock_branch(&main, &owner, Duration::from_secs(600))
                        .await?
                );
                while done < expected {
                    let tasks = store.claim(&main, &owner, 256).await?;
                    if tasks.is_empty() {
                        // A permit left by an enqueue since the claim wakes this at once.
                        queued[b].notified().await;
                        continue;
                    }
                    let outcomes = tasks
                        .iter()
                        .map(|task| {
                            (
                                task.id,
                                TaskOutcome::Succeeded(json!({ "commit": "4b825dc6" })),
                                vec![(Level::Info, "pushed 4b825dc6".to_owned())],
                            )
                        })
                        .collect();
                    for result in store.finish_tasks(outcomes).await? {
                        result?;
                    }
                    done += tasks.len();
                    pushes += 1;
                }
                store.unlock_branch(&main, &owner).await?;
                Ok::<_, StoreError>(pushes)
            })
        })
        .collect();

    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (store, queued) = (Arc::clone(&store), Arc::clone(&queued));
            tokio::spawn(async move {
                let b = client % BRANCHES;
                let main = branch(&format!("env-{b}"));
                for n in 0..EACH {
                    let job = store
                        .enqueue(deploy(format!("c{client}-{n}"), &main))
                        .await?
                        .job;
                    let event = |message: &str| NewEvent {
                        job_id: job.id.clone(),
                        task_id: Some(job.tasks[0].id),
                        level: Level::Info,
                        message: message.to_owned(),
                    };
                    store
                        .append_events(vec![event("accepted"), event("queued for env")])
                        .await?;
                    queued[b].notify_one();
                }
                Ok::<_, StoreError>(())
            })
        })
        .collect();

    for client in clients {
        client.await.unwrap().unwrap();
    }
    let acknowledged = started.elapsed();
    let mut pushes = 0;
    for writer in writers {
        pushes += writer.await.unwrap().unwrap();
    }
    let elapsed = started.elapsed();
    let total = CLIENTS * EACH;
    println!(
        "deploy requests, synchronous=FULL, {CLIENTS} clients, {BRANCHES} branches: {total} \
         acknowledged in {acknowledged:.2?} = {:.0}/s, all finished in {elapsed:.2?} = {:.0}/s \
         ({pushes} claim+finish batches)",
        total as f64 / acknowledged.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    let jobs = stored_jobs(&store).await;
    assert_eq!(jobs.len(), total);
    assert!(jobs.iter().all(|job| job.state == JobState::Succeeded));
    assert_eq!(store.events(&jobs[0].id, 0).await.unwrap().len(), 3);
}
