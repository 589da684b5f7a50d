//! The gRPC API of tug, package `tug.v1`: messages, the `DeployService` and `ReleaseService`
//! client and server stubs, and the encoded file descriptor set a server registers for gRPC
//! reflection.
//!
//! The code is generated at build time from `proto/tug/v1/tug.proto` (deploys and jobs) and
//! `proto/tug/v1/release.proto` (artifacts, releases, status, policies) by `protox`, so no system
//! `protoc` is needed. `v1::DeployRequest` converts to and from [`tug_spec::DeployRequest`] with
//! `From`, so a gRPC request and a REST body mean the same thing.

mod convert;

/// Package `tug.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::unwrap_used, clippy::expect_used)]
    tonic::include_proto!("tug.v1");
}

/// The encoded `FileDescriptorSet` of `tug.v1` (with its imports), for
/// `tonic_reflection::server::Builder::register_encoded_file_descriptor_set`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tug_descriptor");

/// Full name of the deploy service, as reflection and health checks spell it.
pub const DEPLOY_SERVICE_NAME: &str = "tug.v1.DeployService";

/// Full name of the release service, as reflection and health checks spell it.
pub const RELEASE_SERVICE_NAME: &str = "tug.v1.ReleaseService";

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn descriptor_set_describes_the_deploy_service() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let tug = set
            .file
            .iter()
            .find(|file| file.name() == "tug/v1/tug.proto")
            .unwrap();
        let service = tug
            .service
            .iter()
            .find(|service| service.name() == "DeployService")
            .unwrap();
        let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
        assert_eq!(methods, ["Deploy", "GetJob", "ListJobs", "PreviewDeploy"]);
        assert!(service.method[0].server_streaming());
        assert_eq!(
            format!("{}.{}", tug.package(), service.name()),
            DEPLOY_SERVICE_NAME
        );
    }

    #[test]
    fn descriptor_set_describes_the_release_service() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let release = set
            .file
            .iter()
            .find(|file| file.name() == "tug/v1/release.proto")
            .unwrap();
        assert_eq!(release.package(), "tug.v1");
        let service = release
            .service
            .iter()
            .find(|service| service.name() == "ReleaseService")
            .unwrap();
        let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
        assert_eq!(
            methods,
            [
                "PushArtifact",
                "GetArtifact",
                "ListArtifacts",
                "UploadBundle",
                "Release",
                "DescribeReleases",
                "GetStatus",
                "Reindex",
                "Unpin",
                "ReportRollout",
                "ListPolicies",
                "ApplyAutoRelease",
                "ApplyBranchRestriction",
                "DeletePolicies",
            ]
        );
        // Every call answers once; only deploys stream.
        assert!(
            service
                .method
                .iter()
                .all(|m| !m.server_streaming() && !m.client_streaming())
        );
        assert_eq!(
            format!("{}.{}", release.package(), service.name()),
            RELEASE_SERVICE_NAME
        );
        // Job outcomes reuse the deploy API's job status rather than a second enum.
        let outcome = release
            .message_type
            .iter()
            .find(|message| message.name() == "JobOutcome")
            .unwrap();
        let status = outcome.field.iter().find(|f| f.name() == "status").unwrap();
        assert_eq!(status.type_name(), ".tug.v1.JobStatus");
    }

    #[test]
    fn reflection_accepts_the_descriptor_set() {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .with_service_name(DEPLOY_SERVICE_NAME)
            .with_service_name(RELEASE_SERVICE_NAME)
            .build_v1()
            .unwrap();
    }

    #[test]
    fn push_artifact_request_carries_the_file_bytes_unchanged() {
        // The artifact file is the contract with CI: it travels as bytes, not re-encoded.
        let file = br#"{"id": "main-1",  "service":"api"}"#;
        let request = v1::PushArtifactRequest {
            artifact_json: file.to_vec(),
        };
        let decoded = v1::PushArtifactRequest::decode(request.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.artifact_json, file);
    }

    #[test]
    fn commit_spec_keeps_the_delivery_json_names() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let tug = set
            .file
            .iter()
            .find(|file| file.name() == "tug/v1/tug.proto")
            .unwrap();
        let commit_spec = tug
            .message_type
            .iter()
            .find(|message| message.name() == "CommitSpec")
            .unwrap();
        let json_names: Vec<&str> = commit_spec.field.iter().map(|f| f.json_name()).collect();
        assert_eq!(
            &json_names[..3],
            ["CommitMessage", "CommitUserName", "CommitUserEmail"]
        );
    }

    #[test]
    fn deploy_event_round_trips_through_the_wire_format() {
        let event = v1::DeployEvent {
            event: Some(v1::deploy_event::Event::Result(v1::DeployResult {
                job_id: "0190a000-0000-7000-8000-000000000000".into(),
                status: v1::JobStatus::Succeeded.into(),
                branches: vec![v1::BranchResult {
                    repository: "platform".into(),
                    branch: "main".into(),
                    outcome: Some(v1::branch_result::Outcome::CommitSha("ab12".into())),
                    ..Default::default()
                }],
                created: true,
                message: "[INFO] job 0190a000-0000-7000-8000-000000000000 succeeded".into(),
            })),
        };
        let decoded = v1::DeployEvent::decode(event.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, event);
    }
}
