//! Releases on the server: artifacts CI registers, release / promote / rollback of an artifact to
//! environments, auto-releases, policies, status and history.
//!
//! Every change to a repository — a release commit, a policies file, an unpin — is a job of the
//! store like a deploy, applied by the per-branch writer (group commit, retries, exactly once).
//!
//! Git stays the source of truth for history: a release commit carries the release's trailers
//! (`Service`, `Environment`, `Artifact-ID`, `Release-intent`, `Released-by`, plus the writer's
//! `Tug-Request`), and an unpin is an empty commit with `Service`, `Environment` and
//! `Unpinned-by` trailers. The database's release index is derived from those commits: it is
//! brought up to date from each environment's branch before it is read (only the commits since
//! the last indexed tip are read; the remote is fetched at most once per second per branch, since
//! tug's own pushes update the mirror directly), and `POST /api/v1/reindex` rebuilds it from git
//! alone. Releases
//! made outside tug with the same trailers (or by the release manager) are indexed the same way.
//!
//! Where things live: each environment's releases on its configured repository branch; policies
//! files (`policies/<service>.json`) on `policies.repository` (default: the repository and branch
//! of the first environment in promotion order).

pub mod api;
pub mod deployed;
mod edits;
pub mod feedback;
pub mod flow;
mod index;
mod policies;
pub mod release_notify;
pub mod triggers;

use std::sync::Arc;

use serde_json::json;
use tokio::sync::Mutex;

use crate::app::App;
use crate::error::ServiceError;

pub use crate::config::release::{Place, ReleaseModel};

/// The release side of one server: what its REST routes, gRPC service, triggers and feedback
/// share — one index lock and one fetch clock, so the index is updated in one place.
#[derive(Clone)]
pub struct Releases(Arc<Ctx>);

impl Releases {
    /// Starts the release notifier.
    pub fn start(app: Arc<App>) -> Self {
        let ctx = Arc::new(Ctx::new(app));
        release_notify::spawn(ctx.clone());
        Releases(ctx)
    }

    /// What the release operations need; every transport calls them with it.
    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.0
    }
}

/// What the release handlers share.
pub struct Ctx {
    pub app: Arc<App>,
    /// `Err` holds the configuration problem (only possible for a configuration built without
    /// [`crate::Config::load`], which validates it).
    pub(crate) model: Result<ReleaseModel, String>,
    /// One index update at a time, so rows of a branch are inserted in history order.
    pub(crate) index_lock: Mutex<()>,
    /// When each branch was last fetched for the index (see [`index::FETCH_FRESHNESS`]).
    pub(crate) fetched: std::sync::Mutex<std::collections::HashMap<Place, std::time::Instant>>,
    /// Rollout states as feedback records them, for the release notifier (GitHub deployment
    /// statuses).
    pub(crate) rollouts: tokio::sync::broadcast::Sender<release_notify::Rollout>,
}

impl Ctx {
    pub(crate) fn new(app: Arc<App>) -> Self {
        let model = ReleaseModel::from_config(&app.config)
            .map_err(|(field, message)| format!("{field}: {message}"));
        Self {
            app,
            model,
            index_lock: Mutex::new(()),
            fetched: std::sync::Mutex::default(),
            rollouts: tokio::sync::broadcast::channel(1024).0,
        }
    }

    pub fn model(&self) -> Result<&ReleaseModel, ServiceError> {
        match &self.model {
            Ok(model) if model.is_configured() => Ok(model),
            Ok(_) => Err(ServiceError::not_found(
                "releases are not configured: the server configuration defines no environments",
            )),
            Err(problem) => Err(ServiceError::internal(format!(
                "the release configuration is invalid: {problem}"
            ))),
        }
    }
}

pub(crate) fn invalid(field: &str, message: impl Into<String>) -> ServiceError {
    ServiceError::invalid_field(field, message)
}

pub(crate) fn not_found(what: &str, message: impl Into<String>) -> ServiceError {
    ServiceError::not_found(message).with_details(json!({ "what": what }))
}

pub(crate) fn conflict(message: impl Into<String>) -> ServiceError {
    ServiceError::conflict(message)
}

pub(crate) fn git_error(what: &str, e: &dyn std::fmt::Display) -> ServiceError {
    tracing::warn!(error = %e, "{what}");
    ServiceError::unavailable(format!("{what}: {e}"))
}

pub(crate) fn internal(message: impl Into<String>) -> ServiceError {
    ServiceError::internal(message)
}
