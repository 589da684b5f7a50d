//! Targets several benchmarks check, stated once.

/// A single request may take at most this many times a bare push of one commit …
pub(crate) const FLOOR_FACTOR: f64 = 1.2;
/// … plus this much.
pub(crate) const FLOOR_ALLOWANCE_MS: f64 = 5.0;
/// The server's resident set under load.
pub(crate) const TARGET_RSS_MIB: f64 = 100.0;
