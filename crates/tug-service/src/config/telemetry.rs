//! The `telemetry:` section: where traces go. Off unless an OTLP endpoint is configured here or
//! in the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`
//! variables.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConfigError, Env, Secret};

/// The `telemetry:` section of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The OTLP/gRPC endpoint of a collector (`http://otel-collector:4317`); `https://` uses
    /// the system's CA certificates. Without it (and without the `OTEL_*` endpoint variables)
    /// no trace is recorded or sent.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// gRPC metadata sent with every export (`authorization`, `x-honeycomb-team`, …). The
    /// values are secrets: never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// `service.name` of the spans; default `tug`.
    #[serde(default)]
    pub service_name: Option<String>,
}

/// Where spans are exported, once the file and the `OTEL_*` variables are combined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceExport {
    pub endpoint: String,
    pub headers: Vec<(String, Secret)>,
    pub service_name: String,
}

/// The standard variables read, in the order they are looked at.
pub const OTEL_VARIABLES: &[&str] = &[
    "OTEL_SDK_DISABLED",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SERVICE_NAME",
];

impl TelemetryConfig {
    pub(crate) fn expand_variables(
        &mut self,
        expand: &mut dyn FnMut(&mut String, &str) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        if let Some(endpoint) = &mut self.endpoint {
            expand(endpoint, "telemetry.endpoint")?;
        }
        for (name, value) in &mut self.headers {
            expand(value.expose_mut(), &format!("telemetry.headers.{name}"))?;
        }
        if let Some(name) = &mut self.service_name {
            expand(name, "telemetry.service_name")?;
        }
        Ok(())
    }

    /// The export to set up, or `None` when tracing is off. The endpoint and service name of
    /// the file win over the `OTEL_*` variables (as in the OpenTelemetry SDKs, where code
    /// overrides the environment); headers from both are sent, the variable's winning for a
    /// name given twice (as the OTLP exporter merges them).
    /// `OTEL_SDK_DISABLED=true` turns tracing off whatever else is set.
    pub fn export(&self, env: Env<'_>) -> Result<Option<TraceExport>, (String, String)> {
        let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let Some(endpoint) = self
            .endpoint
            .clone()
            .filter(|e| !e.trim().is_empty())
            .or_else(|| set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
            .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
        else {
            return Ok(None);
        };
        let endpoint = endpoint.trim().to_owned();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err((
                "telemetry.endpoint".into(),
                format!("`{endpoint}` is not an http:// or https:// URL"),
            ));
        }
        for variable in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(protocol) = set(variable)
                && protocol.trim() != "grpc"
            {
                return Err((
                    "telemetry.endpoint".into(),
                    format!(
                        "{variable} is `{}`, but tug exports traces over OTLP/gRPC only \
                         (`grpc`, usually port 4317)",
                        protocol.trim()
                    ),
                ));
            }
        }
        let mut headers: BTreeMap<String, Secret> = BTreeMap::new();
        for (name, value) in &self.headers {
            headers.insert(name.to_ascii_lowercase(), value.clone());
        }
        // As the OTLP exporter reads them: the traces variable, else the general one; a header
        // they name replaces the file's.
        let variable = if set("OTEL_EXPORTER_OTLP_TRACES_HEADERS").is_some() {
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
        } else {
            "OTEL_EXPORTER_OTLP_HEADERS"
        };
        if let Some(list) = set(variable) {
            for (name, value) in parse_headers(&list)
                .map_err(|m| ("telemetry.headers".to_owned(), format!("{variable}: {m}")))?
            {
                headers.insert(name, Secret::new(value));
            }
        }
        for name in headers.keys() {
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !valid || name.ends_with("-bin") {
                return Err((
                    format!("telemetry.headers.{name}"),
                    "is not a valid gRPC metadata name".into(),
                ));
            }
        }
        for (name, value) in &headers {
            if value
                .expose()
                .bytes()
                .any(|b| !(b == b' ' || b == b'\t' || b.is_ascii_graphic()))
            {
                // The value is a secret: say what is wrong, never what it is.
                return Err((
                    format!("telemetry.headers.{name}"),
                    "the value holds characters gRPC metadata cannot carry".into(),
                ));
            }
        }
        let service_name = self
            .service_name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .or_else(|| set("OTEL_SERVICE_NAME"))
            .unwrap_or_else(|| "tug".to_owned());
        Ok(Some(TraceExport {
            endpoint,
            headers: headers.into_iter().collect(),
            service_name,
        }))
    }
}

/// `name=value,name2=value2`, values percent-decoded, as the OTLP exporter specification writes
/// `OTEL_EXPORTER_OTLP_HEADERS`. Errors never quote a value.
fn parse_headers(list: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, item) in list.split(',').enumerate() {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((name, value)) = item.split_once('=') else {
            return Err(format!("item {} is not `name=value`", i + 1));
        };
        let value = percent_decode(value.trim()).ok_or_else(|| {
            format!(
                "the value of `{}` is not percent-encoded UTF-8",
                name.trim()
            )
        })?;
        out.push((name.trim().to_ascii_lowercase(), value));
    }
    Ok(out)
}

fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn export(config: &TelemetryConfig, vars: &[(&str, &str)]) -> Option<TraceExport> {
        let env = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        config.export(&env).unwrap()
    }

    #[test]
    fn off_without_an_endpoint() {
        assert_eq!(export(&TelemetryConfig::default(), &[]), None);
        assert_eq!(
            export(
                &TelemetryConfig::default(),
                &[
                    ("OTEL_SERVICE_NAME", "tug-prod"),
                    ("OTEL_EXPORTER_OTLP_HEADERS", "a=b")
                ]
            ),
            None
        );
    }

    #[test]
    fn the_endpoint_comes_from_the_file_then_the_traces_variable_then_the_general_one() {
        let file = TelemetryConfig {
            endpoint: Some("http://file:4317".into()),
            ..TelemetryConfig::default()
        };
        let both = [
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4317"),
        ];
        assert_eq!(export(&file, &both).unwrap().endpoint, "http://file:4317");
        let none = TelemetryConfig::default();
        assert_eq!(export(&none, &both).unwrap().endpoint, "http://traces:4317");
        assert_eq!(
            export(&none, &both[1..]).unwrap().endpoint,
            "http://general:4317"
        );
        assert_eq!(export(&none, &both[1..]).unwrap().service_name, "tug");
        let disabled = [both[0], ("OTEL_SDK_DISABLED", "true")];
        assert_eq!(export(&file, &disabled), None);
    }

    #[test]
    fn headers_merge_and_the_variable_wins() {
        let mut config = TelemetryConfig {
            endpoint: Some("https://collector:4317".into()),
            service_name: Some("tug-eu".into()),
            ..TelemetryConfig::default()
        };
        config
            .headers
            .insert("Authorization".into(), Secret::new("Bearer file"));
        config
            .headers
            .insert("x-kept".into(), Secret::new("from the file"));
        let found = export(
            &config,
            &[
                ("OTEL_EXPORTER_OTLP_HEADERS", "ignored=1"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                    "authorization=Bearer%20env, x-team = a%2Cb",
                ),
            ],
        )
        .unwrap();
        let headers: Vec<(&str, &str)> = found
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        assert_eq!(
            headers,
            [
                ("authorization", "Bearer env"),
                ("x-kept", "from the file"),
                ("x-team", "a,b")
            ]
        );
        assert_eq!(found.service_name, "tug-eu");
    }

    #[test]
    fn refusals_never_quote_a_header_value() {
        let none = TelemetryConfig::default();
        let env = |name: &str| match name {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://c:4317".to_owned()),
            "OTEL_EXPORTER_OTLP_HEADERS" => Some("token=s3cret%zz".to_owned()),
            _ => None,
        };
        let (field, message) = none.export(&env).unwrap_err();
        assert_eq!(field, "telemetry.headers");
        assert!(!message.contains("s3cret"), "{message}");
        let env = |name: &str| match name {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://c:4318".to_owned()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("http/protobuf".to_owned()),
            _ => None,
        };
        let (_, message) = none.export(&env).unwrap_err();
        assert!(message.contains("gRPC only"), "{message}");
    }
}
