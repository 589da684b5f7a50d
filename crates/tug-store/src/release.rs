//! Release storage next to the job queue: the artifacts CI registers (with the manifest bundles
//! of services released by copying), the index of release commits, unpins and rollout states.
//!
//! The index is derived: every row of `releases` and `release_unpins` comes from a commit on an
//! environment's branch, and [`ReleaseStore::clear_release_index`] followed by re-reading the
//! branches rebuilds it. Artifacts and rollout states live only here (git has no place for them);
//! an artifact lost with the database comes back when CI registers it again.

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::Row;

use crate::{Result, SqliteStore, StoreError};

/// An artifact as CI registers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewArtifact {
    pub service: String,
    pub id: String,
    /// The source branch it was built from.
    pub branch: String,
    /// `artifact.json`, exactly as registered.
    pub artifact_json: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArtifact {
    pub service: String,
    pub id: String,
    pub branch: String,
    pub artifact_json: String,
    /// Whether a manifest bundle was uploaded for it.
    pub has_bundle: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What registering an artifact did. An artifact is immutable: a known id is never given other
/// content (a later promote or rollback would deploy something else than what was released).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactWrite {
    Created,
    /// The id was known with the same `artifact.json`, byte for byte.
    Unchanged,
    /// The id is known with other bytes; nothing was written. `existing` is what is stored, for
    /// the caller to compare (the same JSON written differently is the same artifact).
    Differs {
        existing: String,
    },
}

/// One release commit, as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedRelease {
    pub repository: String,
    pub branch: String,
    pub commit: String,
    pub service: String,
    pub environment: String,
    pub artifact_id: String,
    /// The release intent as JSON (`{"type": "promote", "fromEnv": "dev"}`).
    pub intent: serde_json::Value,
    pub released_by_name: String,
    pub released_by_email: String,
    /// The tug request (job) that made it, when tug made it.
    pub request: Option<String>,
    pub released_at: Timestamp,
}

/// An explicit lift of a rollback pin, found as a commit on an environment's branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedUnpin {
    pub repository: String,
    pub branch: String,
    pub commit: String,
    pub service: String,
    pub environment: String,
    pub by_name: String,
    pub by_email: String,
    pub at: Timestamp,
}

/// What reading one branch's new commits found, applied in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchIndexUpdate {
    pub repository: String,
    pub branch: String,
    /// The tip read up to.
    pub head: String,
    /// Forget what was indexed of this branch before (its history was rewritten).
    pub rebuild: bool,
    /// Oldest first.
    pub releases: Vec<IndexedRelease>,
    /// Oldest first.
    pub unpins: Vec<IndexedUnpin>,
}

/// Which releases to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseQuery {
    pub service: String,
    pub environment: Option<String>,
    pub limit: u32,
}

/// The rollout of a revision in one environment, as a cluster reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutState {
    pub service: String,
    pub environment: String,
    /// The manifest commit (or other revision) the cluster applied.
    pub revision: String,
    /// `progressing`, `succeeded`, `failed`, … as reported.
    pub state: String,
    pub message: String,
    pub at: Timestamp,
}

/// Storage of artifacts, the release index, unpins and rollout states.
#[async_trait]
pub trait ReleaseStore: Send + Sync + 'static {
    /// Registers an artifact; a (service, id) already known is left as it is (see
    /// [`ArtifactWrite`]).
    async fn put_artifact(&self, artifact: NewArtifact) -> Result<ArtifactWrite>;

    async fn artifact(&self, service: &str, id: &str) -> Result<Option<StoredArtifact>>;

    /// Newest first; `branch` matches with `/` and `_` taken as equal.
    async fn artifacts(
        &self,
        service: &str,
        branch: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StoredArtifact>>;

    /// Stores the manifest bundle of an artifact (JSON). False when the artifact is unknown.
    async fn put_bundle(&self, service: &str, id: &str, bundle_json: &str) -> Result<bool>;

    async fn bundle(&self, service: &str, id: &str) -> Result<Option<String>>;

    /// The commit the index last read `branch` of `repository` up to.
    async fn index_head(&self, repository: &str, branch: &str) -> Result<Option<String>>;

    /// Adds what one branch's new commits hold and moves its head, atomically.
    async fn apply_index(&self, update: BranchIndexUpdate) -> Result<()>;

    /// Forgets the whole index (releases, unpins, heads) before a rebuild from git.
    async fn clear_release_index(&self) -> Result<()>;

    /// Newest first.
    async fn releases(&self, query: &ReleaseQuery) -> Result<Vec<IndexedRelease>>;

    async fn unpins(&self, service: &str) -> Result<Vec<IndexedUnpin>>;

    async fn put_rollout(&self, state: RolloutState) -> Result<()>;

    async fn rollouts(&self, service: &str) -> Result<Vec<RolloutState>>;
}

/// `feature_x` and `feature/x` are the same branch to CI, so they share one key.
pub(crate) fn branch_key(branch: &str) -> String {
    branch.replace('_', "/")
}

pub(crate) fn at(ms: i64, what: &str) -> Result<Timestamp> {
    Timestamp::from_millisecond(ms)
        .map_err(|e| StoreError::Corrupt(format!("{what}: {ms} ms is not a time: {e}")))
}

pub(crate) fn limit(value: u32) -> i64 {
    i64::from(value.clamp(1, 10_000))
}

pub(crate) fn artifact_row<R>(row: &R) -> Result<StoredArtifact>
where
    R: Row,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let service: String = row.try_get("service")?;
    let id: String = row.try_get("id")?;
    let what = format!("artifact {id} of service {service}");
    Ok(StoredArtifact {
        branch: row.try_get("branch")?,
        artifact_json: row.try_get("artifact")?,
        has_bundle: row.try_get::<Option<String>, _>("bundle")?.is_some(),
        created_at: at(row.try_get("created_at")?, &what)?,
        updated_at: at(row.try_get("updated_at")?, &what)?,
        service,
        id,
    })
}

pub(crate) fn release_row<R>(row: &R) -> Result<IndexedRelease>
where
    R: Row,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let commit: String = row.try_get("commit_sha")?;
    let intent: String = row.try_get("intent")?;
    let intent = serde_json::from_str(&intent).map_err(|e| {
        StoreError::Corrupt(format!(
            "release of commit {commit} has an unreadable intent: {e}"
        ))
    })?;
    Ok(IndexedRelease {
        repository: row.try_get("repository")?,
        branch: row.try_get("branch")?,
        service: row.try_get("service")?,
        environment: row.try_get("environment")?,
        artifact_id: row.try_get("artifact_id")?,
        intent,
        released_by_name: row.try_get("released_by_name")?,
        released_by_email: row.try_get("released_by_email")?,
        request: row.try_get("request")?,
        released_at: at(row.try_get("released_at")?, &format!("release {commit}"))?,
        commit,
    })
}

pub(crate) const ARTIFACT_COLUMNS: &str =
    "service, id, branch, artifact, bundle, created_at, updated_at";
pub(crate) const RELEASE_COLUMNS: &str = "repository, branch, commit_sha, service, environment, artifact_id, \
                               intent, released_by_name, released_by_email, request, released_at";

#[async_trait]
impl ReleaseStore for SqliteStore {
    async fn put_artifact(&self, artifact: NewArtifact) -> Result<ArtifactWrite> {
        let now = Timestamp::now().as_millisecond();
        let mut tx = self.pool().begin().await?;
        let existing: Option<String> =
            sqlx::query_scalar("SELECT artifact FROM artifacts WHERE service = ? AND id = ?")
                .bind(&artifact.service)
                .bind(&artifact.id)
                .fetch_optional(&mut *tx)
                .await?;
        let outcome = match existing {
            Some(json) if json == artifact.artifact_json => ArtifactWrite::Unchanged,
            Some(existing) => ArtifactWrite::Differs { existing },
            None => {
                sqlx::query(
                    "INSERT INTO artifacts (service, id, branch, branch_key, artifact, created_at, \
                     updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&artifact.service)
                .bind(&artifact.id)
                .bind(&artifact.branch)
                .bind(branch_key(&artifact.branch))
                .bind(&artifact.artifact_json)
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                ArtifactWrite::Created
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn artifact(&self, service: &str, id: &str) -> Result<Option<StoredArtifact>> {
        let row = sqlx::query(&format!(
            "SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE service = ? AND id = ?"
        ))
        .bind(service)
        .bind(id)
        .fetch_optional(self.read_pool())
        .await?;
        row.as_ref().map(artifact_row).transpose()
    }

    async fn artifacts(
        &self,
        service: &str,
        branch: Option<&str>,
        limit_to: u32,
    ) -> Result<Vec<StoredArtifact>> {
        let rows =
            match branch {
                Some(branch) => sqlx::query(&format!(
                    "SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE service = ? AND branch_key = ? \
                     ORDER BY created_at DESC, seq DESC LIMIT ?"
                ))
                .bind(service)
                .bind(branch_key(branch))
                .bind(limit(limit_to))
                .fetch_all(self.read_pool())
                .await?,
                None => {
                    sqlx::query(&format!(
                        "SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE service = ? \
                     ORDER BY created_at DESC, seq DESC LIMIT ?"
                    ))
                    .bind(service)
                    .bind(limit(limit_to))
                    .fetch_all(self.read_pool())
                    .await?
                }
            };
        rows.iter().map(artifact_row).collect()
    }

    async fn put_bundle(&self, service: &str, id: &str, bundle_json: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE artifacts SET bundle = ?, updated_at = ? WHERE service = ? AND id = ?",
        )
        .bind(bundle_json)
        .bind(Timestamp::now().as_millisecond())
        .bind(service)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn bundle(&self, service: &str, id: &str) -> Result<Option<String>> {
        let bundle: Option<Option<String>> =
            sqlx::query_scalar("SELECT bundle FROM artifacts WHERE service = ? AND id = ?")
                .bind(service)
                .bind(id)
                .fetch_optional(self.read_pool())
                .await?;
        Ok(bundle.flatten())
    }

    async fn index_head(&self, repository: &str, branch: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT commit_sha FROM release_index_heads WHERE repository = ? AND branch = ?",
        )
        .bind(repository)
        .bind(branch)
        .fetch_optional(self.read_pool())
        .await?)
    }

    async fn apply_index(&self, update: BranchIndexUpdate) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        if update.rebuild {
            for table in ["releases", "release_unpins"] {
                sqlx::query(&format!(
                    "DELETE FROM {table} WHERE repository = ? AND branch = ?"
                ))
                .bind(&update.repository)
                .bind(&update.branch)
                .execute(&mut *tx)
                .await?;
            }
        }
        for r in &update.releases {
            let intent = serde_json::to_string(&r.intent)
                .map_err(|e| StoreError::Invalid(format!("release intent is not JSON: {e}")))?;
            // A commit read twice (two index runs racing) is recorded once.
            sqlx::query(&format!(
                "INSERT OR IGNORE INTO releases ({RELEASE_COLUMNS}) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .bind(&r.repository)
            .bind(&r.branch)
            .bind(&r.commit)
            .bind(&r.service)
            .bind(&r.environment)
            .bind(&r.artifact_id)
            .bind(intent)
            .bind(&r.released_by_name)
            .bind(&r.released_by_email)
            .bind(&r.request)
            .bind(r.released_at.as_millisecond())
            .execute(&mut *tx)
            .await?;
        }
        for u in &update.unpins {
            sqlx::query(
                "INSERT OR IGNORE INTO release_unpins (repository, branch, commit_sha, service, \
                 environment, by_name, by_email, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&u.repository)
            .bind(&u.branch)
            .bind(&u.commit)
            .bind(&u.service)
            .bind(&u.environment)
            .bind(&u.by_name)
            .bind(&u.by_email)
            .bind(u.at.as_millisecond())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO release_index_heads (repository, branch, commit_sha, indexed_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT (repository, branch) DO UPDATE SET \
             commit_sha = excluded.commit_sha, indexed_at = excluded.indexed_at",
        )
        .bind(&update.repository)
        .bind(&update.branch)
        .bind(&update.head)
        .bind(Timestamp::now().as_millisecond())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn clear_release_index(&self) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        for table in ["releases", "release_unpins", "release_index_heads"] {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn releases(&self, query: &ReleaseQuery) -> Result<Vec<IndexedRelease>> {
        let rows =
            match &query.environment {
                Some(env) => sqlx::query(&format!(
                    "SELECT {RELEASE_COLUMNS} FROM releases WHERE service = ? AND environment = ? \
                     ORDER BY seq DESC LIMIT ?"
                ))
                .bind(&query.service)
                .bind(env)
                .bind(limit(query.limit))
                .fetch_all(self.read_pool())
                .await?,
                None => {
                    sqlx::query(&format!(
                        "SELECT {RELEASE_COLUMNS} FROM releases WHERE service = ? \
                     ORDER BY released_at DESC, seq DESC LIMIT ?"
                    ))
                    .bind(&query.service)
                    .bind(limit(query.limit))
                    .fetch_all(self.read_pool())
                    .await?
                }
            };
        rows.iter().map(release_row).collect()
    }

    async fn unpins(&self, service: &str) -> Result<Vec<IndexedUnpin>> {
        let rows = sqlx::query(
            "SELECT repository, branch, commit_sha, service, environment, by_name, by_email, at \
             FROM release_unpins WHERE service = ? ORDER BY seq",
        )
        .bind(service)
        .fetch_all(self.read_pool())
        .await?;
        rows.iter()
            .map(|row| {
                let commit: String = row.try_get("commit_sha")?;
                Ok(IndexedUnpin {
                    repository: row.try_get("repository")?,
                    branch: row.try_get("branch")?,
                    service: row.try_get("service")?,
                    environment: row.try_get("environment")?,
                    by_name: row.try_get("by_name")?,
                    by_email: row.try_get("by_email")?,
                    at: at(row.try_get("at")?, &format!("unpin {commit}"))?,
                    commit,
                })
            })
            .collect()
    }

    async fn put_rollout(&self, state: RolloutState) -> Result<()> {
        sqlx::query(
            "INSERT INTO rollout_states (service, environment, revision, state, message, at) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (service, environment) DO UPDATE SET \
             revision = excluded.revision, state = excluded.state, message = excluded.message, \
             at = excluded.at",
        )
        .bind(&state.service)
        .bind(&state.environment)
        .bind(&state.revision)
        .bind(&state.state)
        .bind(&state.message)
        .bind(state.at.as_millisecond())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn rollouts(&self, service: &str) -> Result<Vec<RolloutState>> {
        let rows = sqlx::query(
            "SELECT service, environment, revision, state, message, at FROM rollout_states \
             WHERE service = ? ORDER BY environment",
        )
        .bind(service)
        .fetch_all(self.read_pool())
        .await?;
        rows.iter()
            .map(|row| {
                let environment: String = row.try_get("environment")?;
                Ok(RolloutState {
                    service: row.try_get("service")?,
                    revision: row.try_get("revision")?,
                    state: row.try_get("state")?,
                    message: row.try_get("message")?,
                    at: at(
                        row.try_get("at")?,
                        &format!("rollout state of {environment}"),
                    )?,
                    environment,
                })
            })
            .collect()
    }
}
