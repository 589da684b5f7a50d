//! The server process: the service started, both listeners bound, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;
use tug_service::shutdown::{Shutdown, Trigger};
use tug_service::writer::Writers;
use tug_service::{Config, StartError, Started};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Start(#[from] StartError),
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

async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    Ok((listener, bound))
}

/// Starts the service and both listeners.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    let (http_at, grpc_at) = (config.listen.http, config.listen.grpc);
    let tls_files = config.tls.clone();
    // Bind before starting the service: a taken port must not leave writers running.
    let (http_listener, http_addr) = bind(http_at).await?;
    let (grpc_listener, grpc_addr) = bind(grpc_at).await?;
    let started = tug_service::start(config).await?;
    info!(%http_addr, %grpc_addr, data_dir = %started.app.config.data_dir.display(), "tug server listening");

    let http = crate::http::router(started.app.clone())
        .merge(crate::release::rest::router(started.releases.ctx().clone()))
        .merge(crate::release::webhooks::router(
            started.releases.ctx().clone(),
        ))
        .merge(crate::openapi::router())
        .route_layer(axum::middleware::from_fn(crate::query_guard::layer))
        .layer(axum::middleware::from_fn(crate::request_id::layer));
    let grpc = crate::grpc::router(started.app.clone(), &started.releases)
        .layer(axum::middleware::from_fn(crate::request_id::layer));
    let tls = match &tls_files {
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
    let Started {
        app,
        trigger,
        writers,
        ..
    } = started;
    let shutdown = app.shutdown.clone();
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
