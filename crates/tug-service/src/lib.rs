//! The tug service: everything a deploy or release does, with no transport in sight.
//!
//! Submitting a deploy request (validation, authorisation, storing the job), the per-branch
//! writers that land jobs in git, following a job, notifications, metrics, the configuration, and
//! every release operation (artifacts, release / promote / rollback, policies, status, triggers
//! and rollout feedback) are plain methods and functions here. They answer with typed values or a
//! [`ServiceError`]; `tug-server` holds the REST and gRPC adapters that map those to the wire.

pub mod app;
pub mod auth;
pub mod config;
pub mod error;
pub mod follow;
pub mod intake;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod preview;
pub mod release;
pub mod shutdown;
pub mod signals;
pub mod start;
pub mod streams;
pub mod telemetry;
pub mod writer;

pub use app::App;
pub use config::{Config, ConfigError, Secret};
pub use error::{ErrorKind, ServiceError};
pub use start::{StartError, Started, start};
