//! The gRPC API (tonic): `tug.v1.DeployService`, the standard health service and reflection.

use std::sync::Arc;

use crate::app::App;

pub fn router(app: Arc<App>) -> axum::Router {
    let _ = app;
    let (reporter, health) = tonic_health::server::health_reporter();
    drop(reporter);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tug_proto::FILE_DESCRIPTOR_SET)
        .build_v1();
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(health);
    if let Ok(r) = reflection {
        routes.add_service(r);
    }
    routes.routes().into_axum_router()
}
