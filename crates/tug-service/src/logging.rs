//! Process-wide logging: text for people, JSON for log pipelines, filtered by a
//! `RUST_LOG`-style directive from `log.level` (or `TUG_LOG_LEVEL`).

use crate::config::{LogConfig, LogFormat};

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("log.level: {0}")]
    Level(String),
    #[error("a global logger is already installed: {0}")]
    AlreadyInstalled(String),
}

/// Installs the global subscriber, writing to standard error. Call once, at start-up.
pub fn init(config: &LogConfig) -> Result<(), LoggingError> {
    let filter = crate::config::log_filter(&config.level).map_err(LoggingError::Level)?;
    // Colours only for a person at a terminal: escape codes in a log file or a collector break
    // grep and parsers.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let installed = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|error| LoggingError::AlreadyInstalled(error.to_string()))
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
        init(&config).unwrap();
        let again = init(&config).unwrap_err();
        assert!(matches!(again, LoggingError::AlreadyInstalled(_)));
    }
}
