//! Images in Helm values files, in both common layouts:
//!
//! ```yaml
//! image:
//!   registry: docker.io        # optional
//!   repository: team/app
//!   tag: "1.2.3"
//!   digest: ""                 # optional
//! ```
//! and `image: "team/app:1.2.3"`.

use crate::doc::{Kind, NodeId};
use crate::editor::Editor;
use crate::error::{EditError, EditErrorKind};
use crate::path::{self, Resolved};
use crate::spec::{ImageRef, ImageSpec};
use crate::value::NewScalar;

/// Points the image at `path_text` to `spec`; returns the summary.
pub(crate) fn apply(
    ed: &mut Editor<'_, '_>,
    path_text: &str,
    spec: &ImageSpec,
) -> Result<String, EditError> {
    let segs = path::parse(path_text).map_err(|kind| EditError::new(ed.file, kind))?;
    let t = ed.tree;
    let Some(&root) = t.docs.iter().find(|&&r| !ed.is_empty_null(r)) else {
        return Err(EditError::new(
            ed.file,
            EditErrorKind::Unsupported("the values file is empty".into()),
        ));
    };
    let node = match path::resolve(ed, path_text, root, &segs)? {
        Resolved::Found(node) if !ed.is_empty_null(node) => node,
        Resolved::Found(node) | Resolved::Missing { node, .. } => {
            return Err(ed.error(
                node,
                EditErrorKind::PathNotFound {
                    path: path_text.to_owned(),
                    message: "no image there (expected repository/tag keys or \"repo:tag\")".into(),
                },
            ));
        }
    };
    ed.check_editable(node)?;
    match &t.node(node).kind {
        Kind::Scalar { value, .. } => {
            let reference = ImageRef::parse(value);
            let renamed_already = spec.new_name.as_deref() == Some(reference.repository);
            if reference.repository != spec.name && !renamed_already {
                return Err(ed.error(
                    node,
                    EditErrorKind::ImageMismatch(format!(
                        "{path_text} is image {value}, whose repository {} is not {}",
                        reference.repository, spec.name
                    )),
                ));
            }
            let new = spec.apply_to_reference(&reference);
            ed.set_scalar(node, &NewScalar::string(&new))?;
            Ok(format!("set {path_text} to {new}"))
        }
        Kind::Map { .. } => structured(ed, node, path_text, spec),
        other => Err(ed.error(
            node,
            EditErrorKind::Unsupported(format!(
                "{path_text} is a {}; expected an image mapping or \"repo:tag\"",
                match other {
                    Kind::Seq { .. } => "sequence",
                    _ => "alias",
                }
            )),
        )),
    }
}

fn structured(
    ed: &mut Editor<'_, '_>,
    map: NodeId,
    path_text: &str,
    spec: &ImageSpec,
) -> Result<String, EditError> {
    let t = ed.tree;
    let field = |key: &str| t.get(map, key).map(|(_, v)| v);
    let text = |key: &str| field(key).and_then(|v| t.scalar(v)).map(str::to_owned);
    let registry = text("registry").filter(|r| !r.is_empty());
    // Argo CD's convention names the repository `name:`; `repository:` wins when both exist.
    let name_key = if field("repository").is_none() && field("name").is_some() {
        "name"
    } else {
        "repository"
    };
    let repository = text(name_key);
    if let Some(repository) = &repository {
        let full = registry
            .as_ref()
            .map(|r| format!("{r}/{repository}"))
            .unwrap_or_else(|| repository.clone());
        let renamed_already = spec
            .new_name
            .as_ref()
            .is_some_and(|n| *n == *repository || *n == full);
        if spec.name != *repository && spec.name != full && !renamed_already {
            return Err(ed.error(
                field(name_key).unwrap_or(map),
                EditErrorKind::ImageMismatch(format!(
                    "{path_text}.{name_key} is {full}, not {}",
                    spec.name
                )),
            ));
        }
    }
    // `*` keeps a part: the name stays, a tag or digest is set to what it is.
    let current = |key: &str| text(key).filter(|v| !v.is_empty());
    let spec = &spec.resolve(
        None,
        current("tag").as_deref(),
        current("digest").as_deref(),
    );
    let mut set: Vec<(&str, String)> = Vec::new();
    if let Some(new_name) = &spec.new_name {
        let repository = match &registry {
            Some(r) => new_name
                .strip_prefix(&format!("{r}/"))
                .ok_or_else(|| {
                    ed.error(
                        field("registry").unwrap_or(map),
                        EditErrorKind::ImageMismatch(format!(
                            "{path_text} has registry {r}; the new name {new_name} must start with {r}/"
                        )),
                    )
                })?
                .to_owned(),
            None => new_name.clone(),
        };
        set.push((name_key, repository));
    }
    if let Some(tag) = &spec.new_tag {
        set.push(("tag", tag.clone()));
        if spec.digest.is_none() && text("digest").is_some_and(|d| !d.is_empty()) {
            // Charts that support digests let them win over the tag: blank the old one.
            set.push(("digest", String::new()));
        }
    }
    if let Some(digest) = &spec.digest {
        set.push(("digest", digest.clone()));
    }
    // Keys added where none of the image's keys was touched: the path probably holds a typo.
    let missing: Vec<&str> = set
        .iter()
        .map(|(key, _)| *key)
        .filter(|key| field(key).is_none())
        .collect();
    if !set.is_empty() && missing.len() == set.len() {
        let existing = ed.key_names(map);
        for key in missing {
            ed.created.push(format!(
                "key {path_text}.{key} ({path_text} has {existing})"
            ));
        }
    }
    for (key, value) in set {
        ed.set_in(map, &[key.to_owned()], &NewScalar::string(value))?;
    }
    Ok(format!("set {path_text} to {}", spec.rendered_target()))
}
