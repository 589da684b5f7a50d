//! The server process: shared state, start-up, the listeners and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};
use tug_store::{Enqueued, ReleaseStore, SqliteStore, Store};

use crate::auth::Authorizer;
use crate::config::Config;
use crate::intake::job_from_request;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::shutdown::{self, Shutdown, Trigger};
use crate::signals::JobSignals;
use crate::writer::Writers;

/// What every request handler and writer shares.
pub struct App {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    /// Artifacts, the release index, unpins and rollout states (the same database as `store`).
    pub releases: Arc<dyn ReleaseStore>,
    pub authorizer: Authorizer,
    pub metrics: Arc<Metrics>,
    pub writers: Arc<Writers>,
    /// Tells the streams following a job that it has news.
    pub signal: Arc<JobSignals>,
    pub shutdown: Shutdown,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
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
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("server failed: {0}")]
    Serve(String),
}

impl App {
    /// Validates, authorises and stores a deploy request; wakes the writers of its branches.
    /// Returns only once the job is committed to the store.
    pub async fn submit(
        &self,
        token: Option<&str>,
        request: tug_spec::DeployRequest,
        idempotency_key: Option<String>,
    ) -> Result<Enqueued, crate::http::ApiError> {
        let (_, job) = job_from_request(
            &self.config,
            &self.authorizer,
            token,
            request,
            idempotency_key,
            jiff::Timestamp::now(),
        )
        .map_err(crate::http::ApiError::from)?;
        let enqueued = self
            .store
            .enqueue(job)
            .await
            .map_err(|e| crate::http::store_error(&e))?;
        // Inside the request's span: this line ties the request id to the job id the writers
        // log from here on.
        tracing::info!(
            job_id = %enqueued.job.id,
            created = enqueued.created,
            tasks = enqueued.job.tasks.len(),
            requested_by = %enqueued.job.requested_by,
            "job accepted"
        );
        if enqueued.created {
            for t in &enqueued.job.tasks {
                self.writers.wake(&t.branch).await;
            }
        }
        Ok(enqueued)
    }
}

/// A running server: its bound addresses and the handle to stop it.
pub struct Running {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    trigger: Trigger,
    done: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl Running {
    /// Stops accepting, lets the writers finish the push in flight, and waits for the end.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.trigger.fire();
        self.wait().await
    }

    pub async fn wait(self) -> Result<(), ServeError> {
        self.done
            .await
            .map_err(|e| ServeError::Serve(e.to_string()))?
    }

    pub fn trigger(&self) -> &Trigger {
        &self.trigger
    }
}

/// Opens the store, starts the writers and both listeners.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    let config = Arc::new(config);
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let sqlite = Arc::new(SqliteStore::open(&config.data_dir.join("tug.db")).await?);
    let store: Arc<dyn Store> = sqlite.clone();
    let releases: Arc<dyn ReleaseStore> = sqlite;
    let authorizer =
        Authorizer::new(&config.auth()).map_err(|e| ServeError::Auth(e.to_string()))?;
    if authorizer.is_open() {
        warn!(
            "authentication is disabled (auth.mode: none): anyone who reaches this server can deploy"
        );
    }
    let metrics = Arc::new(Metrics::new());
    let notifier =
        Arc::new(Notifier::new(&config.notify).map_err(|e| ServeError::Notify(e.to_string()))?);
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
    let app = Arc::new(App {
        config: config.clone(),
        store,
        releases,
        authorizer,
        metrics,
        writers: writers.clone(),
        signal,
        shutdown: shutdown.clone(),
    });

    let http_listener = tokio::net::TcpListener::bind(config.listen.http)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen.http,
            source,
        })?;
    let grpc_listener = tokio::net::TcpListener::bind(config.listen.grpc)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen.grpc,
            source,
        })?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            addr: config.listen.http,
            source,
        })?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            addr: config.listen.grpc,
            source,
        })?;
    info!(%http_addr, %grpc_addr, data_dir = %config.data_dir.display(), "tug server listening");

    writers.release_previous_leases().await;
    tokio::spawn(writers.clone().dispatch(Duration::from_secs(1)));
    let releases = crate::release::Releases::start(app.clone());
    let http = crate::http::router(app.clone())
        .merge(releases.router())
        .route_layer(axum::middleware::from_fn(crate::query_guard::layer))
        .layer(axum::middleware::from_fn(crate::request_id::layer));
    let grpc = crate::grpc::router(app.clone(), &releases)
        .layer(axum::middleware::from_fn(crate::request_id::layer));
    let tls = match &config.tls {
        Some(t) => Some({
            // rustls needs a process-wide crypto provider before the first TLS configuration;
            // tug uses ring everywhere. An Err means one is already installed, which is as good.
            let _ = rustls::crypto::ring::default_provider().install_default();
            crate::tls::rustls_config(&t.cert_file, &t.key_file)
                .await
                .map_err(ServeError::Tls)?
        }),
        None => None,
    };
    let done = tokio::spawn(serve_all(
        http_listener,
        http,
        grpc_listener,
        grpc,
        tls,
        shutdown,
        writers,
    ));
    Ok(Running {
        http_addr,
        grpc_addr,
        trigger,
        done,
    })
}

async fn serve_all(
    http_listener: tokio::net::TcpListener,
    http: axum::Router,
    grpc_listener: tokio::net::TcpListener,
    grpc: axum::Router,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    shutdown: Shutdown,
    writers: Arc<Writers>,
) -> Result<(), ServeError> {
    let (a, b) = tokio::join!(
        crate::tls::serve(http_listener, http, tls.clone(), shutdown.clone()),
        crate::tls::serve(grpc_listener, grpc, tls, shutdown.clone()),
    );
    // The listeners are closed; the writers finish their push in flight and stop. What is still
    // queued stays in the store and resumes at the next start.
    writers.drain(Duration::from_secs(60)).await;
    a.and(b).map_err(|e| ServeError::Serve(e.to_string()))
}
