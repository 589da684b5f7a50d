//! The document model every edit kind works on: the YAML stream parsed into a node tree whose
//! nodes carry byte offsets into the source, so edits can splice exactly the bytes of a value.
//!
//! Aliases are kept as references to their anchor and never expanded: the tree's size is linear
//! in the input, and the expanded size is only computed (with a cap) to refuse alias bombs that
//! would hurt the tools reading the file after tug.

use crate::error::{EditError, EditErrorKind, Pos};
use crate::value::{self, ScalarKind};
use saphyr_parser::{Event, Marker, Parser, ScalarStyle};
use std::collections::{HashMap, HashSet};

/// Largest file the engine edits.
pub(crate) const MAX_INPUT_BYTES: usize = 8 * 1024 * 1024;
/// Deepest nesting of collections.
pub(crate) const MAX_DEPTH: usize = 256;
/// Most parser events (nodes) in one file.
pub(crate) const MAX_EVENTS: usize = 1_000_000;
/// Most nodes the file may expand to once every alias is replaced by its anchored node.
pub(crate) const MAX_EXPANDED_NODES: u64 = 1_000_000;

pub(crate) type NodeId = usize;

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Scalar {
        value: String,
        style: ScalarStyle,
        tag: Option<String>,
    },
    Map {
        entries: Vec<(NodeId, NodeId)>,
        flow: bool,
        tag: Option<String>,
    },
    Seq {
        items: Vec<NodeId>,
        flow: bool,
        tag: Option<String>,
    },
    Alias {
        name: String,
        target: NodeId,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub kind: Kind,
    pub anchor: Option<String>,
    /// Byte offset of the node's first character, properties (`&anchor`, `!tag`) included.
    pub start: usize,
    /// Byte offset of the content: a scalar's first character (quote, `|`), a flow collection's
    /// bracket, a block mapping's first key, a block sequence's first `-`.
    pub content: usize,
    /// Byte offset just after the node's last character.
    pub end: usize,
    /// 1-based line and 0-based character column of `start`.
    pub line: usize,
    pub col: usize,
    /// Character column of a block collection's entries (its keys or dashes).
    pub indent: usize,
    pub parent: Option<NodeId>,
    /// Node count once aliases are expanded (saturating).
    expanded: u64,
}

impl Node {
    pub(crate) fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Scalar { .. } => "scalar",
            Kind::Map { .. } => "mapping",
            Kind::Seq { .. } => "sequence",
            Kind::Alias { .. } => "alias",
        }
    }

    pub(crate) fn is_flow(&self) -> bool {
        matches!(
            self.kind,
            Kind::Map { flow: true, .. } | Kind::Seq { flow: true, .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

pub(crate) type Path = Vec<Seg>;

pub(crate) fn display_path(path: &[Seg]) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k)
                if !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_alphanumeric() || c == '_' || c == '-') =>
            {
                out.push('.');
                out.push_str(k);
            }
            Seg::Key(k) => out.push_str(&format!("[{k:?}]")),
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// A parsed YAML stream.
#[derive(Debug)]
pub(crate) struct Tree<'a> {
    pub src: &'a str,
    pub nodes: Vec<Node>,
    /// Root node of each document, in order.
    pub docs: Vec<NodeId>,
    /// Anchor names some alias refers to.
    pub referenced_anchors: HashSet<String>,
}

/// Converts the parser's character offsets to byte offsets.
struct CharToByte {
    /// Byte offset of every character, plus the end; empty when the source is ASCII.
    table: Vec<usize>,
}

impl CharToByte {
    fn new(src: &str) -> Self {
        if src.is_ascii() {
            return CharToByte { table: Vec::new() };
        }
        let mut table: Vec<usize> = src.char_indices().map(|(i, _)| i).collect();
        table.push(src.len());
        CharToByte { table }
    }

    fn byte(&self, m: Marker) -> usize {
        if self.table.is_empty() {
            m.index()
        } else {
            self.table
                .get(m.index())
                .copied()
                .unwrap_or_else(|| self.table.last().copied().unwrap_or(0))
        }
    }
}

enum Frame {
    Map {
        id: NodeId,
        key: Option<NodeId>,
        /// The scalar keys seen so far, with the line each is on.
        seen: HashMap<String, usize>,
    },
    Seq {
        id: NodeId,
    },
}

impl<'a> Tree<'a> {
    /// Parses `src` (already UTF-8 checked, without BOM).
    pub(crate) fn parse(file: &str, src: &'a str) -> Result<Tree<'a>, EditError> {
        if src.len() > MAX_INPUT_BYTES {
            return Err(EditError::new(
                file,
                EditErrorKind::TooLarge(format!(
                    "{} bytes, the limit is {MAX_INPUT_BYTES}",
                    src.len()
                )),
            ));
        }
        let offsets = CharToByte::new(src);
        let mut tree = Tree {
            src,
            nodes: Vec::new(),
            docs: Vec::new(),
            referenced_anchors: HashSet::new(),
        };
        let mut anchors: HashMap<usize, NodeId> = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut parser = Parser::new_from_str(src);
        let mut events = 0usize;
        let err_at = |m: Marker, kind: EditErrorKind| {
            EditError::at(
                file,
                Some(Pos {
                    line: m.line(),
                    column: m.col() + 1,
                }),
                kind,
            )
        };
        while let Some(next) = parser.next_event() {
            let (event, span) = next.map_err(|e| {
                err_at(*e.marker(), EditErrorKind::InvalidYaml(e.info().to_owned()))
            })?;
            events += 1;
            if events > MAX_EVENTS {
                return Err(err_at(
                    span.start,
                    EditErrorKind::TooLarge(format!("more than {MAX_EVENTS} YAML nodes")),
                ));
            }
            let start = offsets.byte(span.start);
            let end = offsets.byte(span.end);
            let completed = match event {
                Event::StreamEnd => break,
                Event::StreamStart
                | Event::Nothing
                | Event::DocumentStart(_)
                | Event::DocumentEnd => None,
                Event::Alias(anchor_id) => {
                    let Some(&target) = anchors.get(&anchor_id) else {
                        return Err(err_at(
                            span.start,
                            EditErrorKind::InvalidYaml("alias to an unknown anchor".into()),
                        ));
                    };
                    let target_node = &tree.nodes[target];
                    let name = target_node.anchor.clone().unwrap_or_default();
                    if target_node.expanded == 0 {
                        return Err(err_at(span.start, EditErrorKind::RecursiveAlias(name)));
                    }
                    let expanded = target_node.expanded;
                    tree.referenced_anchors.insert(name.clone());
                    Some(tree.push(Node {
                        kind: Kind::Alias { name, target },
                        anchor: None,
                        start,
                        content: start,
                        end,
                        line: span.start.line(),
                        col: span.start.col(),
                        indent: span.start.col(),
                        parent: None,
                        expanded,
                    }))
                }
                Event::Scalar(value, style, anchor_id, tag) => {
                    let (content, anchor) = properties(src, start, anchor_id > 0);
                    let (content, end) = scalar_extent(src, &value, style, start, content, end);
                    let id = tree.push(Node {
                        kind: Kind::Scalar {
                            value: value.into_owned(),
                            style,
                            tag: tag.map(|t| format!("{}{}", t.handle, t.suffix)),
                        },
                        anchor,
                        start: content.min(start),
                        content,
                        end,
                        line: span.start.line(),
                        col: span.start.col(),
                        indent: span.start.col(),
                        parent: None,
                        expanded: 1,
                    });
                    if anchor_id > 0 {
                        anchors.insert(anchor_id, id);
                    }
                    Some(id)
                }
                Event::MappingStart(anchor_id, ref tag)
                | Event::SequenceStart(anchor_id, ref tag) => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(err_at(
                            span.start,
                            EditErrorKind::TooLarge(format!("nesting deeper than {MAX_DEPTH}")),
                        ));
                    }
                    let (_, anchor) = properties(src, start, anchor_id > 0);
                    let flow = matches!(src.as_bytes().get(end.wrapping_sub(1)), Some(b'{' | b'['))
                        && end > start;
                    let tag = tag.as_ref().map(|t| format!("{}{}", t.handle, t.suffix));
                    let is_map = matches!(event, Event::MappingStart(..));
                    let kind = if is_map {
                        Kind::Map {
                            entries: Vec::new(),
                            flow,
                            tag,
                        }
                    } else {
                        Kind::Seq {
                            items: Vec::new(),
                            flow,
                            tag,
                        }
                    };
                    let content = if flow { end - 1 } else { end };
                    let id = tree.push(Node {
                        kind,
                        anchor,
                        start,
                        content,
                        end,
                        line: span.start.line(),
                        col: span.start.col(),
                        indent: if flow {
                            span.end.col().saturating_sub(1)
                        } else {
                            span.end.col()
                        },
                        parent: None,
                        // Zero until the collection closes: an alias to it before then is recursive.
                        expanded: 0,
                    });
                    if anchor_id > 0 {
                        anchors.insert(anchor_id, id);
                    }
                    stack.push(if is_map {
                        Frame::Map {
                            id,
                            key: None,
                            seen: HashMap::new(),
                        }
                    } else {
                        Frame::Seq { id }
                    });
                    None
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    let Some(frame) = stack.pop() else {
                        return Err(err_at(
                            span.start,
                            EditErrorKind::InvalidYaml("unbalanced collection end".into()),
                        ));
                    };
                    let id = match frame {
                        Frame::Map { id, .. } | Frame::Seq { id } => id,
                    };
                    tree.check_complex_keys(file, id)?;
                    let children: Vec<NodeId> = match &tree.nodes[id].kind {
                        Kind::Map { entries, .. } => {
                            entries.iter().flat_map(|&(k, v)| [k, v]).collect()
                        }
                        Kind::Seq { items, .. } => items.clone(),
                        _ => Vec::new(),
                    };
                    let mut expanded: u64 = 1;
                    for &c in &children {
                        expanded = expanded.saturating_add(tree.nodes[c].expanded);
                    }
                    if expanded > MAX_EXPANDED_NODES {
                        return Err(err_at(
                            span.start,
                            EditErrorKind::AliasBomb {
                                limit: MAX_EXPANDED_NODES as usize,
                            },
                        ));
                    }
                    let node_end = if tree.nodes[id].is_flow() {
                        end
                    } else {
                        children
                            .last()
                            .map_or(tree.nodes[id].content, |&c| tree.nodes[c].end)
                    };
                    // A block sequence's event marks its first item, not the `-` (indentless
                    // sequences especially): find the dash to know the entries' column.
                    let dash = match (&tree.nodes[id].kind, children.first()) {
                        (Kind::Seq { flow: false, .. }, Some(&first)) => {
                            dash_before(src, tree.nodes[first].start)
                        }
                        _ => None,
                    };
                    let node = &mut tree.nodes[id];
                    node.expanded = expanded;
                    node.end = node_end;
                    if let Some((offset, col)) = dash {
                        node.content = offset;
                        node.indent = col;
                    }
                    Some(id)
                }
            };
            let Some(id) = completed else {
                continue;
            };
            match stack.last_mut() {
                None => tree.docs.push(id),
                Some(Frame::Map { id: map, key, seen }) => {
                    let map = *map;
                    tree.nodes[id].parent = Some(map);
                    match key.take() {
                        None => {
                            // Readers disagree on duplicate keys (Helm, Go and PyYAML keep the
                            // last value), so an edit of either could deploy nothing.
                            if let Kind::Scalar { value, .. } = &tree.nodes[id].kind {
                                let line = tree.nodes[id].line;
                                if let Some(&first_line) = seen.get(value) {
                                    let n = &tree.nodes[id];
                                    return Err(EditError::at(
                                        file,
                                        Some(Pos {
                                            line: n.line,
                                            column: n.col + 1,
                                        }),
                                        EditErrorKind::DuplicateKey {
                                            key: value.clone(),
                                            first_line,
                                        },
                                    ));
                                }
                                seen.insert(value.clone(), line);
                            }
                            *key = Some(id);
                        }
                        Some(k) => {
                            if let Kind::Map { entries, .. } = &mut tree.nodes[map].kind {
                                entries.push((k, id));
                            }
                        }
                    }
                }
                Some(Frame::Seq { id: seq }) => {
                    let seq = *seq;
                    tree.nodes[id].parent = Some(seq);
                    if let Kind::Seq { items, .. } = &mut tree.nodes[seq].kind {
                        items.push(id);
                    }
                }
            }
        }
        let total = tree
            .docs
            .iter()
            .fold(0u64, |acc, &d| acc.saturating_add(tree.nodes[d].expanded));
        if total > MAX_EXPANDED_NODES {
            return Err(EditError::new(
                file,
                EditErrorKind::AliasBomb {
                    limit: MAX_EXPANDED_NODES as usize,
                },
            ));
        }
        Ok(tree)
    }

    /// Refuses a mapping whose collection or alias keys (`? {a: 1}`, `*x`) repeat; scalar keys
    /// are checked as they are read.
    fn check_complex_keys(&self, file: &str, map: NodeId) -> Result<(), EditError> {
        let mut seen: HashMap<String, NodeId> = HashMap::new();
        for &(k, _) in self.entries(map) {
            if matches!(self.nodes[k].kind, Kind::Scalar { .. }) {
                continue;
            }
            let mut canonical = String::new();
            self.canonical(k, &mut canonical);
            if let Some(&first) = seen.get(&canonical) {
                let text: String = self.key_text(k).chars().take(40).collect();
                return Err(EditError::at(
                    file,
                    self.pos(k),
                    EditErrorKind::DuplicateKey {
                        key: text,
                        first_line: self.nodes[first].line,
                    },
                ));
            }
            seen.insert(canonical, k);
        }
        Ok(())
    }

    /// A text equal for two nodes exactly when the verifier finds them equal (scalars by
    /// value, tag and resolved kind; aliases by name; anchors and tags included).
    fn canonical(&self, id: NodeId, out: &mut String) {
        let n = &self.nodes[id];
        if let Some(anchor) = &n.anchor {
            out.push_str(&format!("&{}:{anchor}", anchor.len()));
        }
        let tag = |t: &Option<String>| {
            t.as_ref()
                .map_or(String::new(), |t| format!("!{}:{t}", t.len()))
        };
        match &n.kind {
            Kind::Scalar { value, tag: t, .. } => {
                let kind = self.scalar_kind(id);
                out.push_str(&format!("s{}{kind:?}:{}:{value}", tag(t), value.len()));
            }
            Kind::Alias { name, .. } => out.push_str(&format!("*{}:{name}", name.len())),
            Kind::Map {
                entries, tag: t, ..
            } => {
                out.push_str(&format!("{{{}", tag(t)));
                for &(k, v) in entries {
                    self.canonical(k, out);
                    self.canonical(v, out);
                }
                out.push('}');
            }
            Kind::Seq { items, tag: t, .. } => {
                out.push_str(&format!("[{}", tag(t)));
                for &i in items {
                    self.canonical(i, out);
                }
                out.push(']');
            }
        }
    }

    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    pub(crate) fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    pub(crate) fn pos(&self, id: NodeId) -> Option<Pos> {
        let n = &self.nodes[id];
        Some(Pos {
            line: n.line,
            column: n.col + 1,
        })
    }

    /// The scalar's value, or `None` for other nodes.
    pub(crate) fn scalar(&self, id: NodeId) -> Option<&str> {
        match &self.nodes[id].kind {
            Kind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    pub(crate) fn scalar_kind(&self, id: NodeId) -> Option<ScalarKind> {
        match &self.nodes[id].kind {
            Kind::Scalar { value, style, tag } => {
                Some(value::resolve(value, *style, tag.as_deref()))
            }
            _ => None,
        }
    }

    pub(crate) fn entries(&self, id: NodeId) -> &[(NodeId, NodeId)] {
        match &self.nodes[id].kind {
            Kind::Map { entries, .. } => entries,
            _ => &[],
        }
    }

    pub(crate) fn items(&self, id: NodeId) -> &[NodeId] {
        match &self.nodes[id].kind {
            Kind::Seq { items, .. } => items,
            _ => &[],
        }
    }

    pub(crate) fn is_map(&self, id: NodeId) -> bool {
        matches!(self.nodes[id].kind, Kind::Map { .. })
    }

    /// The entry of `map` whose key is the scalar `key` (direct entries only, no merges).
    pub(crate) fn get(&self, map: NodeId, key: &str) -> Option<(NodeId, NodeId)> {
        self.entries(map)
            .iter()
            .copied()
            .find(|&(k, _)| self.scalar(k) == Some(key))
    }

    /// Whether `map` has a `<<` merge key, whose merged entries the engine does not edit.
    pub(crate) fn has_merge(&self, map: NodeId) -> bool {
        self.entries(map).iter().any(|&(k, _)| self.is_merge_key(k))
    }

    /// Whether `key` is a `<<` merge key (plain and untagged; `"<<"` is an ordinary key).
    pub(crate) fn is_merge_key(&self, key: NodeId) -> bool {
        matches!(&self.nodes[key].kind, Kind::Scalar { value, style: ScalarStyle::Plain, tag: None } if value == "<<")
    }

    /// Whether `id` is inside the value of a `<<` merge key.
    pub(crate) fn under_merge(&self, id: NodeId) -> bool {
        let mut cur = id;
        while let Some(parent) = self.nodes[cur].parent {
            if self
                .entries(parent)
                .iter()
                .any(|&(k, v)| v == cur && self.is_merge_key(k))
            {
                return true;
            }
            cur = parent;
        }
        false
    }

    /// The node an alias stands for (itself for other nodes).
    pub(crate) fn deref(&self, id: NodeId) -> NodeId {
        match &self.nodes[id].kind {
            Kind::Alias { target, .. } => *target,
            _ => id,
        }
    }

    /// The path from the document root to `id`.
    pub(crate) fn path_of(&self, id: NodeId) -> Path {
        let mut path = Vec::new();
        let mut cur = id;
        while let Some(parent) = self.nodes[cur].parent {
            match &self.nodes[parent].kind {
                Kind::Map { entries, .. } => {
                    if let Some(&(k, _)) = entries.iter().find(|&&(_, v)| v == cur) {
                        path.push(Seg::Key(self.key_text(k)));
                    }
                }
                Kind::Seq { items, .. } => {
                    if let Some(i) = items.iter().position(|&n| n == cur) {
                        path.push(Seg::Index(i));
                    }
                }
                _ => {}
            }
            cur = parent;
        }
        path.reverse();
        path
    }

    /// The document index of a node.
    pub(crate) fn doc_of(&self, id: NodeId) -> usize {
        let mut cur = id;
        while let Some(parent) = self.nodes[cur].parent {
            cur = parent;
        }
        self.docs.iter().position(|&d| d == cur).unwrap_or(0)
    }

    pub(crate) fn key_text(&self, key: NodeId) -> String {
        match &self.nodes[key].kind {
            Kind::Scalar { value, .. } => value.clone(),
            Kind::Alias { name, .. } => format!("*{name}"),
            _ => self.src[self.nodes[key].start..self.nodes[key].end].to_owned(),
        }
    }

    /// The nearest node from `id` up to its document root whose anchor an alias refers to.
    pub(crate) fn shared_anchor(&self, id: NodeId) -> Option<&str> {
        if self.referenced_anchors.is_empty() {
            return None;
        }
        let mut cur = Some(id);
        while let Some(n) = cur {
            if let Some(anchor) = &self.nodes[n].anchor
                && self.referenced_anchors.contains(anchor)
            {
                return Some(anchor);
            }
            cur = self.nodes[n].parent;
        }
        None
    }

    /// An anchor inside the subtree of `id` that an alias refers to.
    pub(crate) fn shared_anchor_below(&self, id: NodeId) -> Option<&str> {
        if self.referenced_anchors.is_empty() {
            return None;
        }
        let node = &self.nodes[id];
        if let Some(anchor) = &node.anchor
            && self.referenced_anchors.contains(anchor)
        {
            return Some(anchor);
        }
        match &node.kind {
            Kind::Map { entries, .. } => entries.iter().find_map(|&(k, v)| {
                self.shared_anchor_below(k)
                    .or_else(|| self.shared_anchor_below(v))
            }),
            Kind::Seq { items, .. } => items.iter().find_map(|&i| self.shared_anchor_below(i)),
            _ => None,
        }
    }

    /// The file's line ending, from its first line.
    pub(crate) fn newline(&self) -> &'static str {
        match self.src.find('\n') {
            Some(i) if i > 0 && self.src.as_bytes()[i - 1] == b'\r' => "\r\n",
            _ => "\n",
        }
    }

    /// The file's indentation step: how much deeper a nested block mapping is than its parent.
    pub(crate) fn indent_step(&self) -> usize {
        let mut seq_step = None;
        for node in &self.nodes {
            let Some(parent) = node.parent else { continue };
            let parent = &self.nodes[parent];
            if parent.is_flow() || node.is_flow() || !matches!(parent.kind, Kind::Map { .. }) {
                continue;
            }
            if node.line == parent.line {
                continue;
            }
            match node.kind {
                Kind::Map { .. } if node.indent > parent.indent => {
                    return node.indent - parent.indent;
                }
                Kind::Seq { .. } if node.indent > parent.indent && seq_step.is_none() => {
                    seq_step = Some(node.indent - parent.indent);
                }
                _ => {}
            }
        }
        seq_step.unwrap_or(2)
    }

    /// Whether block sequences under a mapping key sit at the key's column (`key:\n- a`).
    pub(crate) fn indentless_sequences(&self) -> bool {
        for node in &self.nodes {
            let (Kind::Seq { flow: false, .. }, Some(parent)) = (&node.kind, node.parent) else {
                continue;
            };
            let parent = &self.nodes[parent];
            if matches!(parent.kind, Kind::Map { flow: false, .. }) {
                return node.indent == parent.indent;
            }
        }
        false
    }

    /// Byte offset just after the line break ending the line that contains `pos` (or the end
    /// of the source when the last line has no line break).
    pub(crate) fn after_line(&self, pos: usize) -> usize {
        match self.src[pos..].find('\n') {
            Some(i) => pos + i + 1,
            None => self.src.len(),
        }
    }

    /// Byte offset of the start of the line containing `pos`.
    pub(crate) fn line_start(&self, pos: usize) -> usize {
        self.src[..pos].rfind('\n').map_or(0, |i| i + 1)
    }

    /// Whether only spaces precede `pos` on its line.
    pub(crate) fn first_on_line(&self, pos: usize) -> bool {
        self.src[self.line_start(pos)..pos]
            .bytes()
            .all(|b| b == b' ' || b == b'\t')
    }
}

/// The `-` introducing a block sequence item that starts at `item`: its byte offset and column.
fn dash_before(src: &str, item: usize) -> Option<(usize, usize)> {
    let b = src.as_bytes();
    let mut i = item;
    while i > 0 && matches!(b[i - 1], b' ' | b'\t') {
        i -= 1;
    }
    if i == 0 || b[i - 1] != b'-' {
        return None;
    }
    let dash = i - 1;
    let line_start = src[..dash].rfind('\n').map_or(0, |n| n + 1);
    Some((dash, src[line_start..dash].chars().count()))
}

/// Skips a node's properties (`&anchor`, `!tag`) at `start`; returns the content offset and the
/// anchor name.
fn properties(src: &str, start: usize, has_anchor: bool) -> (usize, Option<String>) {
    let b = src.as_bytes();
    let mut i = start;
    let mut anchor = None;
    loop {
        match b.get(i) {
            Some(b'&') | Some(b'!') => {
                let is_anchor = b[i] == b'&';
                let s = i;
                if b.get(i + 1) == Some(&b'<') {
                    while i < b.len() && b[i] != b'>' {
                        i += 1;
                    }
                    i = (i + 1).min(b.len());
                } else {
                    while i < b.len()
                        && !matches!(
                            b[i],
                            b' ' | b'\t' | b'\r' | b'\n' | b',' | b'[' | b']' | b'{' | b'}'
                        )
                    {
                        i += 1;
                    }
                }
                if is_anchor && has_anchor {
                    anchor = Some(src[s + 1..i].to_owned());
                }
                // Whitespace and comments between properties and content.
                loop {
                    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
                        i += 1;
                    }
                    if b.get(i) == Some(&b'#') {
                        while i < b.len() && b[i] != b'\n' {
                            i += 1;
                        }
                    } else {
                        break;
                    }
                }
            }
            _ => return (i, anchor),
        }
    }
}

/// The exact byte range of a scalar's text. The parser's spans are not exact for quoted scalars
/// (they run on to the next token) nor block scalars (they start at the content, after the
/// header), so those are found in the source.
fn scalar_extent(
    src: &str,
    value: &str,
    style: ScalarStyle,
    start: usize,
    content: usize,
    span_end: usize,
) -> (usize, usize) {
    let b = src.as_bytes();
    match style {
        ScalarStyle::Plain => {
            if value.is_empty() {
                // An empty scalar has no text; it "ends" where it starts.
                (content.min(span_end), content.min(span_end).max(start))
            } else {
                (content, span_end.max(content))
            }
        }
        ScalarStyle::SingleQuoted => {
            let mut i = content + 1;
            while i < b.len() {
                if b[i] == b'\'' {
                    if b.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    return (content, i + 1);
                }
                i += 1;
            }
            (content, b.len())
        }
        ScalarStyle::DoubleQuoted => {
            let mut i = content + 1;
            while i < b.len() {
                match b[i] {
                    b'\\' => i += 2,
                    b'"' => return (content, i + 1),
                    _ => i += 1,
                }
            }
            (content, b.len())
        }
        ScalarStyle::Literal | ScalarStyle::Folded => {
            let header = if matches!(b.get(content), Some(b'|' | b'>')) {
                content
            } else {
                find_block_header(src, start).unwrap_or(start)
            };
            let mut end = span_end.min(b.len());
            while end > header && matches!(b[end - 1], b' ' | b'\t' | b'\r' | b'\n') {
                end -= 1;
            }
            (header, end.max(header + 1).min(b.len()))
        }
    }
}

/// Finds the `|`/`>` header of a block scalar whose content starts at `content_start`: it is on
/// the last non-blank line before the content.
fn find_block_header(src: &str, content_start: usize) -> Option<usize> {
    let mut line_start = src[..content_start].rfind('\n').map_or(0, |i| i + 1);
    loop {
        if line_start == 0 {
            return None;
        }
        let prev_end = line_start - 1;
        let prev_start = src[..prev_end].rfind('\n').map_or(0, |i| i + 1);
        let line = &src[prev_start..prev_end];
        if line.trim().is_empty() {
            line_start = prev_start;
            continue;
        }
        let lb = line.as_bytes();
        for (i, &c) in lb.iter().enumerate() {
            if c != b'|' && c != b'>' {
                continue;
            }
            if i > 0 && !matches!(lb[i - 1], b' ' | b'\t') {
                continue;
            }
            let mut j = i + 1;
            while j < lb.len() && matches!(lb[j], b'0'..=b'9' | b'+' | b'-') {
                j += 1;
            }
            let rest = line[j..].trim_start();
            let rest = rest.trim_end_matches('\r');
            if rest.is_empty()
                || (rest.starts_with('#') && j < lb.len() && matches!(lb[j], b' ' | b'\t'))
            {
                return Some(prev_start + i);
            }
        }
        return None;
    }
}
