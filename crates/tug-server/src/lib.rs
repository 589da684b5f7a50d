//! The tug server: the process behind `tug server`.
//!
//! This crate holds the parts around the per-branch writers: the configuration file, bearer-token
//! authorisation, notifications after each job, Prometheus metrics and logging.

pub mod app;
pub mod auth;
pub mod config;
pub mod follow;
pub mod grpc;
pub mod http;
pub mod intake;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod openapi;
pub mod preview;
mod query_guard;
pub mod release;
pub mod request_id;
pub mod shutdown;
pub mod signals;
pub mod tls;
pub mod writer;

pub use app::{Running, ServeError, start};
pub use config::{Config, ConfigError, Secret};
