//! The OTLP/gRPC trace exporter (a tonic client, so it lives with the transports): the endpoint,
//! headers and service name of `telemetry:` / the `OTEL_*` variables, as resolved by
//! `tug_service::config::telemetry`.

use std::time::Duration;

use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use tug_service::config::telemetry::TraceExport;
use tug_service::telemetry::Tracing;

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// Names the header, never its value (a secret).
    #[error("telemetry.headers.{name}: {message}")]
    Header { name: String, message: &'static str },
    #[error("telemetry.endpoint: cannot set up the OTLP exporter: {0}")]
    Exporter(String),
}

/// Sets up the exporter and its batch processor. Needs a Tokio runtime (the gRPC channel's
/// connection runs on it); the connection is made at the first export, so a collector that is
/// down does not stop the server from starting.
pub fn start(export: &TraceExport) -> Result<Tracing, OtlpError> {
    let mut metadata = tonic::metadata::MetadataMap::new();
    for (name, value) in &export.headers {
        let key = tonic::metadata::MetadataKey::from_bytes(name.as_bytes()).map_err(|_| {
            OtlpError::Header {
                name: name.clone(),
                message: "not a valid gRPC metadata name",
            }
        })?;
        // The error would print the value, which is a secret.
        let value = tonic::metadata::MetadataValue::try_from(value.expose()).map_err(|_| {
            OtlpError::Header {
                name: name.clone(),
                message: "the value holds characters gRPC metadata cannot carry",
            }
        })?;
        metadata.insert(key, value);
    }
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(export.endpoint.clone())
        .with_timeout(Duration::from_secs(10))
        .with_metadata(metadata);
    if export.endpoint.starts_with("https://") {
        builder =
            builder.with_tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots());
    }
    let exporter = builder
        .build()
        .map_err(|e| OtlpError::Exporter(e.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(export.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    Ok(Tracing::with_provider(provider))
}
