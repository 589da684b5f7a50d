//! Reading specs and requests from YAML or JSON with errors that name the source, the line and the
//! path of the offending field.

use serde::de::DeserializeOwned;

/// A document that could not be read into the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}{}: {message}", location(*.line, *.column, .path))]
pub struct DocumentError {
    /// File name or `request body`.
    pub source_name: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Path of the field at fault, e.g. `deploySpecs[0].updates[0].paths[1].kustomize`.
    pub path: Option<String>,
    pub message: String,
}

fn location(line: Option<usize>, column: Option<usize>, path: &Option<String>) -> String {
    let mut s = String::new();
    if let Some(l) = line {
        s.push_str(&format!(":{l}"));
        if let Some(c) = column {
            s.push_str(&format!(":{c}"));
        }
    }
    if let Some(p) = path.as_deref().filter(|p| !p.is_empty() && *p != ".") {
        s.push_str(&format!(": {p}"));
    }
    s
}

/// Parses JSON when the document starts with `{` or `[`, YAML otherwise.
pub fn from_document<T: DeserializeOwned>(
    source_name: &str,
    bytes: &[u8],
) -> Result<T, DocumentError> {
    let text = std::str::from_utf8(bytes).map_err(|e| DocumentError {
        source_name: source_name.to_owned(),
        line: None,
        column: None,
        path: None,
        message: format!("not valid UTF-8 (at byte {})", e.valid_up_to()),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_start().starts_with(['{', '[']) {
        from_json(source_name, text)
    } else {
        from_yaml(source_name, text)
    }
}

pub fn from_json<T: DeserializeOwned>(source_name: &str, text: &str) -> Result<T, DocumentError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        DocumentError {
            source_name: source_name.to_owned(),
            line: Some(inner.line()),
            column: Some(inner.column()),
            path: Some(path),
            message: strip_json_position(&inner.to_string()),
        }
    })?;
    de.end().map_err(|e| DocumentError {
        source_name: source_name.to_owned(),
        line: Some(e.line()),
        column: Some(e.column()),
        path: None,
        message: strip_json_position(&e.to_string()),
    })?;
    Ok(value)
}

/// serde_json appends " at line L column C"; we report the position ourselves.
fn strip_json_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

pub fn from_yaml<T: DeserializeOwned>(source_name: &str, text: &str) -> Result<T, DocumentError> {
    let mut path = None;
    serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = Some(e.path().to_string());
            e.into_inner()
        })
    })
    .map_err(|e| {
        let rendered = e.to_string();
        let (line, column, message) = split_yaml_error(&rendered);
        DocumentError {
            source_name: source_name.to_owned(),
            line,
            column,
            path,
            message,
        }
    })
}

/// serde-saphyr renders `error: line L column C: message` followed by a source snippet; keep the
/// position as data and the message as one line.
fn split_yaml_error(rendered: &str) -> (Option<usize>, Option<usize>, String) {
    let first = rendered.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    if let Some(rest) = first.strip_prefix("line ") {
        let mut parts = rest.splitn(2, ": ");
        let pos = parts.next().unwrap_or_default();
        let message = parts.next().unwrap_or_default().to_owned();
        let mut nums = pos.split(" column ");
        let line = nums.next().and_then(|n| n.trim().parse().ok());
        let column = nums.next().and_then(|n| n.trim().parse().ok());
        if line.is_some() {
            return (line, column, message);
        }
    }
    (None, None, first.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DeploySpec;

    #[test]
    fn yaml_unknown_field_names_line_and_path() {
        let text = "- url: x\n  updates:\n  - branch: main\n    paths:\n    - path: a\n      kustomize:\n        images:\n        - name: app\n          newtag: v1\n";
        let err = from_yaml::<Vec<DeploySpec>>("specs.yaml", text).unwrap_err();
        assert_eq!(err.line, Some(9));
        assert!(err.message.contains("unknown field `newtag`"), "{err}");
        assert_eq!(
            err.path.as_deref(),
            Some("[0].updates[0].paths[0].kustomize.images[0].newtag")
        );
        assert!(
            err.to_string().starts_with(
                "specs.yaml:9:11: [0].updates[0].paths[0].kustomize.images[0].newtag: unknown field"
            ),
            "{err}"
        );
    }

    #[test]
    fn json_unknown_field_names_path() {
        let text = r#"[{"url": "x", "updates": [{"branch": "main", "pathz": []}]}]"#;
        let err = from_document::<Vec<DeploySpec>>("body", text.as_bytes()).unwrap_err();
        assert_eq!(err.path.as_deref(), Some("[0].updates[0].pathz"));
        assert!(err.message.starts_with("unknown field `pathz`"), "{err}");
        assert_eq!(err.line, Some(1));
    }

    #[test]
    fn json_trailing_garbage_is_an_error() {
        let err = from_document::<Vec<DeploySpec>>("body", b"[] x").unwrap_err();
        assert!(err.message.contains("trailing characters"), "{err}");
    }

    #[test]
    fn non_utf8_is_refused() {
        let err = from_document::<Vec<DeploySpec>>("specs.yaml", b"- url: \xff\n").unwrap_err();
        assert!(err.message.contains("UTF-8"), "{err}");
    }
}
