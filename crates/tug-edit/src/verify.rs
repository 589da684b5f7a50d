//! The after-the-fact check of every edit: the output is parsed again and compared with the
//! input as semantic trees (scalars by resolved value, aliases by name, never expanded). Only
//! the paths the edit declared may differ, and each must hold exactly what the edit intended.

use crate::doc::{Kind, NodeId, Path, Seg, Tree, display_path};
use crate::editor::{Change, Expect, NewNode};
use crate::error::{EditError, EditErrorKind};

pub(crate) fn verify(
    file: &str,
    before: &Tree<'_>,
    after: &Tree<'_>,
    changes: &[Change],
) -> Result<(), EditError> {
    let fail = |node: Option<(&Tree<'_>, NodeId)>, message: String| {
        EditError::at(
            file,
            node.and_then(|(t, n)| t.pos(n)),
            EditErrorKind::Verification(message),
        )
    };
    // A file without a document may gain its first one, as a whole new root.
    let created = before.docs.is_empty()
        && changes
            .iter()
            .any(|c| c.doc == 0 && c.path.is_empty() && c.expect != Expect::Absent);
    if before.docs.len() + usize::from(created) != after.docs.len() {
        return Err(fail(
            None,
            format!(
                "the file had {} documents and would have {}",
                before.docs.len(),
                after.docs.len()
            ),
        ));
    }
    for (doc, (&b, &a)) in before.docs.iter().zip(&after.docs).enumerate() {
        let allowed: Vec<&Path> = changes
            .iter()
            .filter(|c| c.doc == doc)
            .map(|c| &c.path)
            .collect();
        let mut path = Vec::new();
        compare(before, b, after, a, &mut path, &allowed)
            .map_err(|(n, msg)| fail(Some((after, n)), msg))?;
    }
    for change in changes {
        let Some(&root) = after.docs.get(change.doc) else {
            return Err(fail(None, format!("document {} is gone", change.doc + 1)));
        };
        let found = locate(after, root, &change.path);
        match (&change.expect, found) {
            (Expect::Absent, None) => {}
            (Expect::Absent, Some(n)) => {
                return Err(fail(
                    Some((after, n)),
                    format!("{} should be gone", display_path(&change.path)),
                ));
            }
            (Expect::Node(_), None) => {
                return Err(fail(
                    None,
                    format!("{} is missing after the edit", display_path(&change.path)),
                ));
            }
            (Expect::Node(want), Some(n)) => {
                if !matches_new(after, n, want) {
                    return Err(fail(
                        Some((after, n)),
                        format!(
                            "{} does not read back as the intended value",
                            display_path(&change.path)
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

type Mismatch = (NodeId, String);

fn compare(
    bt: &Tree<'_>,
    b: NodeId,
    at: &Tree<'_>,
    a: NodeId,
    path: &mut Path,
    allowed: &[&Path],
) -> Result<(), Mismatch> {
    if allowed.iter().any(|p| p.as_slice() == path.as_slice()) {
        return Ok(());
    }
    let below = allowed
        .iter()
        .any(|p| p.len() > path.len() && p.starts_with(path));
    let changed = || (a, format!("{} changed", display_path(path)));
    if !below {
        return if deep_eq(bt, b, at, a) {
            Ok(())
        } else {
            Err(changed())
        };
    }
    let (bn, an) = (bt.node(b), at.node(a));
    if bn.anchor != an.anchor {
        return Err(changed());
    }
    match (&bn.kind, &an.kind) {
        (
            Kind::Map {
                entries: be,
                tag: btag,
                ..
            },
            Kind::Map {
                entries: ae,
                tag: atag,
                ..
            },
        ) => {
            if btag != atag {
                return Err(changed());
            }
            let keep = |t: &Tree<'_>, k: NodeId, path: &mut Path| {
                path.push(Seg::Key(t.key_text(k)));
                let allowed_here = allowed.iter().any(|p| p.as_slice() == path.as_slice());
                path.pop();
                !allowed_here
            };
            let be: Vec<_> = be.iter().filter(|&&(k, _)| keep(bt, k, path)).collect();
            let ae: Vec<_> = ae.iter().filter(|&&(k, _)| keep(at, k, path)).collect();
            if be.len() != ae.len() {
                return Err((a, format!("{} gained or lost keys", display_path(path))));
            }
            for (&&(bk, bv), &&(ak, av)) in be.iter().zip(&ae) {
                if !deep_eq(bt, bk, at, ak) {
                    return Err((ak, format!("a key of {} changed", display_path(path))));
                }
                path.push(Seg::Key(bt.key_text(bk)));
                let r = compare(bt, bv, at, av, path, allowed);
                path.pop();
                r?;
            }
            Ok(())
        }
        (
            Kind::Seq {
                items: bi,
                tag: btag,
                ..
            },
            Kind::Seq {
                items: ai,
                tag: atag,
                ..
            },
        ) => {
            if btag != atag {
                return Err(changed());
            }
            let keep = |i: usize, path: &mut Path| {
                path.push(Seg::Index(i));
                let allowed_here = allowed.iter().any(|p| p.as_slice() == path.as_slice());
                path.pop();
                !allowed_here
            };
            let bi: Vec<(usize, NodeId)> = bi
                .iter()
                .copied()
                .enumerate()
                .filter(|&(i, _)| keep(i, path))
                .collect();
            let ai: Vec<(usize, NodeId)> = ai
                .iter()
                .copied()
                .enumerate()
                .filter(|&(i, _)| keep(i, path))
                .collect();
            if bi.len() != ai.len() {
                return Err((a, format!("{} gained or lost items", display_path(path))));
            }
            for (&(i, bv), &(_, av)) in bi.iter().zip(&ai) {
                path.push(Seg::Index(i));
                let r = compare(bt, bv, at, av, path, allowed);
                path.pop();
                r?;
            }
            Ok(())
        }
        _ => Err(changed()),
    }
}

/// Semantic equality: scalars by resolved kind and value, aliases by anchor name.
pub(crate) fn deep_eq(bt: &Tree<'_>, b: NodeId, at: &Tree<'_>, a: NodeId) -> bool {
    let (bn, an) = (bt.node(b), at.node(a));
    if bn.anchor != an.anchor {
        return false;
    }
    match (&bn.kind, &an.kind) {
        (
            Kind::Scalar {
                value: bv,
                tag: btag,
                ..
            },
            Kind::Scalar {
                value: av,
                tag: atag,
                ..
            },
        ) => bv == av && btag == atag && bt.scalar_kind(b) == at.scalar_kind(a),
        (Kind::Alias { name: bn, .. }, Kind::Alias { name: an, .. }) => bn == an,
        (
            Kind::Map {
                entries: be,
                tag: btag,
                ..
            },
            Kind::Map {
                entries: ae,
                tag: atag,
                ..
            },
        ) => {
            btag == atag
                && be.len() == ae.len()
                && be.iter().zip(ae).all(|(&(bk, bv), &(ak, av))| {
                    deep_eq(bt, bk, at, ak) && deep_eq(bt, bv, at, av)
                })
        }
        (
            Kind::Seq {
                items: bi,
                tag: btag,
                ..
            },
            Kind::Seq {
                items: ai,
                tag: atag,
                ..
            },
        ) => {
            btag == atag
                && bi.len() == ai.len()
                && bi.iter().zip(ai).all(|(&b, &a)| deep_eq(bt, b, at, a))
        }
        _ => false,
    }
}

fn locate(t: &Tree<'_>, root: NodeId, path: &[Seg]) -> Option<NodeId> {
    let mut node = root;
    for seg in path {
        node = match seg {
            Seg::Key(k) => t
                .entries(node)
                .iter()
                .find(|&&(kn, _)| t.key_text(kn) == *k)
                .map(|&(_, v)| v)?,
            Seg::Index(i) => *t.items(node).get(*i)?,
        };
    }
    Some(node)
}

fn matches_new(t: &Tree<'_>, node: NodeId, want: &NewNode) -> bool {
    match want {
        NewNode::Scalar(s) => match (t.scalar(node), t.scalar_kind(node)) {
            (Some(v), Some(kind)) => s.matches(v, &kind),
            _ => false,
        },
        NewNode::Map(entries) => {
            let have = t.entries(node);
            t.is_map(node)
                && have.len() == entries.len()
                && have.iter().zip(entries).all(|(&(k, v), (wk, wv))| {
                    t.scalar(k) == Some(wk.as_str()) && matches_new(t, v, wv)
                })
        }
        NewNode::Seq(items) => {
            let have = t.items(node);
            matches!(t.node(node).kind, Kind::Seq { .. })
                && have.len() == items.len()
                && have.iter().zip(items).all(|(&n, w)| matches_new(t, n, w))
        }
    }
}
