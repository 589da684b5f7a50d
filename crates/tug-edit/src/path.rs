//! yq-style paths: `.image.tag`, `.spec.containers[0].image`,
//! `.metadata.annotations["app.kubernetes.io/version"]` and the list selector
//! `.spec.template.spec.containers[name=app].image`.

use crate::doc::{Kind, NodeId, Tree, display_path};
use crate::editor::Editor;
use crate::error::{EditError, EditErrorKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathSeg {
    Key(String),
    /// A list index; negative counts from the end.
    Index(i64),
    /// The list item that is a mapping whose `field` is the scalar `value`.
    Select {
        field: String,
        value: String,
    },
}

/// Parses a path; errors carry the 1-based column in the path.
pub(crate) fn parse(path: &str) -> Result<Vec<PathSeg>, EditErrorKind> {
    let chars: Vec<char> = path.chars().collect();
    let err = |i: usize, message: &str| EditErrorKind::PathSyntax {
        path: path.to_owned(),
        column: i + 1,
        message: message.to_owned(),
    };
    let mut segs = Vec::new();
    let mut i = 0;
    if chars.first() != Some(&'.') {
        return Err(err(0, "a path starts with '.'"));
    }
    let is_ident = |c: char| !matches!(c, '.' | '[' | ']' | '"' | '\'' | '=') && !c.is_whitespace();
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                match chars.get(i) {
                    Some('"') | Some('\'') => {
                        let (key, next) =
                            quoted(&chars, i).ok_or_else(|| err(i, "unterminated quoted key"))?;
                        segs.push(PathSeg::Key(key));
                        i = next;
                    }
                    Some('[') => {}
                    Some(&c) if is_ident(c) => {
                        let s = i;
                        while i < chars.len() && is_ident(chars[i]) {
                            i += 1;
                        }
                        segs.push(PathSeg::Key(chars[s..i].iter().collect()));
                    }
                    None if segs.is_empty() => {
                        return Err(err(0, "the path selects the whole document; name a key"));
                    }
                    _ => return Err(err(i, "expected a key after '.'")),
                }
            }
            '[' => {
                i += 1;
                match chars.get(i) {
                    Some('"') | Some('\'') => {
                        let (key, next) =
                            quoted(&chars, i).ok_or_else(|| err(i, "unterminated quoted key"))?;
                        i = next;
                        segs.push(PathSeg::Key(key));
                    }
                    Some(&c) if c.is_ascii_digit() || c == '-' => {
                        let s = i;
                        i += 1;
                        while i < chars.len() && chars[i].is_ascii_digit() {
                            i += 1;
                        }
                        let text: String = chars[s..i].iter().collect();
                        let n = text
                            .parse::<i64>()
                            .map_err(|_| err(s, "expected a list index"))?;
                        segs.push(PathSeg::Index(n));
                    }
                    Some(&c) if is_ident(c) => {
                        let s = i;
                        while i < chars.len() && is_ident(chars[i]) {
                            i += 1;
                        }
                        let field: String = chars[s..i].iter().collect();
                        if chars.get(i) != Some(&'=') {
                            return Err(err(i, "expected '=' in a [field=value] selector"));
                        }
                        i += 1;
                        let value = match chars.get(i) {
                            Some('"') | Some('\'') => {
                                let (v, next) = quoted(&chars, i)
                                    .ok_or_else(|| err(i, "unterminated quoted value"))?;
                                i = next;
                                v
                            }
                            _ => {
                                let s = i;
                                while i < chars.len() && chars[i] != ']' {
                                    i += 1;
                                }
                                chars[s..i].iter().collect::<String>().trim().to_owned()
                            }
                        };
                        if value.is_empty() {
                            return Err(err(i, "empty selector value"));
                        }
                        segs.push(PathSeg::Select { field, value });
                    }
                    _ => {
                        return Err(err(
                            i,
                            "expected an index, a quoted key or field=value after '['",
                        ));
                    }
                }
                if chars.get(i) != Some(&']') {
                    return Err(err(i, "expected ']'"));
                }
                i += 1;
            }
            _ => return Err(err(i, "expected '.' or '['")),
        }
    }
    if segs.is_empty() {
        return Err(err(0, "the path selects the whole document; name a key"));
    }
    Ok(segs)
}

/// A quoted string starting at `chars[i]`; returns it and the index after the closing quote.
fn quoted(chars: &[char], i: usize) -> Option<(String, usize)> {
    let q = *chars.get(i)?;
    let mut out = String::new();
    let mut j = i + 1;
    while j < chars.len() {
        match chars[j] {
            '\\' if q == '"' => {
                out.push(*chars.get(j + 1)?);
                j += 2;
            }
            c if c == q => return Some((out, j + 1)),
            c => {
                out.push(c);
                j += 1;
            }
        }
    }
    None
}

/// Where a path leads in one document.
pub(crate) enum Resolved {
    /// The node at the end of the path.
    Found(NodeId),
    /// The path stops at `node` (a mapping or an empty value) before `segs[from]`.
    Missing { node: NodeId, from: usize },
}

/// Follows `segs` from `root`, never through aliases or merge keys.
pub(crate) fn resolve(
    ed: &Editor<'_, '_>,
    path_text: &str,
    root: NodeId,
    segs: &[PathSeg],
) -> Result<Resolved, EditError> {
    let t: &Tree<'_> = ed.tree;
    let mut node = root;
    for (i, seg) in segs.iter().enumerate() {
        if let Kind::Alias { name, .. } = &t.node(node).kind {
            return Err(ed.error(
                node,
                EditErrorKind::ThroughAlias {
                    what: format!("path {path_text}"),
                    alias: name.clone(),
                },
            ));
        }
        let at = || display_path(&t.path_of(node));
        if ed.is_empty_null(node) {
            return Ok(Resolved::Missing { node, from: i });
        }
        let kind_err = |expected: &'static str| {
            let found = t.node(node).kind_name();
            if found == "scalar" {
                ed.error(
                    node,
                    EditErrorKind::PathThroughScalar {
                        path: path_text.to_owned(),
                        at: at(),
                    },
                )
            } else {
                ed.error(
                    node,
                    EditErrorKind::path_kind(path_text, &at(), expected, found),
                )
            }
        };
        match seg {
            PathSeg::Key(key) => {
                if !t.is_map(node) {
                    return Err(kind_err("mapping"));
                }
                match t.get(node, key) {
                    Some((_, v)) => node = v,
                    None if t.has_merge(node) => {
                        return Err(ed.error(
                            node,
                            EditErrorKind::ThroughMerge {
                                what: format!("path {path_text} (key {key} of {})", at()),
                            },
                        ));
                    }
                    None => return Ok(Resolved::Missing { node, from: i }),
                }
            }
            PathSeg::Index(n) => {
                if !matches!(t.node(node).kind, Kind::Seq { .. }) {
                    return Err(kind_err("sequence"));
                }
                let items = t.items(node);
                let index = if *n < 0 {
                    usize::try_from(n.unsigned_abs())
                        .ok()
                        .and_then(|back| items.len().checked_sub(back))
                } else {
                    usize::try_from(*n).ok()
                };
                match index.and_then(|i| items.get(i)) {
                    Some(&item) => node = item,
                    None => {
                        return Err(ed.error(
                            node,
                            EditErrorKind::PathNotFound {
                                path: path_text.to_owned(),
                                message: format!(
                                    "index {n} is out of range: {} has {} items",
                                    at(),
                                    items.len()
                                ),
                            },
                        ));
                    }
                }
            }
            PathSeg::Select { field, value } => {
                if !matches!(t.node(node).kind, Kind::Seq { .. }) {
                    return Err(kind_err("sequence"));
                }
                let matching: Vec<NodeId> = t
                    .items(node)
                    .iter()
                    .copied()
                    .filter(|&item| {
                        let item = t.deref(item);
                        t.get(item, field)
                            .and_then(|(_, v)| t.scalar(t.deref(v)))
                            .is_some_and(|s| s == value)
                    })
                    .collect();
                match matching.as_slice() {
                    [item] => node = *item,
                    [] => {
                        return Err(ed.error(
                            node,
                            EditErrorKind::PathNotFound {
                                path: path_text.to_owned(),
                                message: format!("no item of {} has {field}={value}", at()),
                            },
                        ));
                    }
                    many => {
                        return Err(ed.error(
                            node,
                            EditErrorKind::PathNotFound {
                                path: path_text.to_owned(),
                                message: format!(
                                    "{} items of {} have {field}={value}; the selector must pick one",
                                    many.len(),
                                    at()
                                ),
                            },
                        ));
                    }
                }
            }
        }
    }
    Ok(Resolved::Found(node))
}

/// The keys of `segs[from..]` when they are all plain keys (what the engine may create).
pub(crate) fn creatable_keys(segs: &[PathSeg]) -> Option<Vec<String>> {
    segs.iter()
        .map(|s| match s {
            PathSeg::Key(k) => Some(k.clone()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_yq_paths() {
        assert_eq!(
            parse(".spec.template.spec.containers[0].image").unwrap(),
            vec![
                PathSeg::Key("spec".into()),
                PathSeg::Key("template".into()),
                PathSeg::Key("spec".into()),
                PathSeg::Key("containers".into()),
                PathSeg::Index(0),
                PathSeg::Key("image".into()),
            ]
        );
        assert_eq!(
            parse(r#".metadata.annotations["app.kubernetes.io/version"]"#).unwrap(),
            vec![
                PathSeg::Key("metadata".into()),
                PathSeg::Key("annotations".into()),
                PathSeg::Key("app.kubernetes.io/version".into()),
            ]
        );
        assert_eq!(
            parse(".containers[name=app].image").unwrap(),
            vec![
                PathSeg::Key("containers".into()),
                PathSeg::Select {
                    field: "name".into(),
                    value: "app".into()
                },
                PathSeg::Key("image".into()),
            ]
        );
        assert_eq!(
            parse(".a[-1]").unwrap(),
            vec![PathSeg::Key("a".into()), PathSeg::Index(-1)]
        );
    }

    #[test]
    fn syntax_errors_name_the_column() {
        let column = |p: &str| match parse(p) {
            Err(EditErrorKind::PathSyntax { column, .. }) => column,
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(column("image.tag"), 1);
        assert_eq!(column(".image..tag"), 8);
        assert_eq!(column(".a[0"), 5);
        assert_eq!(column(".a[\"x"), 4);
        assert_eq!(column(".a[name]"), 8);
        assert_eq!(column("."), 1);
    }
}
