//! Traces: spans of tug's own code (`tug*` targets) exported over OTLP/gRPC when an endpoint is
//! configured (`telemetry:` or the `OTEL_*` variables, see [`crate::config::telemetry`]), and
//! W3C trace context (`traceparent`) read from callers and kept with each stored task.
//!
//! A request runs in a span whose parent is the caller's `traceparent`. Its job is written
//! later, in a batch with other requests' jobs: the writer's `writer.batch` span (repository,
//! branch, batch size, the push and its attempts) is a root with one link per task's request,
//! and each task gets a `task` span (job, attempt, its edits) whose parent is the request's
//! span, read back from the task's stored payload. So a request's trace shows its own edits, and the
//! batch's trace shows the push every request shared.
//!
//! The exporter itself is a gRPC client, so it is built with the transports
//! (`tug_server::otlp`); this module holds what the service needs: the span layer, the trace
//! context of requests and tasks, and the flush at shutdown.
//!
//! Without an endpoint nothing is initialised: no exporter, no background thread, no
//! connection; the span helpers below see no OpenTelemetry context and do nothing.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanContext, TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The key under which a task's payload keeps the `traceparent` of the request that stored it.
pub const PAYLOAD_KEY: &str = "traceparent";

/// The HTTP header (and gRPC metadata key) of W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The process's trace export, if any; [`Tracing::shutdown`] sends what is still buffered.
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing")
            .field("enabled", &self.is_enabled())
            .finish()
    }
}

impl Tracing {
    /// No export: what a configuration without an endpoint gets.
    pub fn off() -> Tracing {
        Tracing { provider: None }
    }

    /// Exports what `provider` is given (its exporter is built by the transports:
    /// `tug_server::otlp`).
    pub fn with_provider(provider: SdkTracerProvider) -> Tracing {
        Tracing {
            provider: Some(provider),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans, when exporting.
    pub fn layer<S>(&self) -> Option<impl tracing_subscriber::Layer<S> + Send + Sync + 'static>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
    {
        use tracing_subscriber::Layer as _;
        let tracer = self.provider.as_ref()?.tracer("tug");
        // Only tug's own spans: the exporter's HTTP/2 and gRPC client would otherwise trace
        // its own exports.
        let ours = tracing_subscriber::filter::filter_fn(|meta| {
            meta.target().starts_with("tug") && *meta.level() <= tracing::Level::INFO
        });
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(ours),
        )
    }

    /// Sends the spans still buffered and stops the exporter. Blocks; call it off the async
    /// workers (`spawn_blocking`) once the server has stopped.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            let _ = provider.force_flush();
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "could not send the last spans");
            }
        }
    }
}

/// The trace context a W3C `traceparent` value names, if it is valid.
pub fn remote_context(traceparent: &str) -> Option<opentelemetry::Context> {
    let mut carrier = HashMap::new();
    carrier.insert(TRACEPARENT.to_owned(), traceparent.trim().to_owned());
    let context = TraceContextPropagator::new().extract(&carrier);
    context.span().span_context().is_valid().then_some(context)
}

/// The `traceparent` of `span`, when spans are exported (otherwise `None`).
pub fn traceparent(span: &Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The hex trace id of `span`, when spans are exported.
pub fn trace_id(span: &Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// Makes `traceparent` the parent of `span` (which must not have been entered yet) and records
/// the trace id in its `trace_id` field, so its log lines carry it. Without export, the
/// caller's trace id is still recorded. False when the value is not a valid traceparent.
pub fn adopt(span: &Span, traceparent: Option<&str>) -> bool {
    let remote = traceparent.and_then(remote_context);
    let adopted = remote.is_some();
    if let Some(context) = &remote {
        // An Err means spans are not exported: nothing to parent.
        let _ = span.set_parent(context.clone());
    }
    let id = trace_id(span)
        .or_else(|| remote.map(|context| context.span().span_context().trace_id().to_string()));
    if let Some(id) = id {
        span.record("trace_id", tracing::field::display(&id));
    }
    adopted
}

/// Links `span` to the span a stored `traceparent` names (the request of a task in a batch).
pub fn link(span: &Span, traceparent: &str) {
    if let Some(context) = remote_context(traceparent) {
        let span_context: SpanContext = context.span().span_context().clone();
        span.add_link(span_context);
    }
}

/// `traceparent` of the current span, put into a task's stored payload (a JSON object), so the
/// writer that lands it later can join the request's trace.
pub fn stamp_payload(payload: &mut serde_json::Value) {
    if let (Some(value), Some(object)) = (traceparent(&Span::current()), payload.as_object_mut()) {
        object.insert(PAYLOAD_KEY.to_owned(), serde_json::Value::String(value));
    }
}

/// The `traceparent` a stored payload carries, if any.
pub fn from_payload(payload: &serde_json::Value) -> Option<&str> {
    payload.get(PAYLOAD_KEY).and_then(serde_json::Value::as_str)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn nothing_is_set_up_without_an_endpoint() {
        let config = crate::config::telemetry::TelemetryConfig::default();
        let export = config.export(&|_| None).unwrap();
        assert!(export.is_none());
        let tracing = Tracing::off();
        assert!(!tracing.is_enabled());
        assert!(tracing.layer::<tracing_subscriber::Registry>().is_none());
        // No layer: spans have no OpenTelemetry context, so nothing is stamped or exported.
        let span = tracing::info_span!("request", trace_id = tracing::field::Empty);
        assert_eq!(traceparent(&span), None);
        let mut payload = serde_json::json!({"paths": []});
        span.in_scope(|| stamp_payload(&mut payload));
        assert_eq!(from_payload(&payload), None);
    }

    #[test]
    fn traceparents_are_read_only_when_valid() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = remote_context(valid).unwrap();
        assert_eq!(
            context.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(
            remote_context("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(remote_context("not a traceparent").is_none());
    }
}
