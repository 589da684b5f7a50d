//! The gRPC API of tug, package `tug.v1`: messages, the `DeployService` client and server stubs,
//! and the encoded file descriptor set a server registers for gRPC reflection.
//!
//! The code is generated at build time from `proto/tug/v1/tug.proto` by `protox`, so no system
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
            .find(|file| file.package() == "tug.v1")
            .unwrap();
        let service = tug
            .service
            .iter()
            .find(|service| service.name() == "DeployService")
            .unwrap();
        let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
        assert_eq!(methods, ["Deploy", "GetJob", "ListJobs"]);
        assert!(service.method[0].server_streaming());
        assert_eq!(
            format!("{}.{}", tug.package(), service.name()),
            DEPLOY_SERVICE_NAME
        );
    }

    #[test]
    fn reflection_accepts_the_descriptor_set() {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .with_service_name(DEPLOY_SERVICE_NAME)
            .build_v1()
            .unwrap();
    }

    #[test]
    fn commit_spec_keeps_the_delivery_json_names() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let tug = set
            .file
            .iter()
            .find(|file| file.package() == "tug.v1")
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
