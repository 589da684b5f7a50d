//! The REST client of the release commands: the server URL, the token (from `TUG_TOKEN` or a
//! file, never a flag value), an extra CA certificate, and the server's `{code, message}` errors
//! turned into messages.

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::cli::ServerArgs;
use crate::exit::Coded;

/// Connecting takes at most this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ReleaseClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl ReleaseClient {
    pub fn new(args: &ServerArgs) -> anyhow::Result<Self> {
        let token = match &args.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the token file {}", path.display()))?,
            ),
            None => std::env::var("TUG_TOKEN").ok(),
        }
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("tug/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &args.ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
            let certificate = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{}: not a PEM certificate", path.display()))?;
            builder = builder.add_root_certificate(certificate);
        }
        let server = args.server.trim().trim_end_matches('/');
        // `host:port` alone means plain http, as `tug deploy` reads it.
        let base = if server.contains("://") {
            server.to_owned()
        } else {
            format!("http://{server}")
        };
        Ok(Self {
            http: builder.build().context("cannot set up the HTTP client")?,
            base,
            token,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| unreachable(&url, &e))?;
        if let Some(e) = grpc_answer(&response, &self.base) {
            return Err(e);
        }
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(refusal(response).await)
        }
    }

    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        self.send(method, path, query, body)
            .await?
            .json()
            .await
            .with_context(|| format!("the server's answer to {path} is not JSON"))
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        self.json(reqwest::Method::GET, path, query, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.json(reqwest::Method::POST, path, &[], Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.json(reqwest::Method::DELETE, path, &[], Some(body))
            .await
    }

    /// POSTs `body` and hands each NDJSON line of the answer to `on_line` as it arrives.
    pub async fn post_stream(
        &self,
        path: &str,
        body: &Value,
        mut on_line: impl FnMut(Value),
    ) -> anyhow::Result<()> {
        let mut response = self
            .send(reqwest::Method::POST, path, &[], Some(body))
            .await?;
        let mut pending: Vec<u8> = Vec::new();
        let mut handle = |line: &[u8]| -> anyhow::Result<()> {
            let text = String::from_utf8_lossy(line);
            let text = text.trim();
            if !text.is_empty() {
                let value = serde_json::from_str(text)
                    .with_context(|| format!("the server sent a line that is not JSON: {text}"))?;
                on_line(value);
            }
            Ok(())
        };
        while let Some(chunk) = response
            .chunk()
            .await
            .context("the connection to the server broke while streaming")?
        {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                handle(&line)?;
            }
        }
        handle(&pending)
    }
}

/// A transport error (exit 2, code `unavailable`), with reqwest's causes in one line.
pub fn unreachable(url: &str, e: &reqwest::Error) -> anyhow::Error {
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
pub fn grpc_answer(response: &reqwest::Response, base: &str) -> Option<anyhow::Error> {
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

/// The server's `{code, message}` for a refused request.
pub async fn refusal(response: reqwest::Response) -> anyhow::Error {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    match serde_json::from_str::<Value>(&body) {
        Ok(error) if error.get("message").is_some() => {
            let code = error
                .get("code")
                .and_then(Value::as_str)
                .unwrap_or("error")
                .to_owned();
            let message = format!(
                "the server refused the request ({status}): {code}: {}",
                error.get("message").and_then(Value::as_str).unwrap_or("")
            );
            Coded::refused(&code, message)
        }
        _ => {
            let code = match status.as_u16() {
                401 => "unauthenticated",
                403 => "permission_denied",
                404 => "not_found",
                _ => "unavailable",
            };
            Coded::refused(
                code,
                format!("the server refused the request ({status}): {}", body.trim()),
            )
        }
    }
}

/// Runs one request future on a runtime of its own: the CLI makes a few requests and exits.
pub fn block_on<T>(
    future: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(future)
}
