//! Redeploy: bump a pod-template annotation so Argo CD / Flux roll the pods even when the image
//! did not change, like `kubectl rollout restart` but in git.

use crate::doc::NodeId;
use crate::editor::Editor;
use crate::error::{EditError, EditErrorKind};
use crate::manifest::{kind_of, objects, pod_template, read};
use crate::value::NewScalar;

/// Workload kinds whose pod template may change. A Job's template is immutable and a bare Pod
/// has none, so neither is touched.
const SKIPPED_KINDS: [&str; 2] = ["Job", "Pod"];

/// What kind of file a redeploy edits.
pub(crate) enum Target {
    Kustomization,
    Manifests,
    HelmValues,
}

pub(crate) fn apply(
    ed: &mut Editor<'_, '_>,
    target: Target,
    key: &str,
    value: &str,
    workload: Option<&str>,
) -> Result<String, EditError> {
    let annotation = NewScalar::string(value);
    match target {
        Target::Kustomization => {
            if let Some(w) = workload {
                return Err(EditError::new(
                    ed.file,
                    EditErrorKind::Unsupported(format!(
                        "a kustomization redeploy annotates every workload (commonAnnotations); it cannot select {w}"
                    )),
                ));
            }
            let root = crate::kustomize::kustomization_root(ed)?;
            ed.set_in(
                root,
                &["commonAnnotations".to_owned(), key.to_owned()],
                &annotation,
            )?;
            Ok(format!("set commonAnnotations {key}={value}"))
        }
        Target::HelmValues => {
            if let Some(w) = workload {
                return Err(EditError::new(
                    ed.file,
                    EditErrorKind::Unsupported(format!(
                        "a Helm values redeploy sets podAnnotations; it cannot select {w}"
                    )),
                ));
            }
            let root = crate::kustomize::kustomization_root(ed).map_err(|e| EditError {
                kind: EditErrorKind::Unsupported("Helm values are a mapping".into()),
                ..e
            })?;
            ed.set_in(
                root,
                &["podAnnotations".to_owned(), key.to_owned()],
                &annotation,
            )?;
            Ok(format!("set podAnnotations {key}={value}"))
        }
        Target::Manifests => {
            let t = ed.tree;
            let mut workloads: Vec<(NodeId, String)> = Vec::new();
            for &root in &t.docs {
                for object in objects(t, root) {
                    let kind = kind_of(t, object).unwrap_or("object");
                    if SKIPPED_KINDS.contains(&kind) {
                        continue;
                    }
                    let name = read(t, object, "metadata")
                        .and_then(|m| read(t, m, "name"))
                        .and_then(|n| t.scalar(n))
                        .unwrap_or("");
                    if workload.is_some_and(|w| w != name) {
                        continue;
                    }
                    if let Some(template) = pod_template(t, object) {
                        workloads.push((template, format!("{kind}/{name}")));
                    }
                }
            }
            if workloads.is_empty() {
                return Err(EditError::new(
                    ed.file,
                    EditErrorKind::NoMatch(match workload {
                        Some(w) => format!("no workload named {w} with a pod template"),
                        None => "no workload with a pod template".to_owned(),
                    }),
                ));
            }
            let keys = [
                "metadata".to_owned(),
                "annotations".to_owned(),
                key.to_owned(),
            ];
            let names: Vec<String> = workloads.iter().map(|(_, n)| n.clone()).collect();
            for (template, _) in workloads {
                ed.set_in(template, &keys, &annotation)?;
            }
            Ok(format!(
                "set pod-template annotation {key}={value} on {}",
                names.join(", ")
            ))
        }
    }
}
