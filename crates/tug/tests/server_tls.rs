//! `tug server` with `tls: {cert_file, key_file}`: HTTPS with a certificate from a test CA,
//! verified by a client that trusts that CA and refused by one that does not.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod server_common;

use std::time::{Duration, Instant};

use server_common::*;
use tug_testkit::pki::{KeyType, certificates};
use tug_testkit::{Scratch, TugServer};

#[test]
fn health_is_served_over_https_with_the_configured_certificate() {
    let dir = Scratch::new().unwrap();
    let pki = certificates(dir.path(), KeyType::Ed25519).unwrap();
    let config = format!(
        "tls:\n  cert_file: \"{cert}\"\n  key_file: \"{key}\"\nauth:\n  mode: none\n",
        cert = pki.cert.display(),
        key = pki.key.display(),
    );
    let server = TugServer::start(tug_binary(), &config).expect("start tug server");
    let url = format!("{}/api/v1/health", server.http_url());
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let trusting = reqwest::Client::builder()
            .add_root_certificate(ca)
            .tls_built_in_root_certs(false)
            .build()
            .unwrap();
        // The helper saw the port open; the TLS acceptor may need a moment more.
        let deadline = Instant::now() + Duration::from_secs(20);
        let response = loop {
            match trusting.get(&url).send().await {
                Ok(response) => break response,
                Err(e) if Instant::now() > deadline => {
                    panic!("health over HTTPS: {e:?}; log:\n{}", server.logs())
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        };
        assert_eq!(response.status(), 200);
        let health: serde_json::Value = response.json().await.unwrap();
        assert_eq!(health["status"], "SERVING");

        let untrusting = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .build()
            .unwrap();
        let refused = untrusting.get(&url).send().await;
        assert!(refused.is_err(), "a client without the CA must not connect");
    });
    assert!(server.logs().contains("listening"), "{}", server.logs());
}
