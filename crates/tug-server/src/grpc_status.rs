//! What both gRPC services answer with: the one mapping of service errors to status codes, and
//! job states as `tug.v1.JobStatus`.

use tonic::{Code, Status};
use tug_proto::v1;
use tug_service::{ErrorKind, ServiceError};
use tug_store::JobState;

/// The one mapping of service errors to gRPC status codes; the message is the one REST answers
/// with.
pub(crate) fn status(error: &ServiceError) -> Status {
    error.log_refusal();
    let code = match error.kind {
        ErrorKind::Invalid { .. } => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        // Nothing to promote or roll back, a pin, conflicting policies, a failed commit: the
        // request is fine, the state of the service is not.
        ErrorKind::Conflict | ErrorKind::PolicyConflict => Code::FailedPrecondition,
        // A branch restriction forbids the release, as a token's scope forbids a write.
        ErrorKind::PolicyViolation | ErrorKind::Forbidden => Code::PermissionDenied,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Internal => Code::Internal,
        ErrorKind::Busy { .. } => Code::ResourceExhausted,
    };
    let mut status = Status::new(code, error.message());
    if let ErrorKind::Busy { retry_after_secs } = error.kind {
        // As REST's `Retry-After`; gRPC clients read it from the trailers.
        status.metadata_mut().insert(
            "retry-after",
            tonic::metadata::MetadataValue::from(retry_after_secs),
        );
    }
    status
}

pub(crate) fn job_status(state: JobState) -> v1::JobStatus {
    match state {
        JobState::Queued => v1::JobStatus::Queued,
        JobState::Running => v1::JobStatus::Running,
        JobState::Pending => v1::JobStatus::Pending,
        JobState::Succeeded => v1::JobStatus::Succeeded,
        JobState::Failed => v1::JobStatus::Failed,
    }
}
