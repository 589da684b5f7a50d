//! The tug server's transports: the REST API (axum) and the gRPC API (tonic) over the service
//! core in `tug-service`, TLS, request ids and trace context, the OpenAPI document, and the
//! OTLP trace exporter (a gRPC client).
//!
//! Every handler here parses its request, calls one service method and writes the answer; a
//! [`tug_service::ServiceError`] is mapped to the wire once per transport (`http::ApiError`,
//! `grpc::status`).

pub mod grpc;
mod grpc_status;
pub mod http;
pub mod openapi;
pub mod otlp;
mod query_guard;
mod release;
pub mod request_id;
mod serve;
pub mod tls;

pub use serve::{Running, ServeError, start};
pub use tug_service::{Config, ConfigError, Secret, auth, config, logging, telemetry};
