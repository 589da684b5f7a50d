//! Properties of every edit kind, for the fuzz targets in `fuzz_targets/`.
//!
//! Each input is one header line that describes the edit, then the file's bytes. Every property
//! is checked with an independent reading of the YAML: saphyr's event parser and the small tree
//! built here, never tug's own document model or verifier.
//!
//! * never panics or hangs (libFuzzer's own checks);
//! * invalid input (not UTF-8, not YAML) never yields a changed file;
//! * an unchanged result is the input byte for byte, a changed one differs;
//! * the output parses, with the same number of documents (one more only when a file without a
//!   document gets its first) and the same BOM;
//! * an edit that succeeds changes only its target (per edit kind, below);
//! * keys tug creates are strings for YAML 1.2 and YAML 1.1 readers;
//! * applying the same edit to the output changes nothing.

use saphyr_parser::{Event, Parser, ScalarStyle};
use tug_edit::{Edit, ImageSpec, ValueType};

const BOM: &[u8] = "\u{feff}".as_bytes();
/// Deeper trees are not judged (the engine refuses them; dropping them here would recurse).
const MAX_DEPTH: usize = 300;
const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];
const ANNOTATION_MAPS: [&str; 3] = ["annotations", "commonAnnotations", "podAnnotations"];

/// A scalar's meaning for a YAML 1.2 core-schema reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool,
    Int,
    Float,
    Str,
    Tagged(String),
}

/// A YAML node as a reader sees it (aliases by anchor id, never expanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub anchor: usize,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Scalar {
        text: String,
        kind: Kind,
        plain: bool,
    },
    Map(Vec<(Node, Node)>),
    Seq(Vec<Node>),
    Alias(usize),
}

enum Parsed {
    Docs(Vec<Node>),
    Invalid,
    TooDeep,
}

fn core_kind(v: &str) -> Kind {
    match v {
        "" | "~" | "null" | "Null" | "NULL" => return Kind::Null,
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => return Kind::Bool,
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => return Kind::Float,
        _ => {}
    }
    let all = |s: &str, f: fn(u8) -> bool| !s.is_empty() && s.bytes().all(f);
    if let Some(o) = v.strip_prefix("0o")
        && all(o, |b| (b'0'..=b'7').contains(&b))
    {
        return Kind::Int;
    }
    if let Some(x) = v.strip_prefix("0x")
        && all(x, |b| b.is_ascii_hexdigit())
    {
        return Kind::Int;
    }
    let unsigned = v.strip_prefix(['-', '+']).unwrap_or(v);
    if all(unsigned, |b| b.is_ascii_digit()) {
        return Kind::Int;
    }
    if is_decimal_float(unsigned, false) {
        return Kind::Float;
    }
    Kind::Str
}

/// `( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`, with `_` allowed in digits
/// when `underscores`.
fn is_decimal_float(v: &str, underscores: bool) -> bool {
    let digit = |c: char| c.is_ascii_digit() || (underscores && c == '_');
    let (mantissa, exponent) = match v.find(['e', 'E']) {
        Some(i) => (&v[..i], Some(&v[i + 1..])),
        None => (v, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let int_ok = int.chars().all(digit);
    let frac_ok = frac.is_none_or(|f| f.chars().all(digit));
    let some_digit = int.chars().any(|c| c.is_ascii_digit())
        || frac.is_some_and(|f| f.chars().any(|c| c.is_ascii_digit()));
    let exp_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
    });
    int_ok && frac_ok && some_digit && exp_ok
}

/// Whether a YAML 1.1 reader (PyYAML, Go's yaml.v2) reads this plain scalar as anything but the
/// same string.
fn yaml11_not_a_string(v: &str) -> bool {
    // The exact spellings of YAML 1.1's bool, null, merge, value, inf and nan types.
    const WORDS: [&str; 45] = [
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
        "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL", "~", "",
        "<<", "=", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF",
        ".nan", ".NaN", ".NAN", "y", "Y", "n", "N",
    ];
    if WORDS.contains(&v) {
        return true;
    }
    let unsigned = v.strip_prefix(['-', '+']).unwrap_or(v);
    let digits = |s: &str, ok: fn(char) -> bool| !s.is_empty() && s.chars().all(ok);
    if let Some(b) = unsigned.strip_prefix("0b")
        && digits(b, |c| matches!(c, '0' | '1' | '_'))
    {
        return true;
    }
    if let Some(x) = unsigned.strip_prefix("0x")
        && digits(x, |c| c.is_ascii_hexdigit() || c == '_')
    {
        return true;
    }
    if unsigned.starts_with(|c: char| c.is_ascii_digit())
        && digits(unsigned, |c| c.is_ascii_digit() || c == '_')
    {
        return true;
    }
    // Sexagesimal integers and floats: `[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?`.
    if let Some((first, rest)) = unsigned.split_once(':') {
        let base60 = |p: &str| {
            (1..=2).contains(&p.len())
                && p.bytes().all(|b| b.is_ascii_digit())
                && (p.len() == 1 || p.as_bytes()[0] <= b'5')
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let (last, middle) = parts.split_last().unwrap_or((&"", &[]));
        let (last_int, fraction) = match last.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (*last, None),
        };
        if first.starts_with(|c: char| c.is_ascii_digit())
            && digits(first, |c| c.is_ascii_digit() || c == '_')
            && middle.iter().all(|p| base60(p))
            && base60(last_int)
            && fraction.is_none_or(|f| f.chars().all(|c| c.is_ascii_digit() || c == '_'))
        {
            return true;
        }
    }
    if is_decimal_float(unsigned, true) && unsigned.chars().any(|c| c.is_ascii_digit()) {
        return true;
    }
    // Timestamps start with a date: YYYY-M[M]-D[D].
    let mut parts = v.splitn(3, '-');
    let (Some(y), Some(m), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let day_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    y.len() == 4
        && y.bytes().all(|b| b.is_ascii_digit())
        && (1..=2).contains(&m.len())
        && m.bytes().all(|b| b.is_ascii_digit())
        && (1..=2).contains(&day_len)
}

fn parse(text: &str) -> Parsed {
    enum Frame {
        Map(usize, Vec<(Node, Node)>, Option<Node>),
        Seq(usize, Vec<Node>),
    }
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        let Ok((event, _)) = next else {
            return Parsed::Invalid;
        };
        let done = match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentStart(_) | Event::DocumentEnd => {
                None
            }
            Event::Alias(id) => Some(Node {
                anchor: 0,
                value: Value::Alias(id),
            }),
            Event::Scalar(text, style, anchor, tag) => {
                let kind = match &tag {
                    Some(t) if !(t.handle == "!" && t.suffix.is_empty()) => {
                        Kind::Tagged(format!("{}{}", t.handle, t.suffix))
                    }
                    Some(_) => Kind::Str,
                    None if style == ScalarStyle::Plain => core_kind(&text),
                    None => Kind::Str,
                };
                Some(Node {
                    anchor,
                    value: Value::Scalar {
                        text: text.into_owned(),
                        kind,
                        plain: style == ScalarStyle::Plain,
                    },
                })
            }
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Parsed::TooDeep;
                }
                stack.push(if matches!(event, Event::MappingStart(..)) {
                    Frame::Map(anchor, Vec::new(), None)
                } else {
                    Frame::Seq(anchor, Vec::new())
                });
                None
            }
            Event::MappingEnd | Event::SequenceEnd => match stack.pop() {
                Some(Frame::Map(anchor, entries, _)) => Some(Node {
                    anchor,
                    value: Value::Map(entries),
                }),
                Some(Frame::Seq(anchor, items)) => Some(Node {
                    anchor,
                    value: Value::Seq(items),
                }),
                None => return Parsed::Invalid,
            },
        };
        let Some(node) = done else { continue };
        match stack.last_mut() {
            None => docs.push(node),
            Some(Frame::Seq(_, items)) => items.push(node),
            Some(Frame::Map(_, entries, key)) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
    // Anchors by the order of the referenced ones: removing an unreferenced anchor (which tug may
    // do) shifts the parser's numbering but changes no reader's view.
    let mut referenced = Vec::new();
    docs.iter().for_each(|d| aliases(d, &mut referenced));
    referenced.sort_unstable();
    referenced.dedup();
    for d in &mut docs {
        renumber(d, &referenced);
    }
    Parsed::Docs(docs)
}

fn aliases(n: &Node, out: &mut Vec<usize>) {
    match &n.value {
        Value::Alias(id) => out.push(*id),
        Value::Map(entries) => entries.iter().for_each(|(k, v)| {
            aliases(k, out);
            aliases(v, out);
        }),
        Value::Seq(items) => items.iter().for_each(|i| aliases(i, out)),
        Value::Scalar { .. } => {}
    }
}

/// Referenced anchors become 1, 2, …; unreferenced ones `usize::MAX` (an anchor, but no one's).
fn renumber(n: &mut Node, referenced: &[usize]) {
    let new_id = |id: usize| match referenced.binary_search(&id) {
        Ok(i) => i + 1,
        Err(_) => usize::MAX,
    };
    if n.anchor != 0 {
        n.anchor = new_id(n.anchor);
    }
    match &mut n.value {
        Value::Alias(id) => *id = new_id(*id),
        Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            renumber(k, referenced);
            renumber(v, referenced);
        }),
        Value::Seq(items) => items.iter_mut().for_each(|i| renumber(i, referenced)),
        Value::Scalar { .. } => {}
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// One place where two trees differ: a changed node, an added or a removed entry.
#[derive(Debug)]
pub struct Diff<'a> {
    pub path: Vec<Seg>,
    pub before: Option<&'a Node>,
    pub after: Option<&'a Node>,
}

fn key_seg(k: &Node) -> Seg {
    match &k.value {
        Value::Scalar { text, .. } => Seg::Key(text.clone()),
        _ => Seg::Key("?complex".into()),
    }
}

fn diff<'a>(b: &'a Node, a: &'a Node, path: &mut Vec<Seg>, out: &mut Vec<Diff<'a>>) {
    let here = |out: &mut Vec<Diff<'a>>, path: &[Seg]| {
        out.push(Diff {
            path: path.to_vec(),
            before: Some(b),
            after: Some(a),
        })
    };
    if b.anchor != a.anchor {
        return here(out, path);
    }
    match (&b.value, &a.value) {
        (Value::Map(be), Value::Map(ae)) => {
            for (bk, bv) in be {
                path.push(key_seg(bk));
                match ae.iter().find(|(ak, _)| ak == bk) {
                    Some((_, av)) => diff(bv, av, path, out),
                    None => out.push(Diff {
                        path: path.clone(),
                        before: Some(bv),
                        after: None,
                    }),
                }
                path.pop();
            }
            for (ak, av) in ae {
                if !be.iter().any(|(bk, _)| bk == ak) {
                    path.push(key_seg(ak));
                    out.push(Diff {
                        path: path.clone(),
                        before: None,
                        after: Some(av),
                    });
                    path.pop();
                }
            }
        }
        (Value::Seq(bi), Value::Seq(ai)) => {
            for i in 0..bi.len().max(ai.len()) {
                path.push(Seg::Index(i));
                match (bi.get(i), ai.get(i)) {
                    (Some(bv), Some(av)) => diff(bv, av, path, out),
                    (before, after) => out.push(Diff {
                        path: path.clone(),
                        before,
                        after,
                    }),
                }
                path.pop();
            }
        }
        (
            Value::Scalar {
                text: bt, kind: bk, ..
            },
            Value::Scalar {
                text: at, kind: ak, ..
            },
        ) if bt == at && bk == ak => {}
        (Value::Alias(x), Value::Alias(y)) if x == y => {}
        _ => here(out, path),
    }
}

/// Every key of mappings the edit added (whole new entries, keys inside new subtrees, a
/// collection that replaced a scalar) must read back as a string in YAML 1.2 and 1.1.
fn check_created_keys(d: &Diff<'_>) {
    let new_subtree = match d.before.map(|n| &n.value) {
        None | Some(Value::Scalar { .. }) => true,
        Some(_) => false,
    };
    if new_subtree && let Some(after) = d.after {
        check_keys_below(after);
    }
}

fn check_keys_below(n: &Node) {
    match &n.value {
        Value::Map(entries) => {
            for (k, v) in entries {
                check_key(k);
                check_keys_below(v);
            }
        }
        Value::Seq(items) => items.iter().for_each(check_keys_below),
        _ => {}
    }
}

fn check_key(k: &Node) {
    if let Value::Scalar { text, kind, plain } = &k.value {
        assert_eq!(*kind, Kind::Str, "created key {text:?} is not a string");
        assert!(
            !(*plain && yaml11_not_a_string(text)),
            "created plain key {text:?} is not a string for YAML 1.1 readers"
        );
    } else {
        panic!("created key is not a scalar: {k:?}");
    }
}

/// The key node of the entry a diff added, looked up in the parent mapping of `after`.
fn added_keys<'a>(root: &'a Node, diffs: &[Diff<'a>]) -> Vec<&'a Node> {
    let mut keys = Vec::new();
    for d in diffs {
        if d.before.is_some() {
            continue;
        }
        let Some((Seg::Key(last), parent)) = d.path.split_last() else {
            continue;
        };
        let Some(map) = locate(root, parent) else {
            continue;
        };
        if let Value::Map(entries) = &map.value
            && let Some((k, _)) = entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Value::Scalar { text, .. } if text == last))
        {
            keys.push(k);
        }
    }
    keys
}

fn locate<'a>(root: &'a Node, path: &[Seg]) -> Option<&'a Node> {
    let mut node = root;
    for seg in path {
        node = match (seg, &node.value) {
            (Seg::Key(k), Value::Map(entries)) => entries
                .iter()
                .find(|(kn, _)| key_seg(kn) == Seg::Key(k.clone()))
                .map(|(_, v)| v)?,
            (Seg::Index(i), Value::Seq(items)) => items.get(*i)?,
            _ => return None,
        };
    }
    Some(node)
}

/// The repository of an image reference (`repo[:tag][@digest]`, a registry port is not a tag).
fn repository(image: &str) -> &str {
    let without_digest = image.split_once('@').map_or(image, |(r, _)| r);
    let slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    match without_digest[slash..].rfind(':') {
        Some(i) => &without_digest[..slash + i],
        None => without_digest,
    }
}

fn scalar_text(n: Option<&Node>) -> Option<&str> {
    match n.map(|n| &n.value) {
        Some(Value::Scalar { text, .. }) => Some(text),
        _ => None,
    }
}

/// What an edit may change, checked on each document's differences.
enum Target<'s> {
    Kustomize(&'s ImageSpec),
    Manifest(&'s ImageSpec),
    Set { value: &'s str, ty: ValueType },
    Helm(&'s ImageSpec),
    Redeploy { key: &'s str, value: &'s str },
}

/// Runs the edit and checks every property.
fn check(file_name: &str, input: &[u8], edit: &Edit, target: Target<'_>) {
    let Ok(outcome) = tug_edit::apply(file_name, input, edit) else {
        return;
    };
    if !outcome.changed {
        assert_eq!(
            outcome.output, input,
            "an unchanged result differs from the input"
        );
        return;
    }
    assert_ne!(outcome.output, input, "a changed result equals the input");
    let before = std::str::from_utf8(input).ok().map(|t| {
        let t = t.strip_prefix('\u{feff}').unwrap_or(t);
        parse(t)
    });
    let before = match before {
        None => panic!("a file that is not UTF-8 was changed"),
        Some(Parsed::Invalid) => panic!("a file that is not valid YAML was changed"),
        Some(Parsed::TooDeep) => return,
        Some(Parsed::Docs(docs)) => docs,
    };
    assert_eq!(
        outcome.output.starts_with(BOM),
        input.starts_with(BOM),
        "the BOM changed"
    );
    let out_text = std::str::from_utf8(&outcome.output).expect("the output is UTF-8");
    let out_text = out_text.strip_prefix('\u{feff}').unwrap_or(out_text);
    let after = match parse(out_text) {
        Parsed::Docs(docs) => docs,
        Parsed::Invalid => panic!("the output does not parse:\n{out_text}"),
        Parsed::TooDeep => return,
    };
    let created_document = before.is_empty()
        || (before.len() == 1
            && matches!(&before[0].value, Value::Scalar { text, kind: Kind::Null, plain: true } if text.is_empty()));
    if before.is_empty() {
        assert_eq!(
            after.len(),
            1,
            "a file without a document got {} documents",
            after.len()
        );
        assert!(
            matches!(target, Target::Set { .. } | Target::Redeploy { .. }),
            "only set and redeploy create a document"
        );
    } else {
        assert_eq!(before.len(), after.len(), "the number of documents changed");
    }
    let empty = Node {
        anchor: 0,
        value: Value::Map(Vec::new()),
    };
    for (i, a) in after.iter().enumerate() {
        let b = if created_document { &empty } else { &before[i] };
        let mut diffs = Vec::new();
        diff(b, a, &mut Vec::new(), &mut diffs);
        if diffs.is_empty() {
            continue;
        }
        for d in &diffs {
            check_created_keys(d);
        }
        for k in added_keys(a, &diffs) {
            check_key(k);
        }
        check_target(&target, i, a, &diffs);
    }
    // Idempotent: the same edit on the output changes nothing.
    let second = tug_edit::apply(file_name, &outcome.output, edit)
        .unwrap_or_else(|e| panic!("the second run failed: {e}\n{out_text}"));
    assert!(
        !second.changed && second.output == outcome.output,
        "the second run changed the file again: {}\n{out_text}",
        second.summary
    );
}

fn check_target(target: &Target<'_>, doc: usize, after_root: &Node, diffs: &[Diff<'_>]) {
    match target {
        Target::Kustomize(spec) => {
            assert_eq!(
                doc,
                0,
                "a kustomize image edit changed document {}",
                doc + 1
            );
            for d in diffs {
                assert_eq!(
                    d.path.first(),
                    Some(&Seg::Key("images".into())),
                    "a kustomize image edit changed {:?}",
                    d.path
                );
            }
            let images = locate(after_root, &[Seg::Key("images".into())]);
            let Some(Value::Seq(entries)) = images.map(|n| &n.value) else {
                panic!("no images list after a kustomize image edit");
            };
            assert!(
                entries.iter().any(|e| {
                    scalar_text(locate(e, &[Seg::Key("name".into())])) == Some(spec.name.as_str())
                }),
                "no images entry named {} after the edit",
                spec.name
            );
        }
        Target::Manifest(spec) => {
            for d in diffs {
                let n = d.path.len();
                let shape = n >= 3
                    && d.path[n - 1] == Seg::Key("image".into())
                    && matches!(d.path[n - 2], Seg::Index(_))
                    && matches!(&d.path[n - 3], Seg::Key(k) if CONTAINER_LISTS.contains(&k.as_str()));
                assert!(shape, "a manifest image edit changed {:?}", d.path);
                let old = scalar_text(d.before).expect("an image was a scalar");
                let new = scalar_text(d.after).expect("an image is a scalar");
                let old_repo = repository(old);
                assert!(
                    old_repo == spec.name || spec.new_name.as_deref() == Some(old_repo),
                    "image {old} does not match {}",
                    spec.name
                );
                let want = match spec.new_name.as_deref() {
                    Some(tug_edit::PRESERVE) | None => old_repo,
                    Some(n) => n,
                };
                assert_eq!(repository(new), want, "image {old} became {new}");
            }
            // No matching image is left behind when the edit renames.
            if let Some(n) = spec.new_name.as_deref()
                && n != tug_edit::PRESERVE
                && n != spec.name
            {
                let mut left = Vec::new();
                container_images(after_root, false, &mut left);
                assert!(
                    !left.iter().any(|i| repository(i) == spec.name),
                    "an image of {} was left unchanged: {left:?}",
                    spec.name
                );
            }
        }
        Target::Set { value, ty } => {
            assert_eq!(
                diffs.len(),
                1,
                "set changed {} places: {diffs:?}",
                diffs.len()
            );
            let d = &diffs[0];
            let leaf = chain_leaf(d.after.expect("set removed nothing"));
            if *ty == ValueType::String
                && let Value::Scalar { text, kind, .. } = &leaf.value
            {
                assert_eq!(text, value, "set wrote another string");
                assert!(
                    matches!(kind, Kind::Str | Kind::Tagged(_)),
                    "--type string wrote a {kind:?}"
                );
            }
        }
        Target::Helm(spec) => {
            let prefix = common_prefix(diffs);
            for d in diffs {
                let named = |k: &str| ["repository", "name", "tag", "digest"].contains(&k);
                match d.path.last() {
                    Some(Seg::Key(k)) if named(k) && d.path.len() == prefix.len() + 1 => {}
                    Some(Seg::Key(k)) if named(k) && diffs.len() == 1 => {}
                    _ => {
                        // The `repo:tag` string layout.
                        assert_eq!(diffs.len(), 1, "helm changed {:?}", d.path);
                        let old = scalar_text(d.before).expect("a string image");
                        let old_repo = repository(old);
                        assert!(
                            old_repo == spec.name || spec.new_name.as_deref() == Some(old_repo),
                            "helm changed image {old}, not {}",
                            spec.name
                        );
                    }
                }
            }
        }
        Target::Redeploy { key, value } => {
            for d in diffs {
                let mut path = d.path.clone();
                let mut node = d.after.expect("a redeploy removes nothing");
                let created_from = path.len();
                while let Value::Map(entries) = &node.value {
                    let [(k, v)] = entries.as_slice() else {
                        panic!("a redeploy wrote a mapping of {} entries", entries.len());
                    };
                    path.push(key_seg(k));
                    node = v;
                }
                assert_eq!(scalar_text(Some(node)), Some(*value), "annotation value");
                let n = path.len();
                assert!(
                    n >= 2
                        && path[n - 1] == Seg::Key((*key).to_owned())
                        && matches!(&path[n - 2], Seg::Key(k) if ANNOTATION_MAPS.contains(&k.as_str())),
                    "a redeploy changed {path:?}"
                );
                for seg in &path[created_from.min(n)..] {
                    let Seg::Key(k) = seg else {
                        panic!("a redeploy created a list item")
                    };
                    assert!(
                        k == key || k == "metadata" || ANNOTATION_MAPS.contains(&k.as_str()),
                        "a redeploy created key {k}"
                    );
                }
            }
        }
    }
}

fn chain_leaf(mut node: &Node) -> &Node {
    while let Value::Map(entries) = &node.value {
        match entries.as_slice() {
            [(_, v)] => node = v,
            _ => panic!("set wrote a mapping of {} entries", entries.len()),
        }
    }
    node
}

fn common_prefix(diffs: &[Diff<'_>]) -> Vec<Seg> {
    let mut prefix = diffs[0].path.clone();
    for d in &diffs[1..] {
        let n = prefix
            .iter()
            .zip(&d.path)
            .take_while(|(a, b)| a == b)
            .count();
        prefix.truncate(n);
    }
    prefix
}

fn container_images(n: &Node, in_list: bool, out: &mut Vec<String>) {
    match &n.value {
        Value::Map(entries) => {
            for (k, v) in entries {
                let key = scalar_text(Some(k)).unwrap_or("");
                if in_list
                    && key == "image"
                    && let Some(image) = scalar_text(Some(v))
                {
                    out.push(image.to_owned());
                }
                let list = CONTAINER_LISTS.contains(&key) && matches!(v.value, Value::Seq(_));
                container_images(v, list, out);
            }
        }
        Value::Seq(items) => {
            // Items of a container list are containers; deeper lists are not.
            for item in items {
                container_images(item, in_list, out);
            }
        }
        _ => {}
    }
}

/// The header line (as text) and the file's bytes.
fn split(data: &[u8]) -> Option<(&str, &[u8])> {
    let newline = data.iter().position(|&b| b == b'\n')?;
    let header = std::str::from_utf8(&data[..newline]).ok()?;
    Some((header, &data[newline + 1..]))
}

/// `SPEC\nFILE`: `kustomize edit set image SPEC` on a kustomization.
pub fn kustomize_image(data: &[u8]) {
    let Some((header, file)) = split(data) else {
        return;
    };
    let Ok(spec) = ImageSpec::parse(header) else {
        return;
    };
    let edit = Edit::KustomizeImage(spec.clone());
    check("kustomization.yaml", file, &edit, Target::Kustomize(&spec));
}

/// `SPEC\nFILE`: container images in manifests.
pub fn manifest_image(data: &[u8]) {
    let Some((header, file)) = split(data) else {
        return;
    };
    let Ok(spec) = ImageSpec::parse(header) else {
        return;
    };
    let edit = Edit::ManifestImage(spec.clone());
    check("manifest.yaml", file, &edit, Target::Manifest(&spec));
}

/// `PATH\tVALUE[\tTYPE]\nFILE` (`\n` in VALUE written as the two characters `\` `n`).
pub fn yq_set(data: &[u8]) {
    let Some((header, file)) = split(data) else {
        return;
    };
    let mut parts = header.split('\t');
    let (Some(path), Some(value)) = (parts.next(), parts.next()) else {
        return;
    };
    let value = value.replace("\\n", "\n");
    let ty = parts
        .next()
        .and_then(|t| t.parse::<ValueType>().ok())
        .unwrap_or_default();
    let edit = Edit::Set {
        path: path.to_owned(),
        value: value.clone(),
        value_type: ty,
    };
    check(
        "values.yaml",
        file,
        &edit,
        Target::Set { value: &value, ty },
    );
}

/// `PATH\tSPEC\nFILE`: a Helm values image.
pub fn helm_image(data: &[u8]) {
    let Some((header, file)) = split(data) else {
        return;
    };
    let Some((path, spec)) = header.split_once('\t') else {
        return;
    };
    let Ok(spec) = ImageSpec::parse(spec) else {
        return;
    };
    let edit = Edit::HelmImage {
        path: path.to_owned(),
        image: spec.clone(),
    };
    check("values.yaml", file, &edit, Target::Helm(&spec));
}

/// `FILENAME\tKEY\tVALUE[\tWORKLOAD]\nFILE`: the redeploy annotation.
pub fn redeploy(data: &[u8]) {
    let Some((header, file)) = split(data) else {
        return;
    };
    let parts: Vec<&str> = header.split('\t').collect();
    let (name, key, value, workload) = match parts.as_slice() {
        [n, k, v] => (*n, *k, *v, None),
        [n, k, v, w] => (*n, *k, *v, Some((*w).to_owned())),
        _ => return,
    };
    let name = match name {
        "kustomization.yaml" | "Kustomization" | "values.yaml" => name,
        _ => "manifest.yaml",
    };
    let edit = Edit::Redeploy {
        key: key.to_owned(),
        value: value.to_owned(),
        workload,
    };
    check(name, file, &edit, Target::Redeploy { key, value });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolvers() {
        for v in [
            "1", "0x1F", "0o7", "-3", "1.5", ".5", "1e3", ".inf", "null", "True",
        ] {
            assert_ne!(core_kind(v), Kind::Str, "{v}");
        }
        for v in ["v1", "1.2.3", "yes", "0b1", "1_000", "1:20"] {
            assert_eq!(core_kind(v), Kind::Str, "{v}");
        }
        for v in [
            "yes",
            "On",
            "1_000",
            "0b1",
            "1:20",
            "012",
            "2026-01-01",
            "<<",
            "=",
            "1.5",
        ] {
            assert!(yaml11_not_a_string(v), "{v}");
        }
        for v in [
            "v1", "1.2.3", "app", "a=b", "1a", "abc-1", "oN", "nO", "yES", "2026-01",
        ] {
            assert!(!yaml11_not_a_string(v), "{v}");
        }
    }
}
