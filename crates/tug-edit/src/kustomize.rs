//! `kustomize edit set image` on a kustomization's `images:` list.

use crate::doc::{Kind, NodeId};
use crate::editor::{Editor, NewNode};
use crate::error::{EditError, EditErrorKind};
use crate::spec::ImageSpec;
use crate::value::NewScalar;

/// Updates (or adds) the `images:` entry named `spec.name`; returns the summary.
pub(crate) fn apply(ed: &mut Editor<'_, '_>, spec: &ImageSpec) -> Result<String, EditError> {
    let root = kustomization_root(ed)?;
    let t = ed.tree;
    let summary = |new_name: Option<&str>| {
        if spec.has_placeholder() {
            return format!("set image {} as {spec}", spec.name);
        }
        let mut s = ImageSpec {
            new_name: spec.new_name.clone().or(new_name.map(str::to_owned)),
            ..spec.clone()
        }
        .rendered_target();
        if s == spec.name {
            s = spec.to_string();
        }
        format!("set image {} to {s}", spec.name)
    };
    let Some((_, images)) = t.get(root, "images") else {
        if t.has_merge(root) {
            return Err(ed.error(
                root,
                EditErrorKind::ThroughMerge {
                    what: "the images list".into(),
                },
            ));
        }
        ed.insert_entries(
            root,
            vec![("images".to_owned(), NewNode::Seq(vec![new_entry(spec)]))],
        )?;
        ed.created.push(created(spec, &[]));
        return Ok(summary(None));
    };
    if ed.is_empty_null(images) {
        ed.fill_empty(images, NewNode::Seq(vec![new_entry(spec)]))?;
        ed.created.push(created(spec, &[]));
        return Ok(summary(None));
    }
    if !matches!(t.node(images).kind, Kind::Seq { .. }) {
        return Err(ed.error(
            images,
            EditErrorKind::path_kind(".images", ".images", "sequence", t.node(images).kind_name()),
        ));
    }
    let matching: Vec<NodeId> = t
        .items(images)
        .iter()
        .copied()
        .filter(|&item| {
            let item = t.deref(item);
            t.get(item, "name")
                .and_then(|(_, v)| t.scalar(t.deref(v)))
                .is_some_and(|name| name == spec.name)
        })
        .collect();
    if matching.is_empty() {
        let names: Vec<&str> = t
            .items(images)
            .iter()
            .filter_map(|&item| {
                t.get(t.deref(item), "name")
                    .and_then(|(_, v)| t.scalar(t.deref(v)))
            })
            .collect();
        ed.append_items(images, vec![new_entry(spec)])?;
        ed.created.push(created(spec, &names));
        return Ok(summary(None));
    }
    let mut kept_new_name = None;
    for item in matching {
        kept_new_name = update_entry(ed, item, spec)?.or(kept_new_name);
    }
    Ok(summary(kept_new_name.as_deref()))
}

/// Names a new `images:` entry and the entries there are.
fn created(spec: &ImageSpec, names: &[&str]) -> String {
    if names.is_empty() {
        format!(
            "images entry {} (the kustomization had no images entries)",
            spec.name
        )
    } else {
        format!(
            "images entry {} (the kustomization has: {})",
            spec.name,
            names.join(", ")
        )
    }
}

/// The first document's root mapping.
pub(crate) fn kustomization_root(ed: &Editor<'_, '_>) -> Result<NodeId, EditError> {
    let t = ed.tree;
    match t.docs.first() {
        Some(&root) if t.is_map(root) => Ok(root),
        Some(&root) => Err(ed.error(
            root,
            EditErrorKind::Unsupported(format!(
                "a kustomization is a mapping, this file holds a {}",
                t.node(root).kind_name()
            )),
        )),
        None => Err(EditError::new(
            ed.file,
            EditErrorKind::Unsupported("the kustomization is empty".into()),
        )),
    }
}

fn new_entry(spec: &ImageSpec) -> NewNode {
    // A new entry has no current values: `*` parts are left out.
    let spec = &spec.resolve(None, None, None);
    let mut fields = vec![("name".to_owned(), scalar(&spec.name))];
    if let Some(n) = &spec.new_name {
        fields.push(("newName".to_owned(), scalar(n)));
    }
    if let Some(tag) = &spec.new_tag {
        fields.push(("newTag".to_owned(), scalar(tag)));
    }
    if let Some(digest) = &spec.digest {
        fields.push(("digest".to_owned(), scalar(digest)));
    }
    NewNode::Map(fields)
}

fn scalar(s: &str) -> NewNode {
    NewNode::Scalar(NewScalar::string(s))
}

/// Updates one matching entry in place. Returns the entry's kept `newName`, if any.
fn update_entry(
    ed: &mut Editor<'_, '_>,
    item: NodeId,
    spec: &ImageSpec,
) -> Result<Option<String>, EditError> {
    let t = ed.tree;
    ed.check_editable(item)?;
    let current = |key: &str| t.get(item, key).and_then(|(_, v)| t.scalar(t.deref(v)));
    let spec = &spec.resolve(current("newName"), current("newTag"), current("digest"));
    let mut set = Vec::new();
    let mut remove = Vec::new();
    if let Some(n) = &spec.new_name {
        set.push(("newName", n.as_str()));
    }
    if let Some(tag) = &spec.new_tag {
        set.push(("newTag", tag.as_str()));
        if spec.digest.is_none() {
            remove.push("digest");
        }
    }
    if let Some(digest) = &spec.digest {
        set.push(("digest", digest.as_str()));
        if spec.new_tag.is_none() {
            remove.push("newTag");
        }
    }
    let mut missing = Vec::new();
    for (key, value) in set {
        match t.get(item, key) {
            Some((_, node)) => {
                ed.set_scalar(node, &NewScalar::string(value))?;
            }
            None if t.has_merge(item) => {
                return Err(ed.error(
                    item,
                    EditErrorKind::ThroughMerge {
                        what: format!("{} of image {}", key, spec.name),
                    },
                ));
            }
            None => missing.push((key.to_owned(), scalar(value))),
        }
    }
    for key in remove {
        if t.get(item, key).is_some() {
            ed.remove_entry(item, key)?;
        }
    }
    ed.insert_entries(item, missing)?;
    let kept = if spec.new_name.is_none() {
        t.get(item, "newName")
            .and_then(|(_, v)| t.scalar(v))
            .map(str::to_owned)
    } else {
        None
    };
    Ok(kept)
}
