//! Scalar values: how YAML resolves them, how the engine detects a value's type and how it writes
//! a scalar so that every YAML reader (YAML 1.2 core schema and the YAML 1.1 rules Go tools still
//! apply) reads back exactly the intended value.

use saphyr_parser::ScalarStyle;
use std::fmt;
use std::str::FromStr;

/// The type a set value is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValueType {
    /// Detect by the YAML 1.2 core schema: a number, a bool, null, else a string; an existing
    /// string stays a string. `null`, `Null`, `NULL` and `~` are written `null`, `0o17` as `15`.
    #[default]
    Auto,
    /// Always a string (quoted when YAML would read it as something else).
    String,
    /// A YAML 1.2 integer or float; other values are refused.
    Number,
    /// `true` or `false`; other values are refused.
    Bool,
    /// `null` (also accepts `Null`, `NULL`, `~` and the empty value); other values are refused.
    Null,
}

impl FromStr for ValueType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(ValueType::Auto),
            "string" | "str" => Ok(ValueType::String),
            "number" | "int" | "float" => Ok(ValueType::Number),
            "bool" | "boolean" => Ok(ValueType::Bool),
            "null" => Ok(ValueType::Null),
            _ => Err(format!(
                "unknown value type {s:?}: expected auto, string, number, bool or null"
            )),
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueType::Auto => "auto",
            ValueType::String => "string",
            ValueType::Number => "number",
            ValueType::Bool => "bool",
            ValueType::Null => "null",
        })
    }
}

/// What a scalar means once resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScalarKind {
    Null,
    Bool,
    Int,
    Float,
    Str,
    /// A scalar with a tag outside the core schema.
    Tagged(String),
}

impl ScalarKind {
    pub(crate) fn is_number(&self) -> bool {
        matches!(self, ScalarKind::Int | ScalarKind::Float)
    }
}

const CORE_TAG_PREFIX: &str = "tag:yaml.org,2002:";

/// Resolves a scalar the way a YAML 1.2 core-schema reader does.
pub(crate) fn resolve(value: &str, style: ScalarStyle, tag: Option<&str>) -> ScalarKind {
    if let Some(tag) = tag {
        return match tag.strip_prefix(CORE_TAG_PREFIX) {
            Some("str") => ScalarKind::Str,
            Some("int") => ScalarKind::Int,
            Some("float") => ScalarKind::Float,
            Some("bool") => ScalarKind::Bool,
            Some("null") => ScalarKind::Null,
            _ if tag == "!" => ScalarKind::Str,
            _ => ScalarKind::Tagged(tag.to_owned()),
        };
    }
    if style != ScalarStyle::Plain {
        return ScalarKind::Str;
    }
    resolve_plain_core(value)
}

pub(crate) fn resolve_plain_core(v: &str) -> ScalarKind {
    match v {
        "" | "~" | "null" | "Null" | "NULL" => ScalarKind::Null,
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => ScalarKind::Bool,
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => ScalarKind::Float,
        _ if is_core_int(v) => ScalarKind::Int,
        _ if is_core_float(v) => ScalarKind::Float,
        _ => ScalarKind::Str,
    }
}

fn is_core_int(v: &str) -> bool {
    if let Some(oct) = v.strip_prefix("0o") {
        return !oct.is_empty() && oct.bytes().all(|b| (b'0'..=b'7').contains(&b));
    }
    if let Some(hex) = v.strip_prefix("0x") {
        return !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `[-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`
fn is_core_float(v: &str) -> bool {
    let b = v.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'-' | b'+')) {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    let mut frac_digits = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = i - s;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == s {
            return false;
        }
    }
    i == b.len()
}

/// Whether a YAML 1.1 reader (Go's yaml.v2, still behind many Kubernetes tools) would read this
/// plain scalar as something other than a string.
fn is_yaml11_non_string(v: &str) -> bool {
    const BOOLS: [&str; 22] = [
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
        "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF",
    ];
    // `<<` is the merge key and `=` the value key of YAML 1.1.
    if BOOLS.contains(&v) || v == "<<" || v == "=" {
        return true;
    }
    let body = v.strip_prefix(['-', '+']).unwrap_or(v);
    let plain: String = body.chars().filter(|&c| c != '_').collect();
    if plain.is_empty() {
        return false;
    }
    if let Some(bin) = plain.strip_prefix("0b")
        && !bin.is_empty()
        && bin.bytes().all(|b| b == b'0' || b == b'1')
    {
        return true;
    }
    if is_core_int(&plain) || is_core_float(&plain) {
        return true;
    }
    // Sexagesimal numbers (`1:20`, `190:20:30.15`).
    if plain.contains(':')
        && plain
            .split(':')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
    {
        return true;
    }
    // Timestamps (`2001-12-14`, `2001-12-14t21:59:43.10-05:00`).
    let b = v.as_bytes();
    b.len() >= 8 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-'
}

/// Whether `v` can be written as a plain scalar and read back as exactly this string by YAML 1.2
/// and YAML 1.1 readers.
pub(crate) fn plain_string_is_safe(v: &str, flow: bool) -> bool {
    let Some(first) = v.chars().next() else {
        return false;
    };
    if resolve_plain_core(v) != ScalarKind::Str || is_yaml11_non_string(v) {
        return false;
    }
    if first.is_whitespace() || v.ends_with(char::is_whitespace) {
        return false;
    }
    if matches!(
        first,
        '-' | '?'
            | ':'
            | ','
            | '['
            | ']'
            | '{'
            | '}'
            | '#'
            | '&'
            | '*'
            | '!'
            | '|'
            | '>'
            | '\''
            | '"'
            | '%'
            | '@'
            | '`'
    ) {
        return false;
    }
    if v.contains(": ") || v.contains(" #") || v.ends_with(':') {
        return false;
    }
    if flow && v.contains([',', '[', ']', '{', '}']) {
        return false;
    }
    v.chars()
        .all(|c| !c.is_control() && !matches!(c, '\u{feff}' | '\u{85}' | '\u{2028}' | '\u{2029}'))
}

/// A scalar to write: its value and the kind it must resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewScalar {
    pub value: String,
    pub kind: ScalarKind,
}

impl NewScalar {
    pub(crate) fn string(value: impl Into<String>) -> Self {
        NewScalar {
            value: value.into(),
            kind: ScalarKind::Str,
        }
    }

    /// Whether an existing scalar already holds this value.
    pub(crate) fn matches(&self, value: &str, kind: &ScalarKind) -> bool {
        match (&self.kind, kind) {
            (ScalarKind::Null, ScalarKind::Null) => true,
            (a, b) => a == b && self.value == value,
        }
    }
}

/// Why a value cannot be written with the requested type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TypeError {
    /// The value is not of the requested type.
    NotA(&'static str),
    /// The existing scalar has a custom tag, which only a string value can keep.
    Tagged(String),
}

/// Turns a value given by the user into the scalar to write, following `value_type`; `existing`
/// is the kind of the scalar being replaced, if any (an existing string stays a string under
/// [`ValueType::Auto`], and an existing custom tag is kept).
///
/// Spellings follow the YAML 1.2 core schema, written so that YAML 1.1 readers agree:
/// `null`, `Null`, `NULL` and `~` are null and written `null`; `true`/`True`/`TRUE` and
/// `false`/`False`/`FALSE` are booleans written as given; decimal integers are written without
/// leading zeros (YAML 1.1 reads `012` as octal), `0x1A` as given, `0o17` as its decimal value
/// (YAML 1.1 has no `0o`); floats (`1.5`, `1e3`, `.5`, `.inf`, `-.Inf`, `.nan`) as given.
pub(crate) fn typed_value(
    value: &str,
    value_type: ValueType,
    existing: Option<&ScalarKind>,
) -> Result<NewScalar, TypeError> {
    if let Some(ScalarKind::Tagged(tag)) = existing {
        // The tag stays in the file; the value is its text.
        return match value_type {
            ValueType::Auto | ValueType::String => Ok(NewScalar {
                value: value.to_owned(),
                kind: ScalarKind::Tagged(tag.clone()),
            }),
            _ => Err(TypeError::Tagged(tag.clone())),
        };
    }
    let detected = resolve_plain_core(value);
    let keep_string = value_type == ValueType::Auto && existing == Some(&ScalarKind::Str);
    let scalar = |kind: ScalarKind, value: String| NewScalar { value, kind };
    match value_type {
        _ if keep_string => Ok(NewScalar::string(value)),
        ValueType::String => Ok(NewScalar::string(value)),
        ValueType::Auto => Ok(match detected {
            ScalarKind::Int | ScalarKind::Float => match written_number(value) {
                Some(n) => scalar(detected, n),
                None => NewScalar::string(value),
            },
            ScalarKind::Bool => scalar(ScalarKind::Bool, value.to_owned()),
            // The empty value stays the empty string: `""` is what a user types for "no value".
            ScalarKind::Null if !value.is_empty() => scalar(ScalarKind::Null, "null".to_owned()),
            _ => NewScalar::string(value),
        }),
        ValueType::Number => match (detected.is_number(), written_number(value)) {
            (true, Some(n)) => Ok(scalar(detected, n)),
            _ => Err(TypeError::NotA("number")),
        },
        ValueType::Bool => match detected {
            ScalarKind::Bool => Ok(scalar(ScalarKind::Bool, value.to_owned())),
            _ => Err(TypeError::NotA("bool (true or false)")),
        },
        ValueType::Null => match detected {
            ScalarKind::Null => Ok(scalar(ScalarKind::Null, "null".to_owned())),
            _ => Err(TypeError::NotA("null")),
        },
    }
}

/// How a core-schema number is written so that YAML 1.2 and YAML 1.1 readers read the same
/// number; `None` when it cannot be (an octal too large for 64 bits).
fn written_number(v: &str) -> Option<String> {
    let (sign, body) = match v.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", v.strip_prefix('+').unwrap_or(v)),
    };
    if let Some(oct) = v.strip_prefix("0o") {
        return u64::from_str_radix(oct, 8).ok().map(|n| n.to_string());
    }
    if v.starts_with("0x") || !body.bytes().all(|b| b.is_ascii_digit()) {
        return Some(v.to_owned());
    }
    // A decimal integer: YAML 1.1 reads a leading zero as octal.
    let digits = body.trim_start_matches('0');
    Some(if digits.is_empty() {
        "0".to_owned()
    } else if v.starts_with('+') {
        format!("+{digits}")
    } else {
        format!("{sign}{digits}")
    })
}

/// Where a scalar is written: decides which styles are possible.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScalarContext<'a> {
    /// Inside a flow collection (`[…]`/`{…}`): no block scalars, more characters need quotes.
    pub flow: bool,
    /// The style of the scalar being replaced, kept when it can represent the new value.
    pub existing: Option<ScalarStyle>,
    /// Column of block scalar content lines.
    pub block_indent: usize,
    /// The file's line ending.
    pub newline: &'a str,
}

/// Writes a scalar as YAML text (a tagged scalar's text, after the tag the file keeps).
pub(crate) fn render_scalar(s: &NewScalar, cx: ScalarContext<'_>) -> String {
    match s.kind {
        ScalarKind::Str | ScalarKind::Tagged(_) => render_string(&s.value, cx),
        ScalarKind::Null => "null".to_owned(),
        _ => s.value.clone(),
    }
}

fn render_string(v: &str, cx: ScalarContext<'_>) -> String {
    let multi_line = v.contains('\n');
    if multi_line && !cx.flow && literal_is_possible(v) {
        return render_literal(v, cx);
    }
    match cx.existing {
        Some(ScalarStyle::SingleQuoted) if !multi_line && v.chars().all(|c| !c.is_control()) => {
            format!("'{}'", v.replace('\'', "''"))
        }
        Some(ScalarStyle::DoubleQuoted) => double_quoted(v),
        _ if plain_string_is_safe(v, cx.flow) => v.to_owned(),
        _ => double_quoted(v),
    }
}

fn literal_is_possible(v: &str) -> bool {
    v.chars()
        .all(|c| c == '\n' || (!c.is_control() && c != '\u{feff}'))
        && !v
            .lines()
            .any(|l| l.ends_with(' ') && l.trim().is_empty() && !l.is_empty())
}

fn render_literal(v: &str, cx: ScalarContext<'_>) -> String {
    let body = v.strip_suffix('\n').unwrap_or(v);
    let chomp = if v.ends_with("\n\n") {
        "+"
    } else if v.ends_with('\n') {
        ""
    } else {
        "-"
    };
    let indicator = if body.starts_with(' ') {
        // Leading spaces would be taken for indentation: say how deep the indentation is.
        format!("{}", cx.block_indent.clamp(1, 9))
    } else {
        String::new()
    };
    let block_indent = if indicator.is_empty() {
        cx.block_indent
    } else {
        cx.block_indent.clamp(1, 9)
    };
    let pad = " ".repeat(block_indent);
    let mut out = format!("|{indicator}{chomp}");
    for line in body.split('\n') {
        out.push_str(cx.newline);
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
    }
    out
}

pub(crate) fn double_quoted(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}') => {
                let n = u32::from(c);
                if n <= 0xff {
                    out.push_str(&format!("\\x{n:02x}"));
                } else {
                    out.push_str(&format!("\\u{n:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_schema_resolution() {
        for (v, k) in [
            ("1", ScalarKind::Int),
            ("-12", ScalarKind::Int),
            ("0x1F", ScalarKind::Int),
            ("1.20", ScalarKind::Float),
            ("1e3", ScalarKind::Float),
            (".5", ScalarKind::Float),
            ("true", ScalarKind::Bool),
            ("~", ScalarKind::Null),
            ("1.2.3", ScalarKind::Str),
            ("v1.2", ScalarKind::Str),
            ("yes", ScalarKind::Str),
        ] {
            assert_eq!(resolve_plain_core(v), k, "{v}");
        }
    }

    #[test]
    fn tags_that_yaml_reads_as_other_types_need_quotes() {
        for v in [
            "1.20",
            "1",
            "true",
            "1e3",
            "yes",
            "on",
            "1_000",
            "0b101",
            "1:20",
            "2026-01-01",
        ] {
            assert!(!plain_string_is_safe(v, false), "{v}");
        }
        for v in [
            "1.2.3",
            "v1.29.3",
            "latest",
            "sha-abc123",
            "registry.local:5000/app",
        ] {
            assert!(plain_string_is_safe(v, false), "{v}");
        }
        assert!(!plain_string_is_safe("a,b", true));
    }

    #[test]
    fn existing_strings_stay_strings() {
        let s = typed_value("1.20", ValueType::Auto, Some(&ScalarKind::Str)).unwrap();
        assert_eq!(s.kind, ScalarKind::Str);
        let n = typed_value("1.20", ValueType::Auto, Some(&ScalarKind::Float)).unwrap();
        assert_eq!(n.kind, ScalarKind::Float);
        assert!(typed_value("abc", ValueType::Number, None).is_err());
        assert!(typed_value("yes", ValueType::Bool, None).is_err());
    }

    #[test]
    fn core_schema_spellings() {
        let auto = |v: &str| typed_value(v, ValueType::Auto, None).unwrap();
        for v in ["null", "Null", "NULL", "~"] {
            assert_eq!(
                auto(v),
                NewScalar {
                    value: "null".into(),
                    kind: ScalarKind::Null
                },
                "{v}"
            );
            assert_eq!(
                typed_value(v, ValueType::Null, None).unwrap().kind,
                ScalarKind::Null
            );
        }
        assert_eq!(auto("").kind, ScalarKind::Str);
        for v in ["True", "FALSE"] {
            assert_eq!(
                auto(v),
                NewScalar {
                    value: v.into(),
                    kind: ScalarKind::Bool
                }
            );
        }
        assert_eq!(
            auto("0x1A"),
            NewScalar {
                value: "0x1A".into(),
                kind: ScalarKind::Int
            }
        );
        assert_eq!(
            auto("0o17"),
            NewScalar {
                value: "15".into(),
                kind: ScalarKind::Int
            }
        );
        assert_eq!(
            auto("012"),
            NewScalar {
                value: "12".into(),
                kind: ScalarKind::Int
            }
        );
        assert_eq!(
            auto("-007"),
            NewScalar {
                value: "-7".into(),
                kind: ScalarKind::Int
            }
        );
        assert_eq!(
            auto("000"),
            NewScalar {
                value: "0".into(),
                kind: ScalarKind::Int
            }
        );
        assert_eq!(auto(".inf").kind, ScalarKind::Float);
        assert_eq!(
            typed_value("0o17", ValueType::Number, None).unwrap().value,
            "15"
        );
        assert!(typed_value("0o777777777777777777777777", ValueType::Number, None).is_err());
        let tagged = ScalarKind::Tagged("!cat".into());
        assert_eq!(
            typed_value("5", ValueType::Auto, Some(&tagged))
                .unwrap()
                .kind,
            tagged
        );
        assert!(typed_value("5", ValueType::Number, Some(&tagged)).is_err());
    }

    #[test]
    fn yaml11_keys_need_quotes() {
        assert!(!plain_string_is_safe("<<", false));
        assert!(!plain_string_is_safe("=", false));
        assert!(plain_string_is_safe("a=b", false));
    }
}
