//! The release API's transports: REST handlers, the gRPC `tug.v1.ReleaseService`, and the
//! inbound webhooks (source and image pushes, dispatch, Argo CD and Flux rollout reports). Each
//! parses its request and calls the service's release operation of the same name.

pub(crate) mod grpc;
pub(crate) mod rest;
pub(crate) mod webhooks;
