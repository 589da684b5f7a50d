//! Serving a router over plain TCP or TLS (rustls), with graceful shutdown.

use std::time::Duration;

use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};

use tug_service::shutdown::Shutdown;

/// How long open connections (streams of jobs that are still running) get after shutdown begins.
const GRACE: Duration = Duration::from_secs(10);

/// Loads the certificate chain and private key (PEM) the listeners present.
pub async fn rustls_config(
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
) -> Result<RustlsConfig, String> {
    RustlsConfig::from_pem_file(cert_file, key_file)
        .await
        .map_err(|e| {
            format!(
                "cannot load certificate {} and key {}: {e}",
                cert_file.display(),
                key_file.display()
            )
        })
}

/// Serves `router` (HTTP/1.1 and HTTP/2, so gRPC too) until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    tls: Option<RustlsConfig>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let handle = axum_server::Handle::new();
    let on_shutdown = handle.clone();
    tokio::spawn(async move {
        shutdown.wait().await;
        on_shutdown.graceful_shutdown(Some(GRACE));
    });
    let listener = listener.into_std()?;
    let service = router.into_make_service();
    // A job's stream writes a line when it is accepted and the next when it ends. With Nagle's
    // algorithm the last line waits for the client to acknowledge the first, and a client
    // delays that acknowledgement by up to 40 ms: a deploy that lands in 35 ms would be
    // answered after 44.
    let no_delay = NoDelayAcceptor::new();
    match tls {
        Some(config) => {
            axum_server::from_tcp(listener)?
                .acceptor(RustlsAcceptor::new(config).acceptor(no_delay))
                .handle(handle)
                .serve(service)
                .await
        }
        None => {
            axum_server::from_tcp(listener)?
                .acceptor(no_delay)
                .handle(handle)
                .serve(service)
                .await
        }
    }
}
