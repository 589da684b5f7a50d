//! Splicing edits into the source. The [`Editor`] turns tree-level operations (replace a
//! scalar, add entries to a mapping, append to a sequence, remove an entry) into byte splices
//! that match the file's layout, and records for each what the verifier must find afterwards.

use crate::doc::{Kind, NodeId, Path, Seg, Tree, display_path};
use crate::error::{EditError, EditErrorKind};
use crate::value::{self, NewScalar, ScalarContext, ScalarKind};
use saphyr_parser::ScalarStyle;

/// A node the edit writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NewNode {
    Scalar(NewScalar),
    Map(Vec<(String, NewNode)>),
    Seq(Vec<NewNode>),
}

impl NewNode {
    /// A chain of single-key mappings ending in `leaf`: `a: {b: {c: leaf}}`.
    pub(crate) fn chain(keys: &[String], leaf: NewNode) -> NewNode {
        keys.iter()
            .rev()
            .fold(leaf, |inner, k| NewNode::Map(vec![(k.clone(), inner)]))
    }
}

/// What the verifier must find at a changed path once the edit is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expect {
    Absent,
    Node(NewNode),
}

/// One path the edit changes, in document `doc`; everything else must stay equal.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub doc: usize,
    pub path: Path,
    pub expect: Expect,
}

#[derive(Debug)]
struct Splice {
    start: usize,
    end: usize,
    text: String,
}

pub(crate) struct Editor<'t, 'a> {
    pub tree: &'t Tree<'a>,
    pub file: &'t str,
    splices: Vec<Splice>,
    pub changes: Vec<Change>,
    /// What the edit added where nothing was (see [`crate::Outcome::created`]).
    pub created: Vec<String>,
    newline: &'static str,
    step: usize,
    indentless: bool,
}

impl<'t, 'a> Editor<'t, 'a> {
    pub(crate) fn new(file: &'t str, tree: &'t Tree<'a>) -> Self {
        Editor {
            tree,
            file,
            splices: Vec::new(),
            changes: Vec::new(),
            created: Vec::new(),
            newline: tree.newline(),
            step: tree.indent_step(),
            indentless: tree.indentless_sequences(),
        }
    }

    pub(crate) fn error(&self, node: NodeId, kind: EditErrorKind) -> EditError {
        EditError::at(self.file, self.tree.pos(node), kind)
    }

    /// A human name for a node: its path in the document.
    pub(crate) fn describe(&self, node: NodeId) -> String {
        let path = display_path(&self.tree.path_of(node));
        if self.tree.docs.len() > 1 {
            format!("{path} (document {})", self.tree.doc_of(node) + 1)
        } else {
            path
        }
    }

    /// The keys of a mapping, for messages: `image, replicas`, or `no keys`.
    pub(crate) fn key_names(&self, map: NodeId) -> String {
        let keys: Vec<&str> = self
            .tree
            .entries(map)
            .iter()
            .filter_map(|&(k, _)| self.tree.scalar(k))
            .collect();
        if keys.is_empty() {
            "no keys".to_owned()
        } else {
            keys.join(", ")
        }
    }

    /// Refuses to edit inside an alias or an anchored node that aliases share.
    pub(crate) fn check_editable(&self, node: NodeId) -> Result<(), EditError> {
        if let Kind::Alias { name, .. } = &self.tree.node(node).kind {
            return Err(self.error(
                node,
                EditErrorKind::ThroughAlias {
                    what: self.describe(node),
                    alias: name.clone(),
                },
            ));
        }
        if self.tree.under_merge(node) {
            return Err(self.error(
                node,
                EditErrorKind::ThroughMerge {
                    what: self.describe(node),
                },
            ));
        }
        if let Some(anchor) = self.tree.shared_anchor(node) {
            return Err(self.error(
                node,
                EditErrorKind::SharedAnchor {
                    what: self.describe(node),
                    anchor: anchor.to_owned(),
                },
            ));
        }
        Ok(())
    }

    fn record(&mut self, node: NodeId, path: Path, expect: Expect) {
        let doc = self.tree.doc_of(node);
        self.changes.push(Change { doc, path, expect });
    }

    /// Whether `node` is a scalar with no text at all (`key:` with nothing after it).
    pub(crate) fn is_empty_null(&self, node: NodeId) -> bool {
        let n = self.tree.node(node);
        matches!(&n.kind, Kind::Scalar { value, style: ScalarStyle::Plain, tag: None } if value.is_empty())
            && n.anchor.is_none()
    }

    /// Replaces the scalar `node` by `new`, keeping its quoting style when that can represent
    /// the value. Returns whether anything changed (setting the same value is a no-op).
    pub(crate) fn set_scalar(&mut self, node: NodeId, new: &NewScalar) -> Result<bool, EditError> {
        self.check_editable(node)?;
        let n = self.tree.node(node);
        let Kind::Scalar { value, style, .. } = &n.kind else {
            return Err(self.error(
                node,
                EditErrorKind::NotAScalar {
                    what: self.describe(node),
                    found: n.kind_name(),
                },
            ));
        };
        let kind = self.tree.scalar_kind(node);
        // A custom tag (`!cat meow`) stays in the file: a string set there keeps it.
        let tagged;
        let new = match (&kind, &new.kind) {
            (Some(ScalarKind::Tagged(tag)), ScalarKind::Str) => {
                tagged = NewScalar {
                    value: new.value.clone(),
                    kind: ScalarKind::Tagged(tag.clone()),
                };
                &tagged
            }
            _ => new,
        };
        if let Some(kind) = &kind
            && new.matches(value, kind)
        {
            return Ok(false);
        }
        let cx = self.scalar_context(node, Some(*style));
        let text = value::render_scalar(new, cx);
        let was_block = matches!(style, ScalarStyle::Literal | ScalarStyle::Folded);
        if self.is_empty_null(node) {
            let at = self.after_colon(node)?;
            self.splice(at, at, format!(" {text}"));
        } else if let (true, Some((header, body))) = (was_block, text.split_once('\n')) {
            // Block to block: replace the header indicator and the content lines, keeping a
            // comment after the header.
            let src = self.tree.src.as_bytes();
            let mut header_end = n.content + 1;
            while header_end < src.len() && matches!(src[header_end], b'0'..=b'9' | b'+' | b'-') {
                header_end += 1;
            }
            let header = header.trim_end_matches('\r');
            let body_start = self.tree.after_line(n.content);
            self.splice(n.content, header_end, header.to_owned());
            self.splice(body_start, n.end.max(body_start), body.to_owned());
        } else {
            self.splice(n.content, n.end, text);
        }
        self.record(
            node,
            self.tree.path_of(node),
            Expect::Node(NewNode::Scalar(new.clone())),
        );
        Ok(true)
    }

    /// Puts a whole node where an empty value (`key:`) stands.
    pub(crate) fn fill_empty(&mut self, node: NodeId, new: NewNode) -> Result<(), EditError> {
        self.check_editable(node)?;
        if !self.is_empty_null(node) {
            return Err(self.error(
                node,
                EditErrorKind::Unsupported(format!(
                    "{} already has a value; the engine does not replace it by a collection",
                    self.describe(node)
                )),
            ));
        }
        let at = self.after_colon(node)?;
        let parent = self.tree.node(node).parent;
        let in_flow = parent.is_some_and(|p| self.tree.node(p).is_flow());
        let text = match &new {
            NewNode::Scalar(s) => {
                let cx = self.scalar_context(node, None);
                format!(" {}", value::render_scalar(s, cx))
            }
            _ if in_flow => format!(" {}", self.render_flow(&new)),
            NewNode::Map(entries) => {
                let col = parent.map_or(0, |p| self.tree.node(p).indent) + self.step;
                let mut out = self.newline.to_owned();
                self.render_entries(&mut out, entries, col);
                trim_newline(&mut out, self.newline);
                out
            }
            NewNode::Seq(items) => {
                let key_col = parent.map_or(0, |p| self.tree.node(p).indent);
                let dash = if self.indentless {
                    key_col
                } else {
                    key_col + self.step
                };
                let mut out = self.newline.to_owned();
                self.render_items(&mut out, items, dash, dash + 2);
                trim_newline(&mut out, self.newline);
                out
            }
        };
        self.splice(at, at, text);
        self.record(node, self.tree.path_of(node), Expect::Node(new));
        Ok(())
    }

    /// Whether the file holds no document to edit: nothing but comments and blank lines, or a
    /// single empty document (`---` alone).
    pub(crate) fn has_no_document(&self) -> bool {
        match self.tree.docs.as_slice() {
            [] => true,
            [root] => self.is_empty_null(*root),
            _ => false,
        }
    }

    /// Writes a root mapping with `entries` into a file that [has no
    /// document](Self::has_no_document), after its comments.
    pub(crate) fn create_root(&mut self, entries: Vec<(String, NewNode)>) -> Result<(), EditError> {
        let mut text = String::new();
        self.render_entries(&mut text, &entries, 0);
        let src = self.tree.src;
        if src.is_empty() {
            self.splice(0, 0, text);
        } else {
            self.insert_lines(src.len(), text);
        }
        self.changes.push(Change {
            doc: 0,
            path: Vec::new(),
            expect: Expect::Node(NewNode::Map(entries)),
        });
        Ok(())
    }

    /// Adds entries at the end of `map`, in its layout.
    pub(crate) fn insert_entries(
        &mut self,
        map: NodeId,
        entries: Vec<(String, NewNode)>,
    ) -> Result<(), EditError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.check_editable(map)?;
        let n = self.tree.node(map);
        let Kind::Map {
            entries: existing,
            flow,
            ..
        } = &n.kind
        else {
            return Err(self.error(
                map,
                EditErrorKind::NotAScalar {
                    what: self.describe(map),
                    found: n.kind_name(),
                },
            ));
        };
        if *flow {
            let mut text = String::new();
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 || !existing.is_empty() {
                    text.push_str(", ");
                }
                text.push_str(&self.render_key(k));
                text.push_str(": ");
                text.push_str(&self.render_flow(v));
            }
            let at = match existing.last() {
                Some(&(_, v)) => self.tree.node(v).end,
                None => n.content + 1,
            };
            self.splice(at, at, text);
        } else {
            let mut text = String::new();
            self.render_entries(&mut text, &entries, n.indent);
            let at = self.tree.after_line(n.end);
            self.insert_lines(at, text);
        }
        let base = self.tree.path_of(map);
        for (k, v) in entries {
            let mut path = base.clone();
            path.push(Seg::Key(k));
            self.record(map, path, Expect::Node(v));
        }
        Ok(())
    }

    /// Appends items to the sequence `seq`, mirroring the layout of its last item.
    pub(crate) fn append_items(&mut self, seq: NodeId, new: Vec<NewNode>) -> Result<(), EditError> {
        self.check_editable(seq)?;
        let n = self.tree.node(seq);
        let Kind::Seq { items, flow, .. } = &n.kind else {
            return Err(self.error(
                seq,
                EditErrorKind::Unsupported(format!("{} is not a sequence", self.describe(seq))),
            ));
        };
        let count = items.len();
        if *flow {
            let mut text = String::new();
            for (i, item) in new.iter().enumerate() {
                if i > 0 || !items.is_empty() {
                    text.push_str(", ");
                }
                text.push_str(&self.render_flow(item));
            }
            let at = match items.last() {
                Some(&last) => self.tree.node(last).end,
                None => n.content + 1,
            };
            self.splice(at, at, text);
        } else {
            let inner = match items.last().map(|&i| self.tree.node(i)) {
                Some(last)
                    if matches!(last.kind, Kind::Map { flow: false, .. })
                        && last.indent > n.indent =>
                {
                    last.indent
                }
                _ => n.indent + 2,
            };
            let mut text = String::new();
            self.render_items(&mut text, &new, n.indent, inner);
            let at = self.tree.after_line(n.end);
            self.insert_lines(at, text);
        }
        let base = self.tree.path_of(seq);
        for (i, item) in new.into_iter().enumerate() {
            let mut path = base.clone();
            path.push(Seg::Index(count + i));
            self.record(seq, path, Expect::Node(item));
        }
        Ok(())
    }

    /// Removes the entry with key `key` from `map`.
    pub(crate) fn remove_entry(&mut self, map: NodeId, key: &str) -> Result<(), EditError> {
        self.check_editable(map)?;
        let entries = self.tree.entries(map);
        let Some(index) = entries
            .iter()
            .position(|&(k, _)| self.tree.scalar(k) == Some(key))
        else {
            return Ok(());
        };
        let (k, v) = entries[index];
        if let Some(anchor) = self.tree.shared_anchor_below(v) {
            return Err(self.error(
                v,
                EditErrorKind::SharedAnchor {
                    what: format!("{} (removed)", self.describe(v)),
                    anchor: anchor.to_owned(),
                },
            ));
        }
        let key_start = self.tree.node(k).start;
        let value_end = self.tree.node(v).end;
        let next = entries
            .get(index + 1)
            .map(|&(nk, _)| self.tree.node(nk).start);
        let (start, end) = if self.tree.node(map).is_flow() {
            match (next, index.checked_sub(1).map(|p| entries[p].1)) {
                (Some(next), _) => (key_start, next),
                (None, Some(prev_value)) => (self.tree.node(prev_value).end, value_end),
                (None, None) => (key_start, value_end),
            }
        } else if self.tree.first_on_line(key_start) {
            (
                self.tree.line_start(key_start),
                self.tree.after_line(value_end),
            )
        } else if let Some(next) = next {
            // The entry shares its line with a `- `: the next entry moves up to take its place.
            (key_start, next)
        } else {
            return Err(self.error(
                k,
                EditErrorKind::Unsupported(format!(
                    "cannot remove {key}: it is the only entry of {}",
                    self.describe(map)
                )),
            ));
        };
        self.splice(start, end, String::new());
        let mut path = self.tree.path_of(map);
        path.push(Seg::Key(key.to_owned()));
        self.record(map, path, Expect::Absent);
        Ok(())
    }

    /// Sets `keys` below `map` to `leaf`, creating missing mappings. Refuses to go through
    /// aliases, merge keys and scalars. Returns whether anything changed.
    pub(crate) fn set_in(
        &mut self,
        map: NodeId,
        keys: &[String],
        leaf: &NewScalar,
    ) -> Result<bool, EditError> {
        let mut node = map;
        for (i, key) in keys.iter().enumerate() {
            if let Kind::Alias { name, .. } = &self.tree.node(node).kind {
                return Err(self.error(
                    node,
                    EditErrorKind::ThroughAlias {
                        what: self.describe(node),
                        alias: name.clone(),
                    },
                ));
            }
            if self.is_empty_null(node) {
                self.fill_empty(
                    node,
                    NewNode::chain(&keys[i..], NewNode::Scalar(leaf.clone())),
                )?;
                return Ok(true);
            }
            match &self.tree.node(node).kind {
                Kind::Map { .. } => {}
                Kind::Scalar { .. } => {
                    return Err(self.error(
                        node,
                        EditErrorKind::PathThroughScalar {
                            path: format!(
                                "{}.{}",
                                display_path(&self.tree.path_of(node)).trim_end_matches('.'),
                                keys[i..].join(".")
                            ),
                            at: self.describe(node),
                        },
                    ));
                }
                other => {
                    let found = match other {
                        Kind::Seq { .. } => "sequence",
                        _ => "alias",
                    };
                    return Err(self.error(
                        node,
                        EditErrorKind::path_kind(
                            &keys.join("."),
                            &self.describe(node),
                            "mapping",
                            found,
                        ),
                    ));
                }
            }
            match self.tree.get(node, key) {
                Some((_, value)) => node = value,
                None => {
                    if self.tree.has_merge(node) {
                        return Err(self.error(
                            node,
                            EditErrorKind::ThroughMerge {
                                what: format!("{} key {key}", self.describe(node)),
                            },
                        ));
                    }
                    let rest = NewNode::chain(&keys[i + 1..], NewNode::Scalar(leaf.clone()));
                    self.insert_entries(node, vec![(key.clone(), rest)])?;
                    return Ok(true);
                }
            }
        }
        if self.is_empty_null(node) && leaf.kind != ScalarKind::Null {
            self.fill_empty(node, NewNode::Scalar(leaf.clone()))?;
            return Ok(true);
        }
        self.set_scalar(node, leaf)
    }

    /// Applies the splices; returns the new text.
    pub(crate) fn finish(mut self) -> Result<(String, Vec<Change>), EditError> {
        let src = self.tree.src;
        self.splices.sort_by_key(|s| (s.start, s.end));
        let mut out = String::with_capacity(src.len() + 64);
        let mut at = 0;
        for s in &self.splices {
            if s.start < at {
                return Err(EditError::new(
                    self.file,
                    EditErrorKind::Verification(format!(
                        "two edits overlap at byte {}; refusing to guess",
                        s.start
                    )),
                ));
            }
            out.push_str(&src[at..s.start]);
            out.push_str(&s.text);
            at = s.end;
        }
        out.push_str(&src[at..]);
        Ok((out, self.changes))
    }

    fn splice(&mut self, start: usize, end: usize, text: String) {
        self.splices.push(Splice { start, end, text });
    }

    /// Inserts whole lines at `at`, a line start (or the end of a file without final newline).
    fn insert_lines(&mut self, at: usize, mut text: String) {
        let src = self.tree.src;
        if at == src.len() && !src.is_empty() && !src.ends_with('\n') {
            // Keep the file's missing final newline missing.
            trim_newline(&mut text, self.newline);
            text.insert_str(0, self.newline);
        }
        self.splice(at, at, text);
    }

    /// The offset just after the `:` of an empty value's entry.
    fn after_colon(&self, node: NodeId) -> Result<usize, EditError> {
        let n = self.tree.node(node);
        let b = self.tree.src.as_bytes();
        let mut i = n.content;
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        if b.get(i) == Some(&b':') {
            return Ok(i + 1);
        }
        Err(self.error(
            node,
            EditErrorKind::Unsupported(format!(
                "cannot locate the empty value of {}",
                self.describe(node)
            )),
        ))
    }

    fn scalar_context(
        &self,
        node: NodeId,
        existing: Option<ScalarStyle>,
    ) -> ScalarContext<'static> {
        let parent = self.tree.node(node).parent.map(|p| self.tree.node(p));
        ScalarContext {
            flow: parent.is_some_and(|p| p.is_flow()),
            existing,
            block_indent: parent.map_or(0, |p| p.indent) + self.step,
            newline: self.newline,
        }
    }

    fn render_key(&self, key: &str) -> String {
        if value::plain_string_is_safe(key, true) {
            key.to_owned()
        } else {
            value::double_quoted(key)
        }
    }

    fn render_flow(&self, node: &NewNode) -> String {
        match node {
            NewNode::Scalar(s) => value::render_scalar(
                s,
                ScalarContext {
                    flow: true,
                    existing: None,
                    block_indent: 0,
                    newline: self.newline,
                },
            ),
            NewNode::Map(entries) => {
                let inner: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| format!("{}: {}", self.render_key(k), self.render_flow(v)))
                    .collect();
                format!("{{{}}}", inner.join(", "))
            }
            NewNode::Seq(items) => {
                let inner: Vec<String> = items.iter().map(|i| self.render_flow(i)).collect();
                format!("[{}]", inner.join(", "))
            }
        }
    }

    /// Block mapping entries at column `col`, each line ending with the file's line ending.
    fn render_entries(&self, out: &mut String, entries: &[(String, NewNode)], col: usize) {
        let pad = " ".repeat(col);
        for (k, v) in entries {
            out.push_str(&pad);
            out.push_str(&self.render_key(k));
            out.push(':');
            match v {
                NewNode::Scalar(s) => {
                    let cx = ScalarContext {
                        flow: false,
                        existing: None,
                        block_indent: col + self.step,
                        newline: self.newline,
                    };
                    out.push(' ');
                    out.push_str(&value::render_scalar(s, cx));
                    out.push_str(self.newline);
                }
                NewNode::Map(inner) if !inner.is_empty() => {
                    out.push_str(self.newline);
                    self.render_entries(out, inner, col + self.step);
                }
                NewNode::Seq(items) if !items.is_empty() => {
                    out.push_str(self.newline);
                    let dash = if self.indentless {
                        col
                    } else {
                        col + self.step
                    };
                    self.render_items(out, items, dash, dash + 2);
                }
                empty => {
                    out.push(' ');
                    out.push_str(&self.render_flow(empty));
                    out.push_str(self.newline);
                }
            }
        }
    }

    /// Block sequence items with their `-` at column `dash` and mapping keys at `inner`.
    fn render_items(&self, out: &mut String, items: &[NewNode], dash: usize, inner: usize) {
        for item in items {
            match item {
                NewNode::Map(entries) if !entries.is_empty() => {
                    let mut text = String::new();
                    // The first entry goes on the dash line.
                    let inner = inner.max(dash + 2);
                    self.render_entries(&mut text, entries, inner);
                    out.push_str(&" ".repeat(dash));
                    out.push('-');
                    out.push_str(&" ".repeat(inner - dash - 1));
                    out.push_str(text.get(inner..).unwrap_or(""));
                }
                NewNode::Scalar(s) => {
                    let cx = ScalarContext {
                        flow: false,
                        existing: None,
                        block_indent: dash + self.step,
                        newline: self.newline,
                    };
                    out.push_str(&" ".repeat(dash));
                    out.push_str("- ");
                    out.push_str(&value::render_scalar(s, cx));
                    out.push_str(self.newline);
                }
                other => {
                    out.push_str(&" ".repeat(dash));
                    out.push_str("- ");
                    out.push_str(&self.render_flow(other));
                    out.push_str(self.newline);
                }
            }
        }
    }
}

fn trim_newline(text: &mut String, newline: &str) {
    if text.ends_with(newline) {
        text.truncate(text.len() - newline.len());
    }
}
