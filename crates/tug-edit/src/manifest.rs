//! Container images in raw Kubernetes manifests.

use crate::doc::{Kind, NodeId, Tree};
use crate::editor::Editor;
use crate::error::{EditError, EditErrorKind};
use crate::spec::{ImageRef, ImageSpec};
use crate::value::NewScalar;

/// The lists that hold containers, wherever they are.
const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// Sets the image of every container whose repository is `spec.name` (only of the containers
/// named `container`, when given); returns the summary.
pub(crate) fn apply(
    ed: &mut Editor<'_, '_>,
    spec: &ImageSpec,
    container: Option<&str>,
) -> Result<String, EditError> {
    let (mut targets, seen) = matching_images(ed.tree, spec, &spec.name, container);
    if targets.is_empty() {
        // Renamed already (a re-applied request): keep the desired state by matching NEWNAME.
        if let Some(new_name) = &spec.new_name {
            targets = matching_images(ed.tree, spec, new_name, container).0;
        }
    }
    if targets.is_empty() {
        let found = if seen.is_empty() {
            "no container images at all".to_owned()
        } else {
            format!("only {}", seen.join(", "))
        };
        let message = match container {
            Some(c) => format!(
                "no container named {c} has an image with repository {} (found {found})",
                spec.name
            ),
            None => format!(
                "no container image has repository {} (found {found})",
                spec.name
            ),
        };
        return Err(EditError::new(ed.file, EditErrorKind::NoMatch(message)));
    }
    let count = targets.len();
    for (image, new) in targets {
        ed.set_scalar(image, &NewScalar::string(new))?;
    }
    Ok(match container {
        Some(c) => format!(
            "set image {} to {} in container {c}{}",
            spec.name,
            spec.rendered_target(),
            if count == 1 {
                String::new()
            } else {
                format!(" ({count} times)")
            }
        ),
        None => format!(
            "set image {} to {} in {count} container{}",
            spec.name,
            spec.rendered_target(),
            if count == 1 { "" } else { "s" }
        ),
    })
}

/// Every container image whose repository is `repository` (in the containers named
/// `container`, when given), with the image it becomes; and the other repositories (or
/// `name=repository` of the containers, when narrowed) seen, for the error message.
///
/// Like kustomize's image transformer, containers are found in any `containers`,
/// `initContainers` (and `ephemeralContainers`) list at any depth of any resource, not only in
/// pod specs: custom resources and misplaced lists are edited too, so that no matching image is
/// left behind.
fn matching_images(
    t: &Tree<'_>,
    spec: &ImageSpec,
    repository: &str,
    container: Option<&str>,
) -> (Vec<(NodeId, String)>, Vec<String>) {
    let mut targets: Vec<(NodeId, String)> = Vec::new();
    let mut seen_repositories: Vec<String> = Vec::new();
    // Nodes are stored in document order; aliases are not followed (their anchored node is
    // visited where it stands).
    for map in 0..t.nodes.len() {
        for &(key, list) in t.entries(map) {
            if !t.scalar(key).is_some_and(|k| CONTAINER_LISTS.contains(&k)) {
                continue;
            }
            let list = t.deref(list);
            for &container_node in t.items(list) {
                let Some(image) = read(t, t.deref(container_node), "image") else {
                    continue;
                };
                let Some(reference) = t.scalar(t.deref(image)) else {
                    continue;
                };
                let parsed = ImageRef::parse(reference);
                let name = read(t, t.deref(container_node), "name").and_then(|n| t.scalar(n));
                let seen = match container {
                    Some(_) => format!("{}={}", name.unwrap_or("?"), parsed.repository),
                    None => parsed.repository.to_owned(),
                };
                if parsed.repository != repository || container.is_some_and(|c| name != Some(c)) {
                    if !seen_repositories.contains(&seen) {
                        seen_repositories.push(seen);
                    }
                    continue;
                }
                if !targets.iter().any(|&(n, _)| n == image) {
                    targets.push((image, spec.apply_to_reference(&parsed)));
                }
            }
        }
    }
    (targets, seen_repositories)
}

/// The value of `key` in `map`, reading through aliases (edits through them are refused later
/// by the editor, which sees the shared anchor).
pub(crate) fn read(t: &Tree<'_>, map: NodeId, key: &str) -> Option<NodeId> {
    let map = t.deref(map);
    if !t.is_map(map) {
        return None;
    }
    if let Some((_, v)) = t.get(map, key) {
        return Some(t.deref(v));
    }
    // Entries merged in with `<<` are read too, so that an image there is found and refused.
    let (_, merge) = t
        .entries(map)
        .iter()
        .copied()
        .find(|&(k, _)| t.is_merge_key(k))?;
    let merge = t.deref(merge);
    let sources: Vec<NodeId> = match &t.node(merge).kind {
        Kind::Seq { items, .. } => items.iter().map(|&i| t.deref(i)).collect(),
        _ => vec![merge],
    };
    sources.into_iter().find_map(|m| read(t, m, key))
}

/// The kind of a manifest document (or list item).
pub(crate) fn kind_of<'t>(t: &'t Tree<'_>, object: NodeId) -> Option<&'t str> {
    read(t, object, "kind").and_then(|k| t.scalar(k))
}

/// Every object of a document: the document itself, or the items of a `kind: List`.
pub(crate) fn objects(t: &Tree<'_>, root: NodeId) -> Vec<NodeId> {
    let root = t.deref(root);
    if !t.is_map(root) {
        return Vec::new();
    }
    if kind_of(t, root).is_some_and(|k| k == "List" || k.ends_with("List"))
        && let Some(items) = read(t, root, "items")
    {
        return t.items(items).iter().flat_map(|&i| objects(t, i)).collect();
    }
    vec![root]
}

/// The pod template of a workload (`spec.template`, or a CronJob's
/// `spec.jobTemplate.spec.template`).
pub(crate) fn pod_template(t: &Tree<'_>, object: NodeId) -> Option<NodeId> {
    let spec = read(t, object, "spec")?;
    if kind_of(t, object) == Some("CronJob") {
        let job_spec = read(t, read(t, spec, "jobTemplate")?, "spec")?;
        return read(t, job_spec, "template");
    }
    read(t, spec, "template")
}
