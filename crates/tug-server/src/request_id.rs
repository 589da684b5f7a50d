//! Request ids: every HTTP and gRPC request runs inside a `request` span carrying an id, so the
//! lines a request causes (accepted job, refusals, errors) can be found together, and the id goes
//! back to the caller in `X-Request-Id`. A caller's own id (a CI run, a proxy's trace id) is kept
//! when it is a sane token, so one id follows the request across systems. A W3C `traceparent`
//! makes the request's span a child of the caller's (see `tug_service::telemetry`).

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

pub const HEADER: &str = "x-request-id";

/// The longest caller-supplied id kept; longer ones are replaced, not truncated, so an id is
/// either the caller's exactly or tug's own.
const MAX_LEN: usize = 128;

/// Middleware: assigns the id, runs the request in its span, logs its completion and echoes
/// the id.
pub async fn layer(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane(v))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        %method,
        %path,
        trace_id = tracing::field::Empty,
    );
    // The caller's W3C trace context (an HTTP header, or gRPC metadata, which travels as one):
    // the request's span becomes a child of the caller's, and its log lines carry the trace id.
    let traceparent = request
        .headers()
        .get(tug_service::telemetry::TRACEPARENT)
        .and_then(|v| v.to_str().ok());
    tug_service::telemetry::adopt(&span, traceparent);
    let started = std::time::Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "request answered"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

/// Visible ASCII without spaces, quotes or backslashes, at most [`MAX_LEN`] bytes: safe to log
/// and to echo.
fn is_sane(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_tokens_and_refuses_what_would_garble_a_log_line() {
        assert!(is_sane("ci-run-4711"));
        assert!(is_sane(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_sane(""));
        assert!(!is_sane("two words"));
        assert!(!is_sane("quote\"d"));
        assert!(!is_sane("line\nbreak"));
        assert!(!is_sane(&"x".repeat(MAX_LEN + 1)));
    }
}
