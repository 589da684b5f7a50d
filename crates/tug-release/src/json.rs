//! JSON reading that reports where a document is wrong, and JSON writing that produces the same
//! bytes as the release manager's Go encoder (so files it wrote round-trip unchanged).

use std::io;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::ser::{Formatter, PrettyFormatter};

/// A JSON document that does not fit its model, with the JSON path of the value at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonFault {
    /// JSON path of the offending value, e.g. `application.branch` or `stages[1].data.tag`;
    /// empty when the document as a whole is at fault (syntax errors, wrong top-level type).
    pub(crate) path: String,
    pub(crate) message: String,
}

impl JsonFault {
    /// The path, or a phrase for the whole document when there is none.
    pub(crate) fn location(&self) -> &str {
        if self.path.is_empty() {
            "the document"
        } else {
            &self.path
        }
    }

    pub(crate) fn under(mut self, prefix: &str) -> Self {
        self.path = if self.path.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{}", self.path)
        };
        self
    }
}

fn fault(path: &serde_path_to_error::Path, inner: &serde_json::Error) -> JsonFault {
    let path = path.to_string();
    // The path is "." at the top level and "?" where the parser failed before knowing one.
    let path = if path == "." || path == "?" {
        String::new()
    } else {
        path
    };
    JsonFault {
        path,
        message: inner.to_string(),
    }
}

pub(crate) fn from_str<T: DeserializeOwned>(json: &str) -> Result<T, JsonFault> {
    let mut de = serde_json::Deserializer::from_str(json);
    let value =
        serde_path_to_error::deserialize(&mut de).map_err(|e| fault(e.path(), e.inner()))?;
    de.end().map_err(|e| JsonFault {
        path: String::new(),
        message: e.to_string(),
    })?;
    Ok(value)
}

pub(crate) fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, JsonFault> {
    serde_path_to_error::deserialize(value).map_err(|e| fault(e.path(), e.inner()))
}

/// Pretty JSON as Go's `json.Encoder` with `SetIndent("", "  ")` writes it: two-space indent,
/// `<`, `>`, `&`, U+2028 and U+2029 escaped, and a trailing newline.
pub(crate) fn to_go_pretty<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter::default());
    value.serialize(&mut ser)?;
    out.push(b'\n');
    // serde_json writes UTF-8 only; a failure here would be a serde_json bug, reported as such.
    String::from_utf8(out).map_err(|e| {
        serde_json::Error::io(io::Error::new(io::ErrorKind::InvalidData, e.utf8_error()))
    })
}

#[derive(Default)]
struct GoFormatter {
    pretty: PrettyFormatter<'static>,
}

impl Formatter for GoFormatter {
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.begin_array(w)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.end_array(w)
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.pretty.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.end_array_value(w)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.begin_object(w)
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.end_object(w)
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.pretty.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.end_object_value(w)
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escaped = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            w.write_all(&fragment.as_bytes()[start..i])?;
            w.write_all(escaped.as_bytes())?;
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        inner: Vec<Inner>,
    }
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        name: String,
    }

    #[test]
    fn unknown_field_is_reported_at_its_path() {
        let err = from_str::<Outer>(r#"{"inner": [{"name": "a"}, {"name": "b", "extra": 1}]}"#)
            .unwrap_err();
        assert_eq!(err.path, "inner[1].extra");
        assert!(
            err.message.contains("unknown field `extra`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn trailing_garbage_is_refused() {
        let err = from_str::<Outer>(r#"{"inner": []} {"#).unwrap_err();
        assert!(err.message.contains("trailing"), "{}", err.message);
    }

    #[test]
    fn writes_like_go_encoder() {
        let value = Outer {
            inner: vec![Inner {
                name: "a<b>&c\u{2028}".to_owned(),
            }],
        };
        assert_eq!(
            to_go_pretty(&value).unwrap(),
            "{\n  \"inner\": [\n    {\n      \"name\": \"a\\u003cb\\u003e\\u0026c\\u2028\"\n    }\n  ]\n}\n"
        );
    }
}
