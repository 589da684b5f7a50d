//! Setting a scalar at a yq-style path.

use crate::doc::NodeId;
use crate::editor::{Editor, NewNode};
use crate::error::{EditError, EditErrorKind};
use crate::path::{self, PathSeg, Resolved};
use crate::value::{self, NewScalar, TypeError, ValueType};

/// Sets `path_text` to `value`; returns the summary.
///
/// In a file of several documents the value is set in every document where the whole path
/// exists; missing keys are only created when the file has a single document.
pub(crate) fn apply(
    ed: &mut Editor<'_, '_>,
    path_text: &str,
    value: &str,
    value_type: ValueType,
) -> Result<String, EditError> {
    let segs = path::parse(path_text).map_err(|kind| EditError::new(ed.file, kind))?;
    let t = ed.tree;
    let roots: Vec<NodeId> = t
        .docs
        .iter()
        .copied()
        .filter(|&r| !ed.is_empty_null(r))
        .collect();
    if ed.has_no_document() {
        // An empty or comment-only file (a fresh Helm override file): it gets its root mapping.
        let Some(keys) = path::creatable_keys(&segs) else {
            return Err(EditError::new(
                ed.file,
                EditErrorKind::PathNotFound {
                    path: path_text.to_owned(),
                    message: "the file holds no YAML document, and only mapping keys are created, not list items".into(),
                },
            ));
        };
        let new = typed(ed, None, value, value_type)?;
        let Some((first, rest)) = keys.split_first() else {
            return Err(EditError::new(
                ed.file,
                EditErrorKind::PathNotFound {
                    path: path_text.to_owned(),
                    message: "the file holds no YAML document to set it in".into(),
                },
            ));
        };
        ed.create_root(vec![(
            first.clone(),
            NewNode::chain(rest, NewNode::Scalar(new)),
        )])?;
        return Ok(format!("set {path_text} to {}", value.replace('\n', "\\n")));
    }
    if roots.is_empty() {
        return Err(EditError::new(
            ed.file,
            EditErrorKind::PathNotFound {
                path: path_text.to_owned(),
                message: "the file holds no YAML document to set it in".into(),
            },
        ));
    }
    let summary = format!("set {path_text} to {}", value.replace('\n', "\\n"));
    if roots.len() == 1 {
        let root = roots[0];
        match path::resolve(ed, path_text, root, &segs)? {
            Resolved::Found(node) => set_found(ed, node, path_text, value, value_type)?,
            Resolved::Missing { node, from } => {
                create(ed, node, &segs, from, path_text, value, value_type)?
            }
        }
        return Ok(summary);
    }
    let mut found = Vec::new();
    let mut first_error = None;
    for &root in &roots {
        match path::resolve(ed, path_text, root, &segs) {
            Ok(Resolved::Found(node)) => found.push(node),
            Ok(Resolved::Missing { .. }) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if found.is_empty() {
        return Err(first_error.unwrap_or_else(|| {
            EditError::new(
                ed.file,
                EditErrorKind::PathNotFound {
                    path: path_text.to_owned(),
                    message: format!(
                        "not found in any of the {} documents (keys are only created in single-document files)",
                        roots.len()
                    ),
                },
            )
        }));
    }
    for node in found {
        set_found(ed, node, path_text, value, value_type)?;
    }
    Ok(summary)
}

fn typed(
    ed: &Editor<'_, '_>,
    node: Option<NodeId>,
    value: &str,
    value_type: ValueType,
) -> Result<NewScalar, EditError> {
    let existing = node.and_then(|n| ed.tree.scalar_kind(n));
    value::typed_value(value, value_type, existing.as_ref()).map_err(|e| {
        let kind = match e {
            TypeError::NotA(expected) => EditErrorKind::ValueType {
                value: value.to_owned(),
                expected,
            },
            TypeError::Tagged(tag) => EditErrorKind::Unsupported(format!(
                "the value has the tag {tag}, which the edit keeps; set it with --type auto or string"
            )),
        };
        match (node, &kind) {
            (Some(n), EditErrorKind::Unsupported(_)) => ed.error(n, kind),
            _ => EditError::new(ed.file, kind),
        }
    })
}

fn set_found(
    ed: &mut Editor<'_, '_>,
    node: NodeId,
    path_text: &str,
    value: &str,
    value_type: ValueType,
) -> Result<(), EditError> {
    ed.check_editable(node)?;
    let n = ed.tree.node(node);
    if ed.tree.scalar(node).is_none() {
        return Err(ed.error(
            node,
            EditErrorKind::NotAScalar {
                what: path_text.to_owned(),
                found: n.kind_name(),
            },
        ));
    }
    // An empty value (`key:`) is null, which says nothing about the type the user wants.
    let existing = if ed.is_empty_null(node) {
        None
    } else {
        Some(node)
    };
    let new = typed(ed, existing, value, value_type)?;
    if ed.is_empty_null(node) {
        if new.kind == crate::value::ScalarKind::Null {
            return Ok(());
        }
        return ed.fill_empty(node, NewNode::Scalar(new));
    }
    ed.set_scalar(node, &new)?;
    Ok(())
}

fn create(
    ed: &mut Editor<'_, '_>,
    node: NodeId,
    segs: &[PathSeg],
    from: usize,
    path_text: &str,
    value: &str,
    value_type: ValueType,
) -> Result<(), EditError> {
    let Some(keys) = path::creatable_keys(&segs[from..]) else {
        return Err(ed.error(
            node,
            EditErrorKind::PathNotFound {
                path: path_text.to_owned(),
                message: format!(
                    "{} has no {}; only missing mapping keys are created, not list items",
                    ed.describe(node),
                    match &segs[from] {
                        PathSeg::Key(k) => format!("key {k}"),
                        PathSeg::Index(i) => format!("item [{i}]"),
                        PathSeg::Select { field, value } => format!("item [{field}={value}]"),
                    }
                ),
            },
        ));
    };
    let new = typed(ed, None, value, value_type)?;
    ed.check_editable(node)?;
    if ed.is_empty_null(node) {
        ed.created
            .push(format!("key {path_text} ({} was empty)", ed.describe(node)));
        return ed.fill_empty(node, NewNode::chain(&keys, NewNode::Scalar(new)));
    }
    let Some((first, rest)) = keys.split_first() else {
        return Ok(());
    };
    ed.created.push(format!(
        "key {path_text} ({} has no key {first}; its keys: {})",
        ed.describe(node),
        ed.key_names(node)
    ));
    ed.insert_entries(
        node,
        vec![(first.clone(), NewNode::chain(rest, NewNode::Scalar(new)))],
    )
}
