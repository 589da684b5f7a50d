//! The REST client of every command that talks to a tug server: the server URL, the token (from
//! `TUG_TOKEN` or a file, never a flag value, never printed), an extra CA certificate, the
//! command's timeout, and one reading of the server's answers: a refusal (`{code, message,
//! details.field}`) becomes the CLI's error with its exit status, a gRPC answer names the right
//! port, and a 429 or 503 with `Retry-After` is waited out and repeated when repeating the
//! request cannot carry it out twice.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use serde_json::Value;

use crate::cli::ServerArgs;
use crate::exit::Coded;
use crate::output;

/// Connecting takes at most this long, however long the whole command may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times one request is sent at most when the server asks to come back later.
const MAX_ATTEMPTS: u32 = 5;
/// The longest `Retry-After` waited out by a command without a timeout of its own; a server
/// asking for more is down for maintenance, and a CI job is better told so than left hanging.
const MAX_WAIT_WITHOUT_TIMEOUT: Duration = Duration::from_secs(60);

/// Where and how a command reaches the server.
pub(crate) struct Endpoint<'a> {
    /// `https://host:port`, `http://…`, or `host:port` (plain http).
    pub server: &'a str,
    pub token_file: Option<&'a Path>,
    pub ca_cert: Option<&'a Path>,
    /// The whole command, every request and every wait included; `None`: no limit.
    pub timeout: Option<Duration>,
}

impl<'a> From<&'a ServerArgs> for Endpoint<'a> {
    fn from(args: &'a ServerArgs) -> Self {
        Endpoint {
            server: &args.server,
            token_file: args.token_file.as_deref(),
            ca_cert: args.ca_cert.as_deref(),
            timeout: None,
        }
    }
}

pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    timeout: Option<Duration>,
    started: Instant,
    /// W3C trace context sent with every request: CI's `TRACEPARENT` when it is set and valid,
    /// else one made for this command, so the server's spans of all its requests share a trace.
    traceparent: String,
    /// One runtime for all the command's requests: pooled connections belong to the runtime
    /// that opened them.
    runtime: tokio::runtime::Runtime,
}

/// One request. Only a request that may be sent twice without being carried out twice is
/// repeated after a 429 or 503 with `Retry-After`.
pub(crate) struct Request<'a> {
    method: reqwest::Method,
    path: &'a str,
    query: &'a [(&'a str, String)],
    body: Option<&'a Value>,
    idempotency_key: Option<&'a str>,
    repeatable: bool,
}

impl<'a> Request<'a> {
    pub(crate) fn get(path: &'a str, query: &'a [(&'a str, String)]) -> Self {
        Self::new(reqwest::Method::GET, path, query, None, true)
    }

    /// A POST is not repeated unless [`Request::repeatable`] or
    /// [`Request::idempotency_key`] says it may be.
    pub(crate) fn post(path: &'a str, query: &'a [(&'a str, String)], body: &'a Value) -> Self {
        Self::new(reqwest::Method::POST, path, query, Some(body), false)
    }

    pub(crate) fn delete(path: &'a str, body: &'a Value) -> Self {
        Self::new(reqwest::Method::DELETE, path, &[], Some(body), true)
    }

    fn new(
        method: reqwest::Method,
        path: &'a str,
        query: &'a [(&'a str, String)],
        body: Option<&'a Value>,
        repeatable: bool,
    ) -> Self {
        Request {
            method,
            path,
            query,
            body,
            idempotency_key: None,
            repeatable,
        }
    }

    /// Sending it twice changes nothing the first one did not (a dry run, an upload the server
    /// keys by its id, a rebuild).
    pub(crate) fn repeatable(mut self) -> Self {
        self.repeatable = true;
        self
    }

    /// The server stores one job per key and answers a repeated key with that job, so a
    /// request with a key is safe to repeat.
    pub(crate) fn idempotency_key(mut self, key: Option<&'a str>) -> Self {
        if key.is_some() {
            self.idempotency_key = key;
            self.repeatable = true;
        }
        self
    }
}

impl Client {
    pub(crate) fn new(endpoint: &Endpoint<'_>) -> anyhow::Result<Self> {
        let token = read_token(endpoint.token_file)?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("tug/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = endpoint.ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
            let certificate = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{}: not a PEM certificate", path.display()))?;
            builder = builder.add_root_certificate(certificate);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        Ok(Self {
            http: builder.build().context("cannot set up the HTTP client")?,
            base: server_url(endpoint.server),
            token,
            timeout: endpoint.timeout,
            started: Instant::now(),
            traceparent: std::env::var("TRACEPARENT")
                .ok()
                .map(|v| v.trim().to_ascii_lowercase())
                .filter(|v| is_traceparent(v))
                .unwrap_or_else(new_traceparent),
            runtime,
        })
    }

    /// The server's URL, without a trailing slash.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// Runs the command's requests; `None` when its timeout passed first.
    pub(crate) fn within_timeout<T>(
        &self,
        future: impl Future<Output = anyhow::Result<T>>,
    ) -> Option<anyhow::Result<T>> {
        self.runtime.block_on(async {
            match self.deadline() {
                Some(deadline) => tokio::time::timeout_at(deadline.into(), future).await.ok(),
                None => Some(future.await),
            }
        })
    }

    /// Runs the command's requests; past the timeout, the error says no answer came.
    pub(crate) fn block_on<T>(
        &self,
        future: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        self.within_timeout(future)
            .unwrap_or_else(|| Err(self.no_answer()))
    }

    /// The timeout passed before the server answered (exit 2).
    pub(crate) fn no_answer(&self) -> anyhow::Error {
        let secs = self.timeout.unwrap_or_default().as_secs();
        Coded::usage(
            "deadline_exceeded",
            format!("no answer from {} within {secs} s (--timeout)", self.base),
        )
    }

    fn deadline(&self) -> Option<Instant> {
        self.timeout.map(|t| self.started + t)
    }

    /// Sends the request until the server takes it: the successful answer, or the error for
    /// why not.
    pub(crate) async fn send(&self, request: &Request<'_>) -> anyhow::Result<reqwest::Response> {
        let mut attempt = 1;
        loop {
            let response = self.send_once(request).await?;
            if response.status().is_success() {
                return Ok(response);
            }
            let refusal = Refusal::read(response).await;
            match self.retry_delay(request, &refusal, attempt) {
                Ok(delay) => {
                    output::diagnostic(&format!(
                        "tug: {} answered {}; retrying in {} s as its Retry-After asks \
                         (attempt {} of {MAX_ATTEMPTS})",
                        self.base,
                        refusal.summary(),
                        delay.as_secs_f64().ceil(),
                        attempt + 1,
                    ));
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(note) => return Err(refusal.into_error(note)),
            }
        }
    }

    async fn send_once(&self, request: &Request<'_>) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{}", self.base, request.path);
        let mut builder = self.http.request(request.method.clone(), &url);
        if !request.query.is_empty() {
            builder = builder.query(request.query);
        }
        if let Some(token) = &self.token {
            builder = builder.bearer_auth(token);
        }
        if let Some(key) = request.idempotency_key {
            builder = builder.header("Idempotency-Key", key);
        }
        builder = builder.header("traceparent", &self.traceparent);
        if let Some(body) = request.body {
            builder = builder.json(body);
        }
        let built = builder.build().map_err(|e| unreachable(&url, &e))?;
        // The URL with its query, as sent: the message names exactly what could not be reached.
        let url = built.url().to_string();
        let response = self
            .http
            .execute(built)
            .await
            .map_err(|e| unreachable(&url, &e))?;
        if let Some(e) = grpc_answer(&response, &self.base) {
            return Err(e);
        }
        Ok(response)
    }

    /// How long to wait before sending the request again, or why it is not sent again (a note
    /// for the error; empty when the server did not ask for a retry).
    fn retry_delay(
        &self,
        request: &Request<'_>,
        refusal: &Refusal,
        attempt: u32,
    ) -> Result<Duration, String> {
        let Some(delay) = refusal.retry_after else {
            return Err(String::new());
        };
        let asked = format!(
            "the server asked to retry after {} s",
            delay.as_secs_f64().ceil()
        );
        if !request.repeatable {
            return Err(format!(
                "{asked}; this request is not repeated automatically, since the server may have \
                 carried it out"
            ));
        }
        if attempt >= MAX_ATTEMPTS {
            return Err(format!("{asked}; gave up after {attempt} attempts"));
        }
        match self.deadline() {
            Some(deadline) if Instant::now() + delay > deadline => {
                Err(format!("{asked}, which is past the --timeout"))
            }
            None if delay > MAX_WAIT_WITHOUT_TIMEOUT => Err(format!(
                "{asked}, longer than the {} s tug waits",
                MAX_WAIT_WITHOUT_TIMEOUT.as_secs()
            )),
            _ => Ok(delay),
        }
    }

    /// The JSON answer of a request.
    pub(crate) async fn json(&self, request: &Request<'_>) -> anyhow::Result<Value> {
        self.send(request)
            .await?
            .json()
            .await
            .with_context(|| format!("the server's answer to {} is not JSON", request.path))
    }

    pub(crate) async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        self.json(&Request::get(path, query)).await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.json(&Request::post(path, &[], body)).await
    }

    pub(crate) async fn delete(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.json(&Request::delete(path, body)).await
    }
}

/// Hands each NDJSON line of an answer to `on_line` as it arrives, until `on_line` returns a
/// value or the stream ends (`None`).
pub(crate) async fn ndjson<T>(
    mut response: reqwest::Response,
    mut on_line: impl FnMut(Value) -> anyhow::Result<Option<T>>,
) -> anyhow::Result<Option<T>> {
    let mut pending: Vec<u8> = Vec::new();
    let mut handle = |line: &[u8]| -> anyhow::Result<Option<T>> {
        let text = String::from_utf8_lossy(line);
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let value = serde_json::from_str(text)
            .with_context(|| format!("the server sent a line that is not JSON: {text}"))?;
        on_line(value)
    };
    while let Some(chunk) = response
        .chunk()
        .await
        .context("the connection to the server broke while streaming")?
    {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if let Some(done) = handle(&line)? {
                return Ok(Some(done));
            }
        }
    }
    handle(&pending)
}

/// The token from the file, else from `TUG_TOKEN`; none is fine for a server without
/// authentication.
fn read_token(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    let token = match file {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            Coded::usage(
                "invalid_argument",
                format!("cannot read the token file {}: {e}", path.display()),
            )
        })?),
        None => std::env::var("TUG_TOKEN").ok(),
    };
    Ok(token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()))
}

/// `host:port` alone means plain http, as the Delivery client's address did.
fn server_url(server: &str) -> String {
    let server = server.trim().trim_end_matches('/');
    if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    }
}

/// A transport error (exit 2, code `unavailable`), with reqwest's causes in one line.
fn unreachable(url: &str, e: &reqwest::Error) -> anyhow::Error {
    let mut message = format!("cannot reach the tug server at {url}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    Coded::usage("unavailable", message)
}

/// An answer from a gRPC listener (tonic answers a plain HTTP request with `grpc-status` and no
/// body): the caller pointed a REST client at the gRPC port, 12010 for Delivery's clients.
fn grpc_answer(response: &reqwest::Response, base: &str) -> Option<anyhow::Error> {
    let headers = response.headers();
    let is_grpc = headers.contains_key("grpc-status")
        || headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
    is_grpc.then(|| {
        Coded::usage(
            "wrong_port",
            format!(
                "{base} answered with gRPC: this is tug's gRPC port; the tug CLI speaks REST on \
                 the HTTP port, 12011 by default (--server http://HOST:12011)"
            ),
        )
    })
}

/// A non-2xx answer, read once.
struct Refusal {
    status: reqwest::StatusCode,
    /// The server's `{code, message, details}` when the body is one.
    error: Option<Value>,
    body: String,
    /// The id the server logged the request under, for finding its log lines.
    request_id: Option<String>,
    retry_after: Option<Duration>,
}

impl Refusal {
    async fn read(response: reqwest::Response) -> Self {
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let request_id = header("x-request-id");
        let retry_after = if matches!(status.as_u16(), 429 | 503) {
            header("retry-after").and_then(|v| retry_after(&v, SystemTime::now()))
        } else {
            None
        };
        let body = response.text().await.unwrap_or_default();
        let error = serde_json::from_str::<Value>(&body)
            .ok()
            .filter(|e| e.get("message").is_some());
        Refusal {
            status,
            error,
            body,
            request_id,
            retry_after,
        }
    }

    fn code(&self) -> &str {
        match &self.error {
            Some(error) => error.get("code").and_then(Value::as_str).unwrap_or("error"),
            None => match self.status.as_u16() {
                401 => "unauthenticated",
                403 => "permission_denied",
                404 => "not_found",
                _ => "unavailable",
            },
        }
    }

    /// `STATUS: CODE: MESSAGE`, or `STATUS: BODY` for an answer without the server's error.
    fn summary(&self) -> String {
        match &self.error {
            Some(error) => format!(
                "{}: {}: {}",
                self.status,
                self.code(),
                error.get("message").and_then(Value::as_str).unwrap_or("")
            ),
            None => format!("{}: {}", self.status, self.body.trim()),
        }
    }

    fn into_error(self, note: String) -> anyhow::Error {
        let mut message = format!("the server refused the request ({})", self.status);
        match &self.error {
            Some(error) => message.push_str(&format!(
                ": {}: {}",
                self.code(),
                error.get("message").and_then(Value::as_str).unwrap_or("")
            )),
            None => message.push_str(&format!(": {}", self.body.trim())),
        }
        if !note.is_empty() {
            message.push_str(&format!(" ({note})"));
        }
        if let Some(id) = &self.request_id {
            message.push_str(&format!(" (request id {id})"));
        }
        let field = self
            .error
            .as_ref()
            .and_then(|e| e.pointer("/details/field"))
            .and_then(Value::as_str);
        Coded::refused(self.code(), field, message)
    }
}

/// `Retry-After` as a wait from `now`: delay-seconds or an HTTP date (IMF-fixdate, the form
/// RFC 9110 has servers send). A date in the past means at once; anything else, no retry.
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let now = jiff::Timestamp::try_from(now).ok()?;
    let wait = at.duration_since(now);
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_address_means_http() {
        assert_eq!(server_url("127.0.0.1:12011"), "http://127.0.0.1:12011");
        assert_eq!(
            server_url("https://tug.example.com/"),
            "https://tug.example.com"
        );
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(retry_after("0", now), Some(Duration::ZERO));
        // 784111777 is Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example.
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:30 GMT", now),
            Some(Duration::ZERO)
        );
        for no in ["", "-1", "1.5", "soon", "Sunday, 06-Nov-94 08:49:37"] {
            assert_eq!(retry_after(no, now), None, "{no:?}");
        }
    }
}

/// A version-00 W3C `traceparent`: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`,
/// neither id all zeros.
fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    matches!(parts.as_slice(), [version, trace, parent, flags]
        if *version == "00"
            && hex(trace, 32)
            && hex(parent, 16)
            && hex(flags, 2)
            && trace.bytes().any(|b| b != b'0')
            && parent.bytes().any(|b| b != b'0'))
}

/// A new trace with this command as its root, sampled.
fn new_traceparent() -> String {
    let trace: u128 = rand::random::<u128>().max(1);
    let parent: u64 = rand::random::<u64>().max(1);
    format!("00-{trace:032x}-{parent:016x}-01")
}

#[cfg(test)]
mod traceparent_tests {
    use super::*;

    #[test]
    fn made_traceparents_are_valid_and_ci_ones_are_checked() {
        let made = new_traceparent();
        assert!(is_traceparent(&made), "{made}");
        assert_ne!(made, new_traceparent());
        assert!(is_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!is_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_traceparent("garbage"));
    }
}
