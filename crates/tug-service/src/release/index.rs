//! Keeping the release index in step with git: read the commits of an environment's branch since
//! the tip indexed last, and record the releases and unpins they carry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tracing::warn;
use tug_git::{Mirror, ObjectId};
use tug_release::{Intent, Person, RecordedRelease, ReleaseRecord, Unpin};
use tug_store::{BranchIndexUpdate, IndexedRelease, IndexedUnpin, ReleaseQuery};

use super::{Ctx, Place, git_error, internal};
use crate::error::ServiceError;

/// The trailer of an unpin commit naming who lifted the pin.
pub(crate) use tug_release::trailers::UNPINNED_BY;

/// How many commits one index update reads at most; a branch with a longer history keeps its
/// older releases out of the index.
const MAX_HISTORY: usize = 100_000;

/// A branch fetched this recently is read from the mirror without fetching again. tug's own
/// pushes update the mirror as they land, so only commits pushed by others can be this late;
/// a status page polled by many dashboards, or a burst of releases, costs one fetch per second
/// per branch instead of one per call.
pub(crate) const FETCH_FRESHNESS: Duration = Duration::from_secs(1);

/// What an index update read.
#[derive(Debug, Clone, Default)]
pub(crate) struct Synced {
    pub head: Option<String>,
    pub releases: usize,
    pub unpins: usize,
}

pub(crate) async fn mirror_of(ctx: &Ctx, repository: &str) -> Result<Arc<Mirror>, ServiceError> {
    let repo = ctx
        .app
        .config
        .repository(repository)
        .cloned()
        .ok_or_else(|| internal(format!("repository `{repository}` is no longer configured")))?;
    ctx.app
        .writers
        .mirror(&repo)
        .await
        .map_err(|e| git_error(&format!("cannot open repository `{repository}`"), &e))
}

/// The tip of `place`, fetched first when `fetch` (falling back to the mirror's tip when the fetch
/// fails: the writer may be updating the same ref).
pub(crate) async fn tip(
    mirror: Arc<Mirror>,
    branch: &str,
    fetch: bool,
) -> Result<Option<ObjectId>, ServiceError> {
    let branch = branch.to_owned();
    tokio::task::spawn_blocking(move || {
        if fetch {
            match mirror.fetch_branch(&branch) {
                Ok(tip) => return Ok(tip),
                Err(e) => warn!(branch, error = %e, "fetch failed; using the mirror's tip"),
            }
        }
        mirror.branch_tip(&branch)
    })
    .await
    .map_err(|e| internal(format!("git task failed: {e}")))?
    .map_err(|e| git_error("cannot read the branch tip", &e))
}

/// Brings the index of `place` up to date (from scratch with `rebuild`).
pub(crate) async fn sync(
    ctx: &Ctx,
    place: &Place,
    fetch: bool,
    rebuild: bool,
) -> Result<Synced, ServiceError> {
    let model = ctx.model()?;
    let _one_at_a_time = ctx.index_lock.lock().await;
    let fetch = fetch && (rebuild || fetch_due(ctx, place));
    let mirror = mirror_of(ctx, &place.repository).await?;
    let Some(tip) = tip(mirror.clone(), &place.branch, fetch).await? else {
        return Ok(Synced::default());
    };
    let store = &ctx.app.releases;
    let head = if rebuild {
        None
    } else {
        store
            .index_head(&place.repository, &place.branch)
            .await
            .map_err(|e| ServiceError::store(&e))?
            .and_then(|h| ObjectId::from_hex(&h))
    };
    if head == Some(tip) {
        return Ok(Synced {
            head: Some(tip.to_hex()),
            ..Synced::default()
        });
    }
    let walk = tokio::task::spawn_blocking(move || {
        let history = mirror.first_parent_history(tip, head, MAX_HISTORY)?;
        if head.is_some() && !history.reached_stop {
            // The indexed tip is no longer on the branch (history was rewritten): read it all.
            return mirror
                .first_parent_history(tip, None, MAX_HISTORY)
                .map(|h| (h, true));
        }
        Ok((history, rebuild))
    })
    .await
    .map_err(|e| internal(format!("git task failed: {e}")))?;
    let (history, rebuild) =
        walk.map_err(|e| git_error("cannot read the history of the branch", &e))?;
    let mut update = BranchIndexUpdate {
        repository: place.repository.clone(),
        branch: place.branch.clone(),
        head: tip.to_hex(),
        rebuild,
        releases: Vec::new(),
        unpins: Vec::new(),
    };
    let here = |env: &str| model.places.get(env) == Some(place);
    for commit in history.commits.iter().rev() {
        let at = Timestamp::from_second(commit.committed_at).unwrap_or(Timestamp::UNIX_EPOCH);
        if let Ok(record) = ReleaseRecord::from_commit_message(&commit.message) {
            if !here(&record.environment) {
                continue;
            }
            let intent = serde_json::to_value(&record.intent)
                .map_err(|e| internal(format!("release intent is not JSON: {e}")))?;
            update.releases.push(IndexedRelease {
                repository: place.repository.clone(),
                branch: place.branch.clone(),
                commit: commit.commit.to_hex(),
                service: record.service,
                environment: record.environment,
                artifact_id: record.artifact_id,
                intent,
                released_by_name: record.released_by.name,
                released_by_email: record.released_by.email,
                request: record.request,
                released_at: at,
            });
            continue;
        }
        let trailers = tug_release::trailers::parse_trailers(&commit.message);
        let value = |key: &str| {
            trailers
                .iter()
                .rev()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.clone())
        };
        if let (Some(by), Some(service), Some(environment)) = (
            value(UNPINNED_BY),
            value(tug_release::trailers::SERVICE),
            value(tug_release::trailers::ENVIRONMENT),
        ) && here(&environment)
        {
            let by = parse_person(&by);
            update.unpins.push(IndexedUnpin {
                repository: place.repository.clone(),
                branch: place.branch.clone(),
                commit: commit.commit.to_hex(),
                service,
                environment,
                by_name: by.name,
                by_email: by.email,
                at,
            });
        }
    }
    let synced = Synced {
        head: Some(update.head.clone()),
        releases: update.releases.len(),
        unpins: update.unpins.len(),
    };
    store
        .apply_index(update)
        .await
        .map_err(|e| ServiceError::store(&e))?;
    Ok(synced)
}

/// Whether `place` was last fetched longer than [`FETCH_FRESHNESS`] ago; if so, records now as
/// its fetch time (a failed fetch is not retried sooner either: the mirror's tip serves).
pub(crate) fn fetch_due(ctx: &Ctx, place: &Place) -> bool {
    let Ok(mut fetched) = ctx.fetched.lock() else {
        return true;
    };
    let now = Instant::now();
    match fetched.get(place) {
        Some(at) if now.duration_since(*at) < FETCH_FRESHNESS => false,
        _ => {
            fetched.insert(place.clone(), now);
            true
        }
    }
}

/// `Name <email>`, `<email>` or a bare name.
pub(crate) fn parse_person(text: &str) -> Person {
    let text = text.trim();
    match text.strip_suffix('>').and_then(|t| t.rsplit_once('<')) {
        Some((name, email)) => Person::new(name.trim(), email.trim()),
        None => Person::new(text, ""),
    }
}

/// Brings the index of every branch holding environments up to date.
pub(crate) async fn sync_all(ctx: &Ctx, fetch: bool) -> Result<(), ServiceError> {
    for place in ctx.model()?.branches() {
        sync(ctx, &place, fetch, false).await?;
    }
    Ok(())
}

/// The release history of `service` (newest first within each environment) and its unpins, as
/// the release model's status functions take them.
pub(crate) async fn history(
    ctx: &Ctx,
    service: &str,
) -> Result<(Vec<RecordedRelease>, Vec<Unpin>), ServiceError> {
    let model = ctx.model()?;
    let mut history = Vec::new();
    for env in &model.environments {
        let rows = ctx
            .app
            .releases
            .releases(&ReleaseQuery {
                service: service.to_owned(),
                environment: Some(env.name.clone()),
                limit: 10_000,
            })
            .await
            .map_err(|e| ServiceError::store(&e))?;
        for row in rows {
            history.push(recorded(row)?);
        }
    }
    let unpins = ctx
        .app
        .releases
        .unpins(service)
        .await
        .map_err(|e| ServiceError::store(&e))?
        .into_iter()
        .map(|u| Unpin {
            env: u.environment,
            service: u.service,
            by: Person::new(u.by_name, u.by_email),
            at: u.at,
        })
        .collect();
    Ok((history, unpins))
}

pub(crate) fn recorded(row: IndexedRelease) -> Result<RecordedRelease, ServiceError> {
    let intent: Intent = serde_json::from_value(row.intent.clone()).map_err(|e| {
        internal(format!(
            "the index holds an unreadable intent for commit {}: {e}",
            row.commit
        ))
    })?;
    Ok(RecordedRelease {
        record: ReleaseRecord {
            service: row.service,
            environment: row.environment,
            artifact_id: row.artifact_id,
            intent,
            released_by: Person::new(row.released_by_name, row.released_by_email),
            request: row.request,
        },
        commit: row.commit,
        at: row.released_at,
    })
}
