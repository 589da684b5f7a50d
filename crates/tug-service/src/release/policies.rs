//! Reading a service's `policies/<service>.json` at the tip of the policies branch.

use tug_release::ServicePolicies;

use super::index::{fetch_due, mirror_of, tip};
use super::{Ctx, Place, conflict, git_error, internal};
use crate::error::ServiceError;

pub(crate) fn policies_path(service: &str) -> String {
    format!("policies/{service}.json")
}

pub(crate) fn policies_place(ctx: &Ctx) -> Result<Place, ServiceError> {
    ctx.model()?
        .policies
        .clone()
        .ok_or_else(|| internal("no repository holds policies: no environment is configured"))
}

/// The service's policies as the policies branch holds them (none when it has no file), fetched
/// at most once a second like the release index: tug's own policy commits update the mirror
/// directly, and a read-modify-write guards itself with [`read_for_change`].
pub(crate) async fn read(ctx: &Ctx, service: &str) -> Result<ServicePolicies, ServiceError> {
    Ok(read_for_change(ctx, service, false).await?.0)
}

/// The service's policies and the file's exact bytes (`None`: no file), which a change names
/// as its precondition. `fresh` fetches the branch first whatever the last fetch was.
pub(crate) async fn read_for_change(
    ctx: &Ctx,
    service: &str,
    fresh: bool,
) -> Result<(ServicePolicies, Option<Vec<u8>>), ServiceError> {
    let place = policies_place(ctx)?;
    let mirror = mirror_of(ctx, &place.repository).await?;
    let fetch = fresh || fetch_due(ctx, &place);
    let Some(commit) = tip(mirror.clone(), &place.branch, fetch).await? else {
        return Ok((ServicePolicies::new(service), None));
    };
    let path = policies_path(service);
    let read_path = path.clone();
    let content = tokio::task::spawn_blocking(move || {
        let tree = mirror.tree_at(commit).map_err(|e| e.to_string())?;
        tug_git::FileSource::read_file(&tree, &read_path).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| internal(format!("git task failed: {e}")))?
    .map_err(|e| git_error(&format!("cannot read {path}"), &e))?;
    match content {
        None => Ok((ServicePolicies::new(service), None)),
        Some(bytes) => {
            let text = String::from_utf8(bytes.clone()).map_err(|_| {
                conflict(format!(
                    "{path} in repository `{}` is not UTF-8",
                    place.repository
                ))
            })?;
            let policies = ServicePolicies::from_json(service, &text).map_err(|e| {
                conflict(format!(
                    "{path} in repository `{}` is not valid; fix it in git: {e}",
                    place.repository
                ))
            })?;
            Ok((policies, Some(bytes)))
        }
    }
}
