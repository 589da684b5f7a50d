//! The one error every service operation answers with. The transports map it once each: REST to a
//! status and `{code, message, details}` body, gRPC to a `Status` — in one exhaustive `match`, so
//! a new kind cannot silently become "internal" on one of them.

use serde_json::{Value, json};

/// What went wrong, as far as a caller can act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed; `field` names the part at fault when one is.
    Invalid { field: Option<String> },
    /// The thing asked for does not exist (a job, an artifact, a service, releases at all).
    NotFound,
    /// The request is fine, the state is not: nothing to promote, a pin, a concurrent change.
    Conflict,
    /// A new policy contradicts one already in force (`details.conflictsWith` names it).
    PolicyConflict,
    /// A release or branch policy forbids it.
    PolicyViolation,
    /// No token, or one that matches nothing.
    Unauthenticated,
    /// A valid identity outside its grants.
    Forbidden,
    /// A dependency (the store, a git remote) failed; the same request may succeed later.
    Unavailable,
    /// The server is at a configured limit; the same request is welcome after `retry_after_secs`.
    Busy { retry_after_secs: u64 },
    /// A bug or a broken configuration.
    Internal,
}

/// A refused or failed service operation: its kind, a message for people (it names the field,
/// file, policy or thing at fault) and structured details for machines.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ServiceError {
    pub kind: ErrorKind,
    pub message: String,
    /// `{"field": …}`, `{"what": …}`, `{"policy": …}`: what REST answers as `details`.
    pub details: Value,
}

impl ServiceError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let details = match &kind {
            ErrorKind::Invalid { field: Some(f) } => json!({ "field": f }),
            _ => json!({}),
        };
        ServiceError {
            kind,
            message: message.into(),
            details,
        }
    }

    /// An invalid request without a single field at fault.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid { field: None }, message)
    }

    /// An invalid request naming the field at fault.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::Invalid {
                field: Some(field.to_owned()),
            },
            message,
        )
    }

    /// An invalid request where the field is known only sometimes (a parser's error path).
    pub fn invalid_at(field: Option<&str>, message: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::Invalid {
                field: field.map(str::to_owned),
            },
            message,
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// The job store failed: logged here, once, with the error.
    pub fn store(e: &tug_store::StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        Self::unavailable(format!("the job store failed: {e}"))
    }

    /// Replaces `details` (which names the field, policy or thing at fault).
    #[must_use]
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// Names the field at fault (when known) of an invalid request.
    #[must_use]
    pub fn with_field(self, field: Option<&str>) -> Self {
        match field {
            Some(f) => Self::invalid_field(f, self.message),
            None => self,
        }
    }

    /// The machine-readable code REST answers in its body (`invalid_argument`, `not_found`, …).
    pub fn code(&self) -> &'static str {
        match self.kind {
            ErrorKind::Invalid { .. } => "invalid_argument",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "failed_precondition",
            ErrorKind::PolicyConflict => "conflict",
            ErrorKind::PolicyViolation => "policy_violation",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Forbidden => "permission_denied",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Busy { .. } => "resource_exhausted",
            ErrorKind::Internal => "internal",
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Refusals say why in the log too, in the request's span (so with its id); the reason
    /// names the token for a scope refusal, never the token itself.
    pub fn log_refusal(&self) {
        if matches!(
            self.kind,
            ErrorKind::Unauthenticated
                | ErrorKind::Forbidden
                | ErrorKind::Conflict
                | ErrorKind::PolicyConflict
                | ErrorKind::PolicyViolation
        ) {
            tracing::warn!(code = self.code(), reason = %self.message, "request refused");
        }
    }
}

impl From<crate::auth::AuthError> for ServiceError {
    fn from(e: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError;
        match e {
            AuthError::Unauthenticated { reason } => {
                ServiceError::new(ErrorKind::Unauthenticated, reason)
            }
            AuthError::Forbidden {
                message, missing, ..
            } => {
                let error = ServiceError::new(ErrorKind::Forbidden, message);
                match missing {
                    Some(grant) => error.with_details(serde_json::json!({ "missingGrant": grant })),
                    None => error,
                }
            }
            AuthError::Unavailable { reason } => ServiceError::new(ErrorKind::Unavailable, reason),
        }
    }
}

impl From<crate::intake::Rejection> for ServiceError {
    fn from(r: crate::intake::Rejection) -> Self {
        match r {
            crate::intake::Rejection::Invalid { field, message } => {
                ServiceError::invalid_at(field.as_deref(), message)
            }
            crate::intake::Rejection::Auth(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_field_names_the_field_in_details() {
        let e = ServiceError::invalid_field("count", "count: must be between 1 and 1000");
        assert_eq!(e.code(), "invalid_argument");
        assert_eq!(e.details, json!({"field": "count"}));
        assert_eq!(ServiceError::invalid("x").details, json!({}));
    }

    #[test]
    fn auth_errors_keep_their_kind() {
        let e: ServiceError = crate::auth::AuthError::Unauthenticated {
            reason: "no token".to_owned(),
        }
        .into();
        assert_eq!(e.kind, ErrorKind::Unauthenticated);
        let e: ServiceError = crate::auth::AuthError::Forbidden {
            actor: "ci".into(),
            message: "token `ci` has no grant for `read`".into(),
            missing: Some(serde_json::json!({"verb": "read"})),
        }
        .into();
        assert_eq!(e.kind, ErrorKind::Forbidden);
        assert_eq!(e.details["missingGrant"]["verb"], "read");
        let e: ServiceError = crate::auth::AuthError::Unavailable {
            reason: "issuer down".into(),
        }
        .into();
        assert_eq!(e.kind, ErrorKind::Unavailable);
    }
}
