//! [`ReleaseStore`] on both backends: each test runs against SQLite (a database file in a
//! temporary directory) and PostgreSQL (a server started for the test).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use jiff::Timestamp;
use tug_store::{
    ArtifactWrite, BranchIndexUpdate, IndexedRelease, IndexedUnpin, NewArtifact, ReleaseQuery,
    ReleaseStore, RolloutState,
};

fn artifact(id: &str, branch: &str) -> NewArtifact {
    NewArtifact {
        service: "api".to_owned(),
        id: id.to_owned(),
        branch: branch.to_owned(),
        artifact_json: format!("{{\"id\": \"{id}\"}}"),
    }
}

fn release(commit: &str, env: &str, artifact: &str) -> IndexedRelease {
    IndexedRelease {
        repository: "platform".to_owned(),
        branch: "main".to_owned(),
        commit: commit.to_owned(),
        service: "api".to_owned(),
        environment: env.to_owned(),
        artifact_id: artifact.to_owned(),
        intent: serde_json::json!({"type": "release"}),
        released_by_name: "Alice".to_owned(),
        released_by_email: "alice@example.com".to_owned(),
        request: None,
        // Same second on purpose: order must come from history, not the clock.
        released_at: Timestamp::from_second(1_700_000_000).unwrap(),
    }
}

async fn latest_artifact_of_a_branch_with_a_slash(store: Arc<dyn ReleaseStore>) {
    for (id, branch) in [
        ("a-1", "feature/login"),
        ("m-1", "main"),
        ("a-2", "feature_login"),
    ] {
        assert_eq!(
            store.put_artifact(artifact(id, branch)).await.unwrap(),
            ArtifactWrite::Created
        );
    }
    let found = store
        .artifacts("api", Some("feature/login"), 1)
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, "a-2");
    let all = store.artifacts("api", None, 10).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["a-2", "m-1", "a-1"]);
    assert_eq!(
        store.put_artifact(artifact("m-1", "main")).await.unwrap(),
        ArtifactWrite::Unchanged
    );
    assert!(store.put_bundle("api", "m-1", "{}").await.unwrap());
    assert!(!store.put_bundle("api", "nope", "{}").await.unwrap());
    assert!(
        store
            .artifact("api", "m-1")
            .await
            .unwrap()
            .unwrap()
            .has_bundle
    );
    assert_eq!(
        store.bundle("api", "m-1").await.unwrap().as_deref(),
        Some("{}")
    );
}

async fn index_keeps_history_order_and_rebuilds(store: Arc<dyn ReleaseStore>) {
    let update = |releases: Vec<IndexedRelease>, head: &str, rebuild: bool| BranchIndexUpdate {
        repository: "platform".to_owned(),
        branch: "main".to_owned(),
        head: head.to_owned(),
        rebuild,
        releases,
        unpins: Vec::new(),
    };
    store
        .apply_index(update(
            vec![release("c1", "dev", "a-1"), release("c2", "dev", "a-2")],
            "c2",
            false,
        ))
        .await
        .unwrap();
    store
        .apply_index(update(vec![release("c3", "dev", "a-3")], "c3", false))
        .await
        .unwrap();
    let query = ReleaseQuery {
        service: "api".to_owned(),
        environment: Some("dev".to_owned()),
        limit: 10,
    };
    let ids: Vec<String> = store
        .releases(&query)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.artifact_id)
        .collect();
    assert_eq!(ids, ["a-3", "a-2", "a-1"]);
    assert_eq!(
        store
            .index_head("platform", "main")
            .await
            .unwrap()
            .as_deref(),
        Some("c3")
    );
    store
        .apply_index(update(vec![release("c9", "dev", "a-9")], "c9", true))
        .await
        .unwrap();
    let after = store.releases(&query).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].commit, "c9");
    store.clear_release_index().await.unwrap();
    assert!(store.releases(&query).await.unwrap().is_empty());
    assert_eq!(store.index_head("platform", "main").await.unwrap(), None);
}

async fn a_known_artifact_is_never_replaced_and_rollouts_keep_the_last_report(
    store: Arc<dyn ReleaseStore>,
) {
    assert_eq!(
        store.put_artifact(artifact("a-1", "main")).await.unwrap(),
        ArtifactWrite::Created
    );
    let mut changed = artifact("a-1", "main");
    changed.artifact_json = "{\"id\": \"a-1\", \"rebuilt\": true}".to_owned();
    assert_eq!(
        store.put_artifact(changed.clone()).await.unwrap(),
        ArtifactWrite::Differs {
            existing: artifact("a-1", "main").artifact_json
        }
    );
    let stored = store.artifact("api", "a-1").await.unwrap().unwrap();
    assert_eq!(stored.artifact_json, artifact("a-1", "main").artifact_json);
    for (state, second) in [("progressing", 1), ("succeeded", 2)] {
        store
            .put_rollout(RolloutState {
                service: "api".to_owned(),
                environment: "prod".to_owned(),
                revision: "c1".to_owned(),
                state: state.to_owned(),
                message: String::new(),
                at: Timestamp::from_second(1_700_000_000 + second).unwrap(),
            })
            .await
            .unwrap();
    }
    let rollouts = store.rollouts("api").await.unwrap();
    assert_eq!(rollouts.len(), 1);
    assert_eq!(rollouts[0].state, "succeeded");
    let unpin = IndexedUnpin {
        repository: "platform".to_owned(),
        branch: "main".to_owned(),
        commit: "c5".to_owned(),
        service: "api".to_owned(),
        environment: "prod".to_owned(),
        by_name: "Alice".to_owned(),
        by_email: "alice@example.com".to_owned(),
        at: Timestamp::from_second(1_700_000_000).unwrap(),
    };
    let update = BranchIndexUpdate {
        repository: "platform".to_owned(),
        branch: "main".to_owned(),
        head: "c5".to_owned(),
        rebuild: false,
        releases: Vec::new(),
        unpins: vec![unpin.clone(), unpin.clone()],
    };
    // Read twice (two replicas indexing at once): recorded once.
    store.apply_index(update.clone()).await.unwrap();
    store.apply_index(update).await.unwrap();
    assert_eq!(store.unpins("api").await.unwrap(), vec![unpin]);
}

macro_rules! every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = tug_store::SqliteStore::open(&dir.path().join("tug.db"))
                        .await
                        .unwrap();
                    super::$name(std::sync::Arc::new(store)).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let server = tug_testkit::Postgres::start().unwrap();
                    let url = server.create_database("tug").unwrap();
                    let store = tug_store::PgStore::connect(&tug_store::PgConfig::new(url))
                        .await
                        .unwrap();
                    super::$name(std::sync::Arc::new(store)).await;
                }
            )*
        }
    };
}

every_backend!(
    latest_artifact_of_a_branch_with_a_slash,
    index_keeps_history_order_and_rebuilds,
    a_known_artifact_is_never_replaced_and_rollouts_keep_the_last_report,
);
