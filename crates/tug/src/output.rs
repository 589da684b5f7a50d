//! What the CLI prints. Results go to stdout (text or JSON), diagnostics to stderr. A closed
//! stdout or stderr (`tug … | head -1`) is not an error: what cannot be written is dropped.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;

pub(crate) fn error(e: &anyhow::Error) {
    let mut msg = format!("tug: error: {e}");
    for cause in e.chain().skip(1) {
        msg.push_str(&format!("\n  caused by: {cause}"));
    }
    diagnostic(&msg);
}

/// `{"error": {"code": …, "message": …}}` on stdout, for `-o json` callers piping into `jq`;
/// with `"field"` when the server named the request field at fault.
pub(crate) fn json_error(code: &str, e: &anyhow::Error) {
    let mut message = e.to_string();
    for cause in e.chain().skip(1) {
        message.push_str(&format!(": {cause}"));
    }
    let mut error = serde_json::json!({"code": code, "message": message});
    if let Some(field) = e
        .chain()
        .find_map(|cause| cause.downcast_ref::<crate::exit::Coded>())
        .and_then(|c| c.field.as_deref())
    {
        error["field"] = serde_json::Value::from(field);
    }
    json(&serde_json::json!({ "error": error }));
}

pub(crate) fn line(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
}

pub(crate) fn bytes(b: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(b);
    let _ = out.flush();
}

/// A line about something that went wrong, while the run goes on.
pub(crate) fn diagnostic(s: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{s}");
}

pub(crate) fn json(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, v);
    let _ = writeln!(out);
}

/// A unified diff of one file, with `a/` and `b/` prefixes like git's.
pub(crate) fn unified_diff(path: &str, before: &[u8], after: &[u8]) -> String {
    let before = String::from_utf8_lossy(before);
    let after = String::from_utf8_lossy(after);
    similar::TextDiff::from_lines(before.as_ref(), after.as_ref())
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string()
}
