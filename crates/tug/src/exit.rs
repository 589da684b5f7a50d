//! Exit statuses, one table for every command (the README's "Exit status"):
//!
//! | status | meaning |
//! |---|---|
//! | 0 | done (also when nothing needed to change) |
//! | 1 | the work failed: a job, release, edit or push failed, a policy refused it, or its input (specs, artifact, configuration, files) is wrong |
//! | 2 | the command could not be carried out: usage (flags), transport (server unreachable, TLS, timeout), authentication or authorisation |
//!
//! An error that is not a [`Coded`] one is a failure (1), code `failed`.

use std::fmt;

pub(crate) const FAILED: u8 = 1;
pub(crate) const USAGE: u8 = 2;

/// An error with the exit status and the machine-readable code it reports (`-o json` prints
/// `{"error": {"code", "message"}}`).
#[derive(Debug)]
pub(crate) struct Coded {
    pub code: String,
    pub status: u8,
    pub message: String,
    /// The command already printed its result on stdout (a failed job's result object): the
    /// error goes to stderr only, so stdout holds one JSON document.
    pub reported: bool,
    /// The request field the server named as the one at fault (`deploySpecs[0].url`).
    pub field: Option<String>,
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

impl Coded {
    /// The job, release or edit failed, or a policy refused it (exit 1).
    pub(crate) fn failed(code: &str, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Coded {
            code: code.to_owned(),
            status: FAILED,
            message: message.into(),
            reported: false,
            field: None,
        })
    }

    /// Usage, transport, authentication or authorisation (exit 2).
    pub(crate) fn usage(code: &str, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Coded {
            code: code.to_owned(),
            status: USAGE,
            message: message.into(),
            reported: false,
            field: None,
        })
    }

    /// A failure whose result the command already printed.
    pub(crate) fn failed_and_reported(code: &str, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Coded {
            code: code.to_owned(),
            status: FAILED,
            message: message.into(),
            reported: true,
            field: None,
        })
    }

    /// A request the server answered with an error: authentication, the token's scope and an
    /// unavailable server are 2; everything else (policy refusals, conflicts, unknown names,
    /// invalid input) is a failure (1). `field` is the request field the server named as the
    /// one at fault.
    pub(crate) fn refused(
        code: &str,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> anyhow::Error {
        let status = match code {
            "unauthenticated" | "permission_denied" | "unavailable" => USAGE,
            _ => FAILED,
        };
        anyhow::Error::new(Coded {
            code: code.to_owned(),
            status,
            message: message.into(),
            reported: false,
            field: field.map(str::to_owned),
        })
    }
}

/// The exit status, the error code and whether the result was printed already.
pub(crate) fn classify(e: &anyhow::Error) -> (u8, String, bool) {
    e.chain()
        .find_map(|cause| cause.downcast_ref::<Coded>())
        .map_or_else(
            || (FAILED, "failed".to_owned(), false),
            |c| (c.status, c.code.clone(), c.reported),
        )
}
