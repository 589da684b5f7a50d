//! Secrets that must never reach argv, `.git/config`, logs or error messages.

use std::fmt;

/// A value that must never appear in logs or error messages: an HTTPS password or token, a
/// webhook URL or signing secret. `Debug` and `Display` print `***`, so a secret that ends up in
/// a log line or an error by mistake leaks nothing. The one secret type of tug: the configuration
/// reads it (transparently, as a string) and git's environment is given it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The clear value, for the one place that sends it (a git child process, an HTTP call).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The clear value, to expand `${VAR}` references in a configuration file in place.
    pub fn expose_mut(&mut self) -> &mut String {
        &mut self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// Removes every known secret value from text that came from git (its stderr can echo a URL or
/// a server message containing a credential) before the text goes into an error or a log.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub(crate) fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|secret| !secret.is_empty())
            .flat_map(|secret| {
                // git prints credentials in URLs percent-encoded, so hide that spelling too.
                let encoded = percent_encode(&secret);
                if encoded == secret {
                    vec![secret]
                } else {
                    vec![secret, encoded]
                }
            })
            .collect();
        // Longest first, so a secret that contains another is removed whole.
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        Self { secrets }
    }

    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }
}

fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_formats_its_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn redactor_removes_plain_and_percent_encoded_values() {
        let redactor = Redactor::new(["p@ss word".to_owned(), "tok".to_owned()]);
        let text = "fatal: auth for https://u:p%40ss%20word@host failed; p@ss word; token tok";
        let redacted = redactor.redact(text);
        assert!(!redacted.contains("p@ss word"), "{redacted}");
        assert!(!redacted.contains("p%40ss%20word"), "{redacted}");
        assert!(!redacted.contains("tok"), "{redacted}");
    }
}
