//! Deploy specs: what a CI job asks tug to change, in the Delivery server's format plus tug's
//! extensions (digests, manifest images, Helm images, chart versions, redeploy).
//!
//! Architecture invariant: this crate does no IO. Files are read through [`Files`], so the same
//! code edits a checkout on disk and a git tree in a bare mirror.

mod apply;
mod describe;
mod model;
mod parse;
mod validate;

pub use apply::{
    Applied, ApplyError, Context, FileChange, Files, FilesError, PathsAt, REDEPLOY_ANNOTATION,
    apply_paths, apply_segments, chart_file,
};
pub use model::{
    BranchUpdate, ChartUpdate, CommitSpec, DeployRequest, DeploySpec, HelmImageUpdate, ImageSpec,
    KustomizeUpdate, ManifestImageUpdate, NotifySpec, PathUpdate, RedeployUpdate, ScalarText,
    YqUpdate,
};
pub use parse::{DocumentError, from_document, from_json, from_yaml};
pub use validate::{
    InvalidSpec, Limits, check_branch_name, check_file_name, image_spec, join_repo_path,
    normalize_repo_path, validate_path_update, validate_request, validate_specs,
};

/// Reads a spec file: a list of deploy specs, or a single one.
pub fn parse_specs(source_name: &str, bytes: &[u8]) -> Result<Vec<DeploySpec>, DocumentError> {
    // Look at the shape first so the error reported is the one for the shape the author meant.
    let shape: serde_json::Value = from_document(source_name, bytes)?;
    if shape.is_array() {
        from_document::<Vec<DeploySpec>>(source_name, bytes)
    } else {
        from_document::<DeploySpec>(source_name, bytes).map(|s| vec![s])
    }
}
