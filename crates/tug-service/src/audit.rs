//! The audit trail of state-changing calls: deploys, artifact pushes, releases, promotions,
//! rollbacks, unpins, policy changes, reindexing, rollout reports and webhook triggers. Each
//! operation records itself here, in the service core, once for every transport: who (the name
//! the caller authenticated as), what, where (service, environment, repository, branch), the
//! request id the caller saw, and the result — refusals with their code.
//!
//! The request id reaches the core through [`scope`]: a transport runs each request inside it
//! (`tug-server`'s request-id layer does, for REST and gRPC alike), so no operation's signature
//! carries it.
//!
//! An audit write that fails never changes the answer: the operation already happened (a deploy
//! is committed to the store before its audit record is written), so failing the call would only
//! make the caller retry something that was done. The failure is logged at ERROR with the record
//! (never a token) so operators see the gap.

use std::future::Future;

use tug_store::{AuditLog, AuditResult, NewAuditRecord};

use crate::auth::Principal;
use crate::error::ServiceError;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The actor of a call whose credentials did not authenticate.
pub const UNKNOWN_ACTOR: &str = "unknown";

/// Runs `f` as the request `request_id`: audit records written inside it carry the id.
pub async fn scope<F: Future>(request_id: String, f: F) -> F::Output {
    REQUEST_ID.scope(request_id, f).await
}

/// The id of the request being served, if a transport set one.
pub fn request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// What a call was about; the result is added when it is recorded.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub actor: String,
    /// For identity tokens: issuer, subject and the rules that matched.
    pub actor_detail: Option<serde_json::Value>,
    pub action: &'static str,
    pub service: Option<String>,
    pub environment: Option<String>,
    pub repository: Option<String>,
    pub branch: Option<String>,
}

impl Entry {
    pub fn new(action: &'static str, actor: impl Into<String>) -> Self {
        Entry {
            action,
            actor: actor.into(),
            ..Entry::default()
        }
    }

    /// An entry for `caller`, or for [`UNKNOWN_ACTOR`] when the credentials did not
    /// authenticate.
    pub fn for_caller(action: &'static str, caller: Option<&Principal>) -> Self {
        match caller {
            Some(principal) => Entry {
                actor_detail: principal.detail.clone(),
                ..Entry::new(action, principal.name.clone())
            },
            None => Entry::new(action, UNKNOWN_ACTOR),
        }
    }

    #[must_use]
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }

    #[must_use]
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    #[must_use]
    pub fn branch(mut self, repository: impl Into<String>, branch: impl Into<String>) -> Self {
        self.repository = Some(repository.into());
        self.branch = Some(branch.into());
        self
    }

    /// The record of this call having been accepted.
    pub fn accepted(self, message: impl Into<String>) -> NewAuditRecord {
        self.record(AuditResult::Accepted, None, message.into())
    }

    /// The record of this call having been refused with `error`.
    pub fn refused(self, error: &ServiceError) -> NewAuditRecord {
        self.record(
            AuditResult::Refused,
            Some(error.code().to_owned()),
            error.message.clone(),
        )
    }

    fn record(self, result: AuditResult, code: Option<String>, message: String) -> NewAuditRecord {
        NewAuditRecord {
            actor: self.actor,
            actor_detail: self.actor_detail,
            action: self.action.to_owned(),
            service: self.service,
            environment: self.environment,
            repository: self.repository,
            branch: self.branch,
            request_id: request_id(),
            result,
            code,
            message,
        }
    }
}

/// Appends `records`; a failure is logged at ERROR and does not change the caller's answer.
pub async fn write(log: &dyn AuditLog, records: impl IntoIterator<Item = NewAuditRecord>) {
    for record in records {
        if let Err(e) = log.append_audit(record.clone()).await {
            tracing::error!(
                action = %record.action,
                actor = %record.actor,
                service = record.service.as_deref(),
                environment = record.environment.as_deref(),
                result = record.result.as_str(),
                error = %e,
                "the audit record of this call could not be stored"
            );
        }
    }
}

/// Records one entry with the outcome of `result` (its message from `describe` when accepted)
/// and hands the result back.
pub async fn record<T>(
    log: &dyn AuditLog,
    entry: Entry,
    result: Result<T, ServiceError>,
    describe: impl FnOnce(&T) -> String,
) -> Result<T, ServiceError> {
    let record = match &result {
        Ok(value) => entry.accepted(describe(value)),
        Err(e) => entry.refused(e),
    };
    write(log, [record]).await;
    result
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use tug_store::{AuditQuery, AuditRecord, StoreError};

    use super::*;

    /// A store whose audit writes all fail.
    struct Broken;

    #[async_trait]
    impl AuditLog for Broken {
        async fn append_audit(&self, _: NewAuditRecord) -> tug_store::Result<AuditRecord> {
            Err(StoreError::WriterStopped)
        }

        async fn audit(&self, _: &AuditQuery) -> tug_store::Result<Vec<AuditRecord>> {
            Err(StoreError::WriterStopped)
        }
    }

    #[tokio::test]
    async fn a_failed_audit_write_leaves_the_answer_as_it_was() {
        let accepted = record(&Broken, Entry::new("deploy", "ci"), Ok(7), |n| {
            n.to_string()
        })
        .await;
        assert_eq!(accepted.ok(), Some(7));
        let refused: Result<(), ServiceError> = record(
            &Broken,
            Entry::new("deploy", "ci"),
            Err(ServiceError::not_found("no such service")),
            |()| String::new(),
        )
        .await;
        assert_eq!(refused.unwrap_err().code(), "not_found");
    }

    #[tokio::test]
    async fn records_carry_the_request_id_of_their_scope_and_the_refusal_code() {
        let entry = || {
            Entry::new("release", "ci")
                .service("api")
                .environment("dev")
        };
        assert_eq!(entry().accepted("done").request_id, None);
        let refused = scope("req-7".to_owned(), async {
            entry().refused(&ServiceError::not_found("no artifact"))
        })
        .await;
        assert_eq!(refused.request_id.as_deref(), Some("req-7"));
        assert_eq!(refused.result, AuditResult::Refused);
        assert_eq!(refused.code.as_deref(), Some("not_found"));
        assert_eq!(refused.message, "no artifact");
        assert_eq!(
            (refused.service.as_deref(), refused.environment.as_deref()),
            (Some("api"), Some("dev"))
        );
    }
}
