//! The release model of tug, free of IO: what an artifact is, how environments follow each other,
//! where a service lives in each environment, which releases policies allow, and how a release is
//! written into (and read back from) a commit message so that history can be rebuilt from git alone.
//!
//! Architecture invariant: nothing in this crate touches the filesystem, the network or a clock;
//! callers pass bytes, strings and timestamps in and get values and errors out.
//!
//! `artifact.json` and `policies/<service>.json` keep the release manager's shapes and field names
//! so that repositories it managed can be taken over as they are.

pub mod artifact;
pub mod decide;
pub mod environment;
pub mod intent;
mod json;
pub mod policy;
pub mod service;
pub mod status;
pub mod trailers;
mod validate;

pub use artifact::{
    Artifact, ArtifactError, ArtifactInit, ChartReference, ImageReference, Stage, StageData,
    differing_fields,
};
pub use decide::{Choice, Decision, Facts, Nothing, Refusal, Request};
pub use environment::{Environment, EnvironmentError, Environments};
pub use intent::Intent;
pub use policy::{
    AutoReleasePolicy, BranchRestrictionPolicy, GlobalBranchRestrictions, PolicyError,
    PolicyViolation, ServicePolicies,
};
pub use service::{EditKind, ServiceError, ServiceSpec, Services, Target, TargetSpec};
pub use status::{EnvironmentStatus, Pin, RecordedRelease, Unpin};
pub use trailers::{Person, ReleaseRecord, TrailerError};
