//! [`ReleaseStore`] on PostgreSQL: the statements of the SQLite implementation in PostgreSQL's
//! dialect, each write one transaction.

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::Row;

use crate::release::{
    ARTIFACT_COLUMNS, RELEASE_COLUMNS, artifact_row, at, branch_key, limit, release_row,
};
use crate::{
    ArtifactWrite, BranchIndexUpdate, IndexedRelease, IndexedUnpin, NewArtifact, PgStore,
    ReleaseQuery, ReleaseStore, Result, RolloutState, StoreError, StoredArtifact,
};

#[async_trait]
impl ReleaseStore for PgStore {
    async fn put_artifact(&self, artifact: NewArtifact) -> Result<ArtifactWrite> {
        let now = Timestamp::now().as_millisecond();
        let mut tx = self.pool().begin().await?;
        // Insert, or read what the id already holds: the unique index orders two replicas
        // registering one id at once.
        let inserted = sqlx::query(
            "INSERT INTO artifacts (service, id, branch, branch_key, artifact, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) \
             ON CONFLICT (service, id) DO NOTHING",
        )
        .bind(&artifact.service)
        .bind(&artifact.id)
        .bind(&artifact.branch)
        .bind(branch_key(&artifact.branch))
        .bind(&artifact.artifact_json)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let outcome = if inserted.rows_affected() > 0 {
            ArtifactWrite::Created
        } else {
            let existing: String =
                sqlx::query_scalar("SELECT artifact FROM artifacts WHERE service = $1 AND id = $2")
                    .bind(&artifact.service)
                    .bind(&artifact.id)
                    .fetch_one(&mut *tx)
                    .await?;
            if existing == artifact.artifact_json {
                ArtifactWrite::Unchanged
            } else {
                ArtifactWrite::Differs { existing }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn artifact(&self, service: &str, id: &str) -> Result<Option<StoredArtifact>> {
        let row = sqlx::query(&format!(
            "SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE service = $1 AND id = $2"
        ))
        .bind(service)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(artifact_row).transpose()
    }

    async fn artifacts(
        &self,
        service: &str,
        branch: Option<&str>,
        limit_to: u32,
    ) -> Result<Vec<StoredArtifact>> {
        let rows = sqlx::query(&format!(
            "SELECT {ARTIFACT_COLUMNS} FROM artifacts \
             WHERE service = $1 AND ($2::text IS NULL OR branch_key = $2) \
             ORDER BY created_at DESC, seq DESC LIMIT $3"
        ))
        .bind(service)
        .bind(branch.map(branch_key))
        .bind(limit(limit_to))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(artifact_row).collect()
    }

    async fn put_bundle(&self, service: &str, id: &str, bundle_json: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE artifacts SET bundle = $1, updated_at = $2 WHERE service = $3 AND id = $4",
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
            sqlx::query_scalar("SELECT bundle FROM artifacts WHERE service = $1 AND id = $2")
                .bind(service)
                .bind(id)
                .fetch_optional(self.pool())
                .await?;
        Ok(bundle.flatten())
    }

    async fn index_head(&self, repository: &str, branch: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT commit_sha FROM release_index_heads WHERE repository = $1 AND branch = $2",
        )
        .bind(repository)
        .bind(branch)
        .fetch_optional(self.pool())
        .await?)
    }

    async fn apply_index(&self, update: BranchIndexUpdate) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        if update.rebuild {
            for table in ["releases", "release_unpins"] {
                sqlx::query(&format!(
                    "DELETE FROM {table} WHERE repository = $1 AND branch = $2"
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
            // Two replicas indexing the same commit record it once.
            sqlx::query(&format!(
                "INSERT INTO releases ({RELEASE_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING"
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
                "INSERT INTO release_unpins (repository, branch, commit_sha, service, \
                 environment, by_name, by_email, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT DO NOTHING",
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
             VALUES ($1, $2, $3, $4) ON CONFLICT (repository, branch) DO UPDATE SET \
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
        sqlx::query("TRUNCATE releases, release_unpins, release_index_heads")
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn releases(&self, query: &ReleaseQuery) -> Result<Vec<IndexedRelease>> {
        let rows = match &query.environment {
            Some(env) => {
                sqlx::query(&format!(
                    "SELECT {RELEASE_COLUMNS} FROM releases \
                     WHERE service = $1 AND environment = $2 ORDER BY seq DESC LIMIT $3"
                ))
                .bind(&query.service)
                .bind(env)
                .bind(limit(query.limit))
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {RELEASE_COLUMNS} FROM releases WHERE service = $1 \
                     ORDER BY released_at DESC, seq DESC LIMIT $2"
                ))
                .bind(&query.service)
                .bind(limit(query.limit))
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter().map(release_row).collect()
    }

    async fn unpins(&self, service: &str) -> Result<Vec<IndexedUnpin>> {
        let rows = sqlx::query(
            "SELECT repository, branch, commit_sha, service, environment, by_name, by_email, at \
             FROM release_unpins WHERE service = $1 ORDER BY seq",
        )
        .bind(service)
        .fetch_all(self.pool())
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
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (service, environment) DO UPDATE SET \
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
             WHERE service = $1 ORDER BY environment",
        )
        .bind(service)
        .fetch_all(self.pool())
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
