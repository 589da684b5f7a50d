//! The audit trail: who did what, to which service and environment, with which result —
//! accepted calls and refused ones alike. Rows are only ever appended; `id` orders them.

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder, Row, Sqlite};

use crate::release::at;
use crate::{PgStore, Result, SqliteStore, StoreError};

/// Identifier of an audit record; larger is newer.
pub type AuditId = i64;

/// Whether the call did what it was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditResult {
    Accepted,
    Refused,
}

impl AuditResult {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditResult::Accepted => "accepted",
            AuditResult::Refused => "refused",
        }
    }

    /// The inverse of [`AuditResult::as_str`].
    pub fn parse(name: &str) -> Option<AuditResult> {
        [AuditResult::Accepted, AuditResult::Refused]
            .into_iter()
            .find(|r| r.as_str() == name)
    }
}

/// A record to append; the store stamps its id and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAuditRecord {
    /// Who: the name the caller authenticated as (a token's name, `anonymous`, or `unknown`
    /// when no valid credential was presented).
    pub actor: String,
    /// More about the actor where an identity provider says more (issuer, subject, the rule
    /// that matched); `None` for tokens.
    pub actor_detail: Option<serde_json::Value>,
    /// `deploy`, `artifact.push`, `release`, `promote`, `rollback`, `unpin`, `policy.write`, …
    pub action: String,
    pub service: Option<String>,
    pub environment: Option<String>,
    pub repository: Option<String>,
    pub branch: Option<String>,
    /// The request id the caller saw (`X-Request-Id`).
    pub request_id: Option<String>,
    pub result: AuditResult,
    /// The refusal's code (`permission_denied`, `not_found`, …); `None` when accepted.
    pub code: Option<String>,
    pub message: String,
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: AuditId,
    pub at: Timestamp,
    #[serde(flatten)]
    pub record: NewAuditRecord,
}

/// Which records to list: every filter set must match. Newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub service: Option<String>,
    pub environment: Option<String>,
    /// At or after this time.
    pub since: Option<Timestamp>,
    /// Before this time.
    pub until: Option<Timestamp>,
    /// Records with an id below this one: the next page after a page whose last id it is.
    pub before: Option<AuditId>,
    /// At most this many; [`AuditQuery::DEFAULT_LIMIT`] when unset, never more than
    /// [`AuditQuery::MAX_LIMIT`].
    pub limit: Option<u32>,
}

impl AuditQuery {
    pub const DEFAULT_LIMIT: u32 = 100;
    pub const MAX_LIMIT: u32 = 1000;

    fn limit(&self) -> i64 {
        i64::from(
            self.limit
                .unwrap_or(Self::DEFAULT_LIMIT)
                .clamp(1, Self::MAX_LIMIT),
        )
    }
}

/// The audit trail's storage, next to the job queue in the same database.
#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Appends a record stamped with the store's clock; `Ok` means committed.
    async fn append_audit(&self, record: NewAuditRecord) -> Result<AuditRecord>;

    /// Records matching `query`, newest first.
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>>;
}

const COLUMNS: &str = "id, at, actor, actor_detail, action, service, environment, repository, \
                       branch, request_id, result, code, message";

pub(crate) fn detail_text(record: &NewAuditRecord) -> Option<String> {
    record.actor_detail.as_ref().map(ToString::to_string)
}

pub(crate) fn stored(id: AuditId, at_ms: i64, record: NewAuditRecord) -> Result<AuditRecord> {
    Ok(AuditRecord {
        id,
        at: at(at_ms, &format!("audit record {id}"))?,
        record,
    })
}

fn audit_row<R>(row: &R) -> Result<AuditRecord>
where
    R: Row,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let id: i64 = row.try_get("id")?;
    let detail: Option<String> = row.try_get("actor_detail")?;
    let actor_detail = detail
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("audit record {id}: actor_detail: {e}")))?;
    let result: String = row.try_get("result")?;
    let result = AuditResult::parse(&result).ok_or_else(|| {
        StoreError::Corrupt(format!("audit record {id}: unknown result {result:?}"))
    })?;
    stored(
        id,
        row.try_get("at")?,
        NewAuditRecord {
            actor: row.try_get("actor")?,
            actor_detail,
            action: row.try_get("action")?,
            service: row.try_get("service")?,
            environment: row.try_get("environment")?,
            repository: row.try_get("repository")?,
            branch: row.try_get("branch")?,
            request_id: row.try_get("request_id")?,
            result,
            code: row.try_get("code")?,
            message: row.try_get("message")?,
        },
    )
}

/// `SELECT … WHERE <filters> ORDER BY id DESC LIMIT n`, in either dialect.
fn select<'q, DB>(query: &'q AuditQuery) -> QueryBuilder<'q, DB>
where
    DB: sqlx::Database,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let mut sql = QueryBuilder::new(format!("SELECT {COLUMNS} FROM audit WHERE 1 = 1"));
    for (column, value) in [
        ("actor", &query.actor),
        ("action", &query.action),
        ("service", &query.service),
        ("environment", &query.environment),
    ] {
        if let Some(value) = value {
            sql.push(format!(" AND {column} = "));
            sql.push_bind(value.clone());
        }
    }
    if let Some(since) = query.since {
        sql.push(" AND at >= ");
        sql.push_bind(since.as_millisecond());
    }
    if let Some(until) = query.until {
        sql.push(" AND at < ");
        sql.push_bind(until.as_millisecond());
    }
    if let Some(before) = query.before {
        sql.push(" AND id < ");
        sql.push_bind(before);
    }
    sql.push(" ORDER BY id DESC LIMIT ");
    sql.push_bind(query.limit());
    sql
}

#[async_trait]
impl AuditLog for SqliteStore {
    async fn append_audit(&self, record: NewAuditRecord) -> Result<AuditRecord> {
        // Through the writer's group commit: an append of its own would hold the store's one
        // write connection for a synced commit per record, and every deploy writes one.
        self.append_audit_in_group(record).await
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let rows = select::<Sqlite>(query)
            .build()
            .fetch_all(self.read_pool())
            .await?;
        rows.iter().map(audit_row).collect()
    }
}

#[async_trait]
impl AuditLog for PgStore {
    async fn append_audit(&self, record: NewAuditRecord) -> Result<AuditRecord> {
        let now = self.now_ms();
        // Committed without waiting for the WAL flush (`synchronous_commit` off for this one
        // statement's transaction): the record sits on every request's path, and a flush per
        // record was a tenth of a deploy's time. It becomes durable with the next flushed commit
        // — at the latest the job's own end, or the WAL writer's next round (200 ms) — so only a
        // database crash within that moment can lose it; the operation it records is stored
        // with a flushed commit of its own.
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO audit (at, actor, actor_detail, action, service, environment, \
             repository, branch, request_id, result, code, message) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 \
             FROM (SELECT set_config('synchronous_commit', 'off', true)) AS local_setting \
             RETURNING id",
        )
        .bind(now)
        .bind(&record.actor)
        .bind(detail_text(&record))
        .bind(&record.action)
        .bind(&record.service)
        .bind(&record.environment)
        .bind(&record.repository)
        .bind(&record.branch)
        .bind(&record.request_id)
        .bind(record.result.as_str())
        .bind(&record.code)
        .bind(&record.message)
        .fetch_one(self.pool())
        .await?;
        stored(id, now, record)
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let rows = select::<Postgres>(query)
            .build()
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(audit_row).collect()
    }
}
