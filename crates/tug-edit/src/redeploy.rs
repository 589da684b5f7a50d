//! Redeploy: bump a pod-template annotation so Argo CD / Flux roll the pods even when the image
//! did not change, like `kubectl rollout restart` but in git.

use crate::doc::NodeId;
use crate::editor::{Editor, NewNode};
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
    validate_annotation_key(key).map_err(|reason| {
        EditError::new(
            ed.file,
            EditErrorKind::AnnotationKey {
                key: key.to_owned(),
                reason,
            },
        )
    })?;
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
            if ed.has_no_document() {
                // A fresh, comment-only values file.
                ed.create_root(vec![(
                    "podAnnotations".to_owned(),
                    NewNode::Map(vec![(key.to_owned(), NewNode::Scalar(annotation))]),
                )])?;
                return Ok(format!("set podAnnotations {key}={value}"));
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

/// Checks an annotation key, a Kubernetes qualified name: `[prefix/]name`, the prefix a DNS-1123
/// subdomain of at most 253 characters, the name 1 to 63 of
/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`. The error says what is wrong.
pub fn validate_annotation_key(key: &str) -> Result<(), &'static str> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err("the prefix before '/' is empty");
        }
        if prefix.len() > 253 {
            return Err("the prefix is longer than 253 characters");
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !prefix.split('.').all(label_ok) {
            return Err("the prefix is not a lower-case DNS subdomain");
        }
    }
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.len() > 63 {
        return Err("the name is longer than 63 characters");
    }
    let edge = |c: char| c.is_ascii_alphanumeric();
    if !name.starts_with(edge) || !name.ends_with(edge) {
        return Err("the name does not start and end with a letter or digit");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err("the name has characters other than letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_annotation_key;

    #[test]
    fn annotation_keys_are_qualified_names() {
        for ok in [
            "tug.dev/redeployed-at",
            "redeployed",
            "a",
            "kubectl.kubernetes.io/restartedAt",
            "x/A_b.c-9",
        ] {
            assert_eq!(validate_annotation_key(ok), Ok(()), "{ok}");
        }
        let long_name = "a".repeat(64);
        let long_prefix = format!("{}/a", "a.".repeat(127));
        for bad in [
            "<<",
            "=",
            "",
            "/a",
            "a/",
            "a/b/c",
            "-a",
            "a-",
            "Tug.dev/a",
            "a..b/c",
            "a b",
            long_name.as_str(),
            long_prefix.as_str(),
        ] {
            assert!(validate_annotation_key(bad).is_err(), "{bad}");
        }
    }
}
