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
            .flat_map(|secret| spellings(&secret))
            .collect();
        // Longest first, so a secret that contains another is removed whole.
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        secrets.dedup();
        Self { secrets }
    }

    /// For HTTP basic credentials: the password, and `user:password` as an `Authorization:
    /// Basic` header carries it, in every spelling (a hostile or chatty remote may echo the
    /// header back).
    pub(crate) fn for_basic_auth(username: &str, password: &str) -> Self {
        if password.is_empty() {
            return Self::default();
        }
        Self::new([password.to_owned(), format!("{username}:{password}")])
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

/// How a secret may be printed: as is, percent-encoded (git prints credentials in URLs that
/// way), and base64 in the standard and URL-safe alphabets, padded or not (HTTP basic auth, and
/// tokens that remotes echo). Base64 of a value also appears inside the base64 of a longer text
/// only when aligned, so the value is also encoded after one and two leading bytes of context,
/// with the partial characters at both ends dropped.
fn spellings(secret: &str) -> Vec<String> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut encoded = Vec::new();
    for engine in [&STANDARD, &URL_SAFE] {
        encoded.push(engine.encode(secret));
    }
    // At each of the three alignments the secret can have inside a longer text ("", "x", "xx"
    // before it), the characters that depend on the secret alone: after the prefix's, up to the
    // last whole group (what follows the secret changes the last, partial one).
    for prefix in 0..=2usize {
        let mut bytes = vec![0u8; prefix];
        bytes.extend_from_slice(secret.as_bytes());
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let text = engine.encode(&bytes);
            let skip = (prefix * 8).div_ceil(6);
            let whole = (bytes.len() * 8) / 6;
            if let Some(part) = text.get(skip..whole) {
                encoded.push(part.to_owned());
            }
        }
    }
    // A short fragment would hide innocent words; the secret itself is always hidden.
    encoded.retain(|s| s.len() >= 6);
    let percent = percent_encode(secret);
    let mut out = vec![secret.to_owned(), lowercase_escapes(&percent), percent];
    out.extend(encoded);
    out.sort();
    out.dedup();
    out
}

/// `%2F` and `%2f` are the same byte in a URL; remotes and proxies print either.
fn lowercase_escapes(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        out.push_str(&escape.to_ascii_lowercase());
        rest = &rest[at + escape.len()..];
    }
    out.push_str(rest);
    out
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

    #[test]
    fn basic_auth_credentials_are_hidden_in_every_encoding_a_remote_may_echo() {
        use base64::Engine;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let (user, password) = ("tug-bot", "s3cr3t/t0ken@4711");
        let redactor = Redactor::for_basic_auth(user, password);
        let basic = STANDARD.encode(format!("{user}:{password}"));
        let echoes = [
            format!("remote: refused Authorization: Basic {basic}"),
            format!("remote: token {}", STANDARD.encode(password)),
            format!("remote: token {}", URL_SAFE_NO_PAD.encode(password)),
            // Inside a longer base64 text, at each alignment.
            format!("remote: blob {}", STANDARD.encode(format!("x{password}y"))),
            format!("remote: blob {}", STANDARD.encode(format!("xy{password}"))),
            format!(
                "remote: blob {}",
                STANDARD.encode(format!("xyz{password}z"))
            ),
            format!("https://{user}:s3cr3t%2Ft0ken%404711@host"),
            format!("https://{user}:s3cr3t%2ft0ken%404711@host"),
        ];
        for echo in echoes {
            let redacted = redactor.redact(&echo);
            assert!(redacted.contains("***"), "{echo} -> {redacted}");
            for leak in [
                password.to_owned(),
                basic.clone(),
                STANDARD.encode(password),
            ] {
                assert!(!redacted.contains(&leak), "{echo} -> {redacted}");
            }
            // Nothing that decodes back to the password is left either.
            for word in redacted.split_whitespace() {
                for engine in [&STANDARD, &URL_SAFE_NO_PAD] {
                    if let Ok(bytes) = engine.decode(word.trim_end_matches('=')) {
                        let text = String::from_utf8_lossy(&bytes);
                        assert!(!text.contains(password), "{echo} -> {redacted}");
                    }
                }
            }
        }
        assert_eq!(
            Redactor::for_basic_auth(user, "").redact("nothing"),
            "nothing"
        );
    }
}
