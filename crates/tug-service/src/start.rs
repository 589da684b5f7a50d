//! Start-up: the store opened, the writers, dispatcher and release notifier running.

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;
use tug_store::{AuditLog, PgConfig, PgStore, ReleaseStore, SqliteStore, Store, StoreChange};

use crate::app::App;
use crate::auth::Authorizer;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::release::Releases;
use crate::shutdown::{self, Trigger};
use crate::signals::JobSignals;
use crate::writer::Writers;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] tug_store::StoreError),
    #[error("invalid auth configuration: {0}")]
    Auth(String),
    #[error("invalid notification configuration: {0}")]
    Notify(String),
}

/// A started service: what the transports serve, and the handles to stop it.
pub struct Started {
    pub app: Arc<App>,
    pub releases: Releases,
    /// Fires the shutdown every part of the service (writers, followers, notifiers) waits on.
    pub trigger: Trigger,
    pub writers: Arc<Writers>,
}

/// Opens the store, starts the writers, the dispatcher and the release notifier.
pub async fn start(config: Config) -> Result<Started, StartError> {
    let config = Arc::new(config);
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    #[allow(clippy::type_complexity)]
    let (store, releases, audit): (Arc<dyn Store>, Arc<dyn ReleaseStore>, Arc<dyn AuditLog>) =
        match &config.store.postgres {
            Some(postgres) => {
                let mut pg = PgConfig::new(postgres.url.expose());
                pg.max_connections = postgres.max_connections;
                let store = Arc::new(PgStore::connect(&pg).await?);
                (store.clone(), store.clone(), store)
            }
            None => {
                let store = Arc::new(SqliteStore::open(&config.data_dir.join("tug.db")).await?);
                (store.clone(), store.clone(), store)
            }
        };
    let authorizer =
        Authorizer::new(&config.auth()).map_err(|e| StartError::Auth(e.to_string()))?;
    if authorizer.is_open() {
        warn!(
            "authentication is disabled (auth.mode: none): anyone who reaches this server can deploy"
        );
    }
    let metrics = Arc::new(Metrics::new());
    let notifier =
        Arc::new(Notifier::new(&config.notify).map_err(|e| StartError::Notify(e.to_string()))?);
    let signal = JobSignals::new();
    let (trigger, shutdown) = shutdown::channel();
    let writers = Writers::new(
        store.clone(),
        config.clone(),
        metrics.clone(),
        notifier,
        signal.clone(),
        shutdown.clone(),
    );
    let waiting = crate::streams::WaitingStreams::new(
        usize::try_from(config.limits.max_waiting_streams()).unwrap_or(usize::MAX),
    );
    // A store only this process writes tells it everything through its own signals; reading
    // every waiting job twice a second would then cost a read per caller for nothing, which at
    // hundreds of waiting callers is a fifth of the server's CPU.
    let follow_poll = if store.changes().is_some() {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(5)
    };
    let app = Arc::new(App {
        waiting,
        follow_poll,
        config,
        store,
        releases,
        audit,
        authorizer,
        metrics,
        writers: writers.clone(),
        signal,
        shutdown,
    });
    writers.release_previous_leases().await;
    if let Some(changes) = app.store.changes() {
        tokio::spawn(follow_other_replicas(app.clone(), changes));
    }
    tokio::spawn(writers.clone().dispatch(Duration::from_secs(1)));
    let releases = Releases::start(app.clone());
    Ok(Started {
        app,
        releases,
        trigger,
        writers,
    })
}

/// Turns what other replicas commit into local wake-ups: a branch with new tasks wakes (or
/// starts) this replica's writer for it, which takes the lease if nobody holds it; a job with news
/// wakes the streams following it here. The dispatcher and the followers poll as well, so a
/// notification missed while the database connection was down only delays.
async fn follow_other_replicas(
    app: Arc<App>,
    mut changes: tokio::sync::broadcast::Receiver<StoreChange>,
) {
    let mut shutdown = app.shutdown.clone();
    loop {
        let change = tokio::select! {
            change = changes.recv() => change,
            () = shutdown.wait() => return,
        };
        match change {
            Ok(StoreChange::Branch(branch)) => app.writers.wake(&branch).await,
            Ok(StoreChange::Job(job_id)) => app.signal.send(&job_id),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                warn!(
                    missed,
                    "fell behind the other replicas' notifications; polling covers them"
                );
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}
