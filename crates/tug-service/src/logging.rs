//! Process-wide logging: text for people, JSON for log pipelines, filtered by a
//! `RUST_LOG`-style directive from `log.level` (or `TUG_LOG_LEVEL`); and, when traces are
//! exported, the layer that turns tug's spans into OpenTelemetry spans (with its own filter, so
//! `log.level: warn` does not turn tracing off). Spans that belong to a trace carry a `trace_id`
//! field, which both formats print with the span.

use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{LogConfig, LogFormat};
use crate::telemetry::Tracing;

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("log.level: {0}")]
    Level(String),
    #[error("a global logger is already installed: {0}")]
    AlreadyInstalled(String),
}

/// Installs the global subscriber, writing to standard error, with `tracing`'s span layer when
/// it exports. Call once, at start-up.
pub fn init(config: &LogConfig, tracing: &Tracing) -> Result<(), LoggingError> {
    let filter = crate::config::log_filter(&config.level).map_err(LoggingError::Level)?;
    // Colours only for a person at a terminal: escape codes in a log file or a collector break
    // grep and parsers.
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let fmt = match config.format {
        LogFormat::Text => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_filter(filter).boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(tracing.layer())
        .try_init()
        .map_err(|error| LoggingError::AlreadyInstalled(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_levels_and_per_crate_directives() {
        assert!(crate::config::log_filter("info").is_ok());
        assert!(crate::config::log_filter("warn,tug_server=debug").is_ok());
    }

    #[test]
    fn rejects_a_malformed_filter_and_quotes_it() {
        let message = crate::config::log_filter("tug_server=loud").unwrap_err();
        assert!(message.contains("tug_server=loud"), "{message}");
    }

    #[test]
    fn init_installs_once_then_reports_the_second_attempt() {
        let config = LogConfig {
            format: LogFormat::Json,
            level: "info".into(),
        };
        init(&config, &Tracing::off()).unwrap();
        let again = init(&config, &Tracing::off()).unwrap_err();
        assert!(matches!(again, LoggingError::AlreadyInstalled(_)));
    }
}
