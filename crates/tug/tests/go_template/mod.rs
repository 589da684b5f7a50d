//! Renders a Helm chart with the subset of Go's text/template, and of Helm's and sprig's
//! functions, that `deploy/helm/tug` uses (`deploy/helm/tug/README.md` lists it). Helm is not
//! packaged in Debian, so the chart test renders with this and checks the result with kubectl.
//!
//! Stricter than Helm where that finds mistakes: printing a missing value, reading a field of a
//! missing value, an unknown function or a malformed action is an error naming the template.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

type Result<T> = std::result::Result<T, String>;

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Print(Pipeline),
    /// `if` / `else if` branches, then the `else` branch.
    If(Vec<(Pipeline, Vec<Node>)>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
}

type Pipeline = Vec<Command>;

#[derive(Debug, Clone)]
enum Command {
    Call(String, Vec<Operand>),
    Operand(Operand),
}

#[derive(Debug, Clone)]
enum Operand {
    /// `.` and `.A.B`: fields of the current value.
    Dot(Vec<String>),
    /// `$` and `$.A.B`: fields of the chart's top-level value.
    Root(Vec<String>),
    Str(String),
    Int(i64),
    Bool(bool),
    Sub(Pipeline),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    Pipe,
    Str(String),
    Int(i64),
    Dot(Vec<String>),
    Root(Vec<String>),
    Ident(String),
}

/// Text and actions of one template, with `{{-` and `-}}` already applied to the text.
#[derive(Debug)]
enum Piece {
    Text(String),
    Action(String),
}

fn pieces(source: &str, name: &str) -> Result<Vec<Piece>> {
    let mut out = Vec::new();
    let mut rest = source;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = rest[..start].to_owned();
        if trim_next {
            text = text.trim_start().to_owned();
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("{name}: unclosed action"))?;
        let mut inner = &after[..end];
        if let Some(stripped) = inner.strip_prefix("- ") {
            text = text.trim_end().to_owned();
            inner = stripped;
        }
        trim_next = false;
        if let Some(stripped) = inner.strip_suffix(" -") {
            trim_next = true;
            inner = stripped;
        }
        out.push(Piece::Text(text));
        let inner = inner.trim();
        if !(inner.starts_with("/*") && inner.ends_with("*/")) {
            out.push(Piece::Action(inner.to_owned()));
        }
        rest = &after[end + 2..];
    }
    let mut text = rest.to_owned();
    if trim_next {
        text = text.trim_start().to_owned();
    }
    out.push(Piece::Text(text));
    Ok(out)
}

fn tokens(action: &str) -> Result<Vec<Token>> {
    let chars: Vec<char> = action.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let word_end = |mut j: usize| {
        while j < chars.len() && !chars[j].is_whitespace() && !"()|".contains(chars[j]) {
            j += 1;
        }
        j
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            '|' => {
                out.push(Token::Pipe);
                i += 1;
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(format!("unclosed string in `{action}`")),
                        Some('"') => break,
                        Some('\\') => {
                            match chars.get(i + 1) {
                                Some('n') => s.push('\n'),
                                Some('t') => s.push('\t'),
                                Some(&other) => s.push(other),
                                None => return Err(format!("bad escape in `{action}`")),
                            }
                            i += 2;
                        }
                        Some(&other) => {
                            s.push(other);
                            i += 1;
                        }
                    }
                }
                out.push(Token::Str(s));
                i += 1;
            }
            '.' | '$' => {
                let end = word_end(i);
                let word: String = chars[i..end].iter().collect();
                let fields = |path: &str| -> Vec<String> {
                    path.split('.')
                        .filter(|f| !f.is_empty())
                        .map(str::to_owned)
                        .collect()
                };
                out.push(match word.strip_prefix('$') {
                    Some(path) => Token::Root(fields(path)),
                    None => Token::Dot(fields(&word)),
                });
                i = end;
            }
            c if c.is_ascii_digit() || c == '-' => {
                let end = word_end(i);
                let word: String = chars[i..end].iter().collect();
                out.push(Token::Int(
                    word.parse()
                        .map_err(|_| format!("bad number {word} in `{action}`"))?,
                ));
                i = end;
            }
            c if c.is_alphabetic() => {
                let end = word_end(i);
                out.push(Token::Ident(chars[i..end].iter().collect()));
                i = end;
            }
            other => return Err(format!("unexpected {other:?} in `{action}`")),
        }
    }
    Ok(out)
}

fn parse_pipeline(tokens: &[Token], action: &str) -> Result<Pipeline> {
    let mut commands = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Token::Open => depth += 1,
            Token::Close => depth -= 1,
            Token::Pipe if depth == 0 => {
                commands.push(parse_command(&tokens[start..i], action)?);
                start = i + 1;
            }
            _ => {}
        }
    }
    commands.push(parse_command(&tokens[start..], action)?);
    Ok(commands)
}

fn parse_command(tokens: &[Token], action: &str) -> Result<Command> {
    let mut operands = Vec::new();
    let mut i = 0;
    let mut function = None;
    if let Some(Token::Ident(name)) = tokens.first()
        && name != "true"
        && name != "false"
    {
        function = Some(name.clone());
        i = 1;
    }
    while i < tokens.len() {
        let operand = match &tokens[i] {
            Token::Dot(path) => Operand::Dot(path.clone()),
            Token::Root(path) => Operand::Root(path.clone()),
            Token::Str(s) => Operand::Str(s.clone()),
            Token::Int(n) => Operand::Int(*n),
            Token::Ident(b) if b == "true" || b == "false" => Operand::Bool(b == "true"),
            Token::Open => {
                let mut depth = 0;
                let close = (i..tokens.len())
                    .find(|&j| {
                        match tokens[j] {
                            Token::Open => depth += 1,
                            Token::Close => depth -= 1,
                            _ => {}
                        }
                        depth == 0
                    })
                    .ok_or_else(|| format!("unbalanced ( in `{action}`"))?;
                let sub = parse_pipeline(&tokens[i + 1..close], action)?;
                i = close;
                Operand::Sub(sub)
            }
            other => return Err(format!("unexpected {other:?} in `{action}`")),
        };
        operands.push(operand);
        i += 1;
    }
    match function {
        Some(name) => Ok(Command::Call(name, operands)),
        None if operands.len() == 1 => Ok(Command::Operand(operands.remove(0))),
        None => Err(format!("`{action}`: several values without a function")),
    }
}

/// Parses pieces up to an `else` or `end` (returned as the keyword and its rest) or the end.
fn parse_nodes(
    pieces: &[Piece],
    at: &mut usize,
    defines: &mut BTreeMap<String, Vec<Node>>,
    name: &str,
) -> Result<(Vec<Node>, Option<String>)> {
    let mut nodes = Vec::new();
    while *at < pieces.len() {
        let piece = &pieces[*at];
        *at += 1;
        let action = match piece {
            Piece::Text(text) => {
                if !text.is_empty() {
                    nodes.push(Node::Text(text.clone()));
                }
                continue;
            }
            Piece::Action(action) => action,
        };
        let (keyword, rest) = action
            .split_once(char::is_whitespace)
            .map_or((action.as_str(), ""), |(k, r)| (k, r.trim()));
        let pipeline = |text: &str| parse_pipeline(&tokens(text)?, action);
        match keyword {
            "end" | "else" => return Ok((nodes, Some(action.clone()))),
            "define" => {
                let Token::Str(define) = tokens(rest)?.remove(0) else {
                    return Err(format!("{name}: `{action}` names no template"));
                };
                let (body, end) = parse_nodes(pieces, at, defines, name)?;
                if end.as_deref() != Some("end") {
                    return Err(format!("{name}: define {define} without end"));
                }
                defines.insert(define, body);
            }
            "if" => {
                let mut branches = vec![(pipeline(rest)?, Vec::new())];
                let mut otherwise = Vec::new();
                loop {
                    let (body, end) = parse_nodes(pieces, at, defines, name)?;
                    let end = end.ok_or_else(|| format!("{name}: `{action}` without end"))?;
                    match end.strip_prefix("else") {
                        Some(cond) if cond.trim().starts_with("if ") => {
                            branches.last_mut().unwrap().1 = body;
                            let cond = cond.trim().strip_prefix("if ").unwrap();
                            branches.push((pipeline(cond)?, Vec::new()));
                        }
                        Some("") => {
                            branches.last_mut().unwrap().1 = body;
                            let (body, end) = parse_nodes(pieces, at, defines, name)?;
                            if end.as_deref() != Some("end") {
                                return Err(format!("{name}: `{action}`: else without end"));
                            }
                            otherwise = body;
                            break;
                        }
                        _ => {
                            branches.last_mut().unwrap().1 = body;
                            break;
                        }
                    }
                }
                nodes.push(Node::If(branches, otherwise));
            }
            "with" | "range" => {
                let (body, end) = parse_nodes(pieces, at, defines, name)?;
                let otherwise = match end.as_deref() {
                    Some("end") => Vec::new(),
                    Some("else") => {
                        let (body, end) = parse_nodes(pieces, at, defines, name)?;
                        if end.as_deref() != Some("end") {
                            return Err(format!("{name}: `{action}`: else without end"));
                        }
                        body
                    }
                    _ => return Err(format!("{name}: `{action}` without end")),
                };
                let p = pipeline(rest)?;
                nodes.push(if keyword == "with" {
                    Node::With(p, body, otherwise)
                } else {
                    Node::Range(p, body, otherwise)
                });
            }
            _ => nodes.push(Node::Print(pipeline(action)?)),
        }
    }
    Ok((nodes, None))
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn text(value: &Value) -> Result<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Err("prints a missing value".to_owned()),
        other => Err(format!("prints a list or map: {other}")),
    }
}

fn indent(n: i64, s: &str) -> String {
    let pad = " ".repeat(usize::try_from(n).unwrap());
    format!("{pad}{}", s.replace('\n', &format!("\n{pad}")))
}

/// YAML for a value, as `toYaml` writes it (without the final newline).
fn to_yaml(value: &Value) -> String {
    let yaml = serde_saphyr::to_string(value).unwrap();
    yaml.trim_end_matches('\n').to_owned()
}

pub(crate) struct Chart {
    defines: BTreeMap<String, Vec<Node>>,
    templates: Vec<(String, Vec<Node>)>,
    root: Value,
}

impl Chart {
    /// The chart in `dir` as release `release` in `namespace`, with `overrides` merged into its
    /// values.yaml.
    pub(crate) fn load(
        dir: &Path,
        release: &str,
        namespace: &str,
        overrides: &Value,
    ) -> Result<Chart> {
        let read =
            |path: &Path| fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()));
        let meta: Value = serde_saphyr::from_str(&read(&dir.join("Chart.yaml"))?)
            .map_err(|e| format!("Chart.yaml: {e}"))?;
        let mut values: Value = serde_saphyr::from_str(&read(&dir.join("values.yaml"))?)
            .map_err(|e| format!("values.yaml: {e}"))?;
        merge(&mut values, overrides);
        let root = json!({
            "Values": values,
            "Release": {"Name": release, "Namespace": namespace, "Service": "Helm",
                        "IsInstall": true, "IsUpgrade": false, "Revision": 1},
            "Chart": {"Name": meta["name"], "Version": meta["version"],
                      "AppVersion": meta["appVersion"], "Description": meta["description"]},
        });
        let mut files: Vec<_> = fs::read_dir(dir.join("templates"))
            .map_err(|e| e.to_string())?
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        let mut defines = BTreeMap::new();
        let mut templates = Vec::new();
        for file in files {
            let name = format!(
                "{}/templates/{}",
                meta["name"].as_str().unwrap_or("chart"),
                file.file_name().unwrap().to_string_lossy()
            );
            let pieces = pieces(&read(&file)?, &name)?;
            let mut at = 0;
            let (nodes, end) = parse_nodes(&pieces, &mut at, &mut defines, &name)?;
            if let Some(end) = end {
                return Err(format!("{name}: `{end}` without its start"));
            }
            let file_name = file.file_name().unwrap().to_string_lossy().into_owned();
            if !file_name.starts_with('_')
                && (file_name.ends_with(".yaml") || file_name.ends_with(".yml"))
            {
                templates.push((name, nodes));
            }
        }
        Ok(Chart {
            defines,
            templates,
            root,
        })
    }

    /// Every template rendered, as `helm template` prints them: documents with a `# Source:`
    /// line, templates that render to nothing left out.
    pub(crate) fn render(&self) -> Result<String> {
        let mut out = String::new();
        for (name, nodes) in &self.templates {
            let text = self
                .nodes(nodes, &self.root)
                .map_err(|e| format!("{name}: {e}"))?;
            if text.trim().is_empty() {
                continue;
            }
            out.push_str(&format!("---\n# Source: {name}\n{}\n", text.trim_end()));
        }
        Ok(out)
    }

    fn nodes(&self, nodes: &[Node], dot: &Value) -> Result<String> {
        let mut out = String::new();
        for node in nodes {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Print(p) => out.push_str(&text(&self.pipeline(p, dot)?)?),
                Node::If(branches, otherwise) => {
                    let mut taken = None;
                    for (cond, body) in branches {
                        if truthy(&self.pipeline(cond, dot)?) {
                            taken = Some(body);
                            break;
                        }
                    }
                    out.push_str(&self.nodes(taken.unwrap_or(otherwise), dot)?);
                }
                Node::With(p, body, otherwise) => {
                    let value = self.pipeline(p, dot)?;
                    if truthy(&value) {
                        out.push_str(&self.nodes(body, &value)?);
                    } else {
                        out.push_str(&self.nodes(otherwise, dot)?);
                    }
                }
                Node::Range(p, body, otherwise) => {
                    let items: Vec<Value> = match self.pipeline(p, dot)? {
                        Value::Array(items) => items,
                        Value::Object(map) => map.into_values().collect(),
                        Value::Null => Vec::new(),
                        other => return Err(format!("range over {other}")),
                    };
                    if items.is_empty() {
                        out.push_str(&self.nodes(otherwise, dot)?);
                    }
                    for item in &items {
                        out.push_str(&self.nodes(body, item)?);
                    }
                }
            }
        }
        Ok(out)
    }

    fn pipeline(&self, pipeline: &Pipeline, dot: &Value) -> Result<Value> {
        let mut last: Option<Value> = None;
        for command in pipeline {
            last = Some(match command {
                Command::Operand(operand) => {
                    if last.is_some() {
                        return Err("a value cannot take piped input".to_owned());
                    }
                    self.operand(operand, dot)?
                }
                Command::Call(name, operands) => {
                    let mut args = operands
                        .iter()
                        .map(|o| self.operand(o, dot))
                        .collect::<Result<Vec<_>>>()?;
                    args.extend(last.take());
                    self.call(name, args)?
                }
            });
        }
        Ok(last.unwrap_or(Value::Null))
    }

    fn operand(&self, operand: &Operand, dot: &Value) -> Result<Value> {
        let walk = |mut value: &Value, path: &[String], from: &str| -> Result<Value> {
            for (i, field) in path.iter().enumerate() {
                value = match value {
                    Value::Object(map) => map.get(field).unwrap_or(&Value::Null),
                    _ => {
                        return Err(format!(
                            "{from}.{} is missing or not a map, so it has no {field}",
                            path[..i].join(".")
                        ));
                    }
                };
            }
            Ok(value.clone())
        };
        match operand {
            Operand::Dot(path) => walk(dot, path, ""),
            Operand::Root(path) => walk(&self.root, path, "$"),
            Operand::Str(s) => Ok(Value::String(s.clone())),
            Operand::Int(n) => Ok(json!(n)),
            Operand::Bool(b) => Ok(Value::Bool(*b)),
            Operand::Sub(p) => self.pipeline(p, dot),
        }
    }

    fn call(&self, name: &str, args: Vec<Value>) -> Result<Value> {
        let arity = |n: usize| {
            if args.len() == n {
                Ok(())
            } else {
                Err(format!("{name} takes {n} arguments, got {}", args.len()))
            }
        };
        let string = |i: usize| -> Result<String> {
            text(&args[i]).map_err(|e| format!("{name}: argument {}: {e}", i + 1))
        };
        let int = |i: usize| -> Result<i64> {
            args[i]
                .as_i64()
                .ok_or_else(|| format!("{name}: argument {} is not a number", i + 1))
        };
        Ok(match name {
            "include" => {
                arity(2)?;
                let template = string(0)?;
                let body = self
                    .defines
                    .get(&template)
                    .ok_or_else(|| format!("include: no template {template}"))?;
                Value::String(self.nodes(body, &args[1])?)
            }
            "default" => {
                arity(2)?;
                if truthy(&args[1]) {
                    args[1].clone()
                } else {
                    args[0].clone()
                }
            }
            "not" => {
                arity(1)?;
                Value::Bool(!truthy(&args[0]))
            }
            "and" => args
                .iter()
                .find(|v| !truthy(v))
                .or(args.last())
                .cloned()
                .unwrap_or(Value::Null),
            "or" => args
                .iter()
                .find(|v| truthy(v))
                .or(args.last())
                .cloned()
                .unwrap_or(Value::Null),
            "eq" => {
                arity(2)?;
                Value::Bool(args[0] == args[1])
            }
            "contains" => {
                arity(2)?;
                Value::Bool(string(1)?.contains(&string(0)?))
            }
            "quote" => {
                arity(1)?;
                Value::String(serde_json::to_string(&string(0)?).unwrap())
            }
            "trunc" => {
                arity(2)?;
                let n = usize::try_from(int(0)?).map_err(|e| e.to_string())?;
                Value::String(string(1)?.chars().take(n).collect())
            }
            "trimSuffix" => {
                arity(2)?;
                let (suffix, s) = (string(0)?, string(1)?);
                Value::String(s.strip_suffix(suffix.as_str()).unwrap_or(&s).to_owned())
            }
            "replace" => {
                arity(3)?;
                Value::String(string(2)?.replace(&string(0)?, &string(1)?))
            }
            "printf" => {
                let format = string(0)?;
                let mut out = String::new();
                let mut rest = format.as_str();
                let mut next = 1;
                while let Some(at) = rest.find('%') {
                    out.push_str(&rest[..at]);
                    match rest.get(at + 1..at + 2) {
                        Some("s" | "d" | "v") if next < args.len() => {
                            out.push_str(&string(next)?);
                            next += 1;
                        }
                        Some("%") => out.push('%'),
                        _ => return Err(format!("printf: unsupported format {format:?}")),
                    }
                    rest = &rest[at + 2..];
                }
                out.push_str(rest);
                if next != args.len() {
                    return Err(format!("printf {format:?}: {} arguments", args.len() - 1));
                }
                Value::String(out)
            }
            "indent" => {
                arity(2)?;
                Value::String(indent(int(0)?, &string(1)?))
            }
            "nindent" => {
                arity(2)?;
                Value::String(format!("\n{}", indent(int(0)?, &string(1)?)))
            }
            "toYaml" => {
                arity(1)?;
                Value::String(to_yaml(&args[0]))
            }
            "sha256sum" => {
                arity(1)?;
                Value::String(hex::encode(Sha256::digest(string(0)?.as_bytes())))
            }
            other => return Err(format!("unknown function {other}")),
        })
    }
}

/// Merges `overrides` into `values` as Helm merges `--values` files: maps key by key, anything
/// else replaced.
pub(crate) fn merge(values: &mut Value, overrides: &Value) {
    match (values, overrides) {
        (Value::Object(values), Value::Object(overrides)) => {
            for (key, value) in overrides {
                match values.get_mut(key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        values.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (values, overrides) => *values = overrides.clone(),
    }
}

#[test]
fn the_renderer_follows_go_templates() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("Chart.yaml"),
        "name: demo\nversion: 1.0.0\nappVersion: \"2.0\"\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("values.yaml"),
        "name: x\nlist: [a, b]\nmap: {k: v}\nempty: \"\"\n",
    )
    .unwrap();
    fs::create_dir(dir.path().join("templates")).unwrap();
    fs::write(
        dir.path().join("templates/_h.tpl"),
        "{{- define \"t\" -}}\n[{{ . }}]\n{{- end -}}",
    )
    .unwrap();
    fs::write(
        dir.path().join("templates/a.yaml"),
        "a: {{ include \"t\" .Values.name }}\n\
         b: {{- if .Values.empty }} yes {{- else if .Values.name }} second {{- else }} no {{- end }}\n\
         c:{{ range .Values.list }} {{ . | quote }}{{ end }}\n\
         d: {{ printf \"%s-%s\" .Chart.Name $.Chart.AppVersion | trunc 6 | trimSuffix \"-\" }}\n\
         e:{{ with .Values.map }}{{ toYaml . | nindent 2 }}{{ end }}\n\
         f: {{ default \"dflt\" .Values.empty }} {{ not .Values.empty }} {{ contains \"em\" .Chart.Name }}\n\
         {{/* a comment */}}g: {{ \"a+b\" | replace \"+\" \"_\" }}\n",
    )
    .unwrap();
    let chart = Chart::load(dir.path(), "rel", "ns", &json!({})).unwrap();
    assert_eq!(
        chart.render().unwrap(),
        "---\n# Source: demo/templates/a.yaml\na: [x]\nb: second\nc: \"a\" \"b\"\nd: demo-2\n\
         e:\n  k: v\nf: dflt true true\ng: a_b\n"
    );
    fs::write(dir.path().join("templates/b.yaml"), "{{ .Values.missing }}").unwrap();
    let chart = Chart::load(dir.path(), "rel", "ns", &json!({})).unwrap();
    let error = chart.render().unwrap_err();
    assert!(error.contains("b.yaml: prints a missing value"), "{error}");
}
