//! The tug server: the process behind `tug server`.
//!
//! This crate holds the parts around the per-branch writers: the configuration file, bearer-token
//! authorisation, notifications after each job, Prometheus metrics and logging.

pub mod auth;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod notify;

pub use config::{Config, ConfigError, Secret};
