//! Refuses query parameters a route does not take. An ignored parameter is a silent change of
//! meaning — `POST /api/v1/deploy?dryrun=true` would push for real — so every route names the
//! parameters it reads, here in one table, and anything else is a 400 naming the parameter.

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use tug_service::ServiceError;

use crate::http::ApiError;

/// (method, route, the query parameters it takes). Routes not listed take none.
pub(crate) const ALLOWED: &[(Method, &str, &[&str])] = &[
    (Method::POST, "/api/v1/deploy", &["wait", "dryRun"]),
    (Method::GET, "/api/v1/health", &["service"]),
    (
        Method::GET,
        "/api/v1/jobs",
        &["repository", "status", "limit"],
    ),
    (
        Method::GET,
        "/api/v1/artifacts",
        &["service", "branch", "count"],
    ),
    (Method::GET, "/api/v1/artifacts/{id}", &["service"]),
    (Method::POST, "/api/v1/releases", &["wait", "dryRun"]),
    (
        Method::GET,
        "/api/v1/releases",
        &["service", "env", "count"],
    ),
    (
        Method::GET,
        "/api/v1/audit",
        &[
            "actor",
            "action",
            "service",
            "environment",
            "since",
            "until",
            "limit",
            "before",
        ],
    ),
    (Method::POST, "/api/v1/webhooks/dockerhub", &["token"]),
    (Method::POST, "/api/v1/webhooks/harbor", &["token"]),
];

/// The parameters `route` takes for `method`.
pub(crate) fn allowed(method: &Method, route: &str) -> &'static [&'static str] {
    ALLOWED
        .iter()
        .find(|(m, r, _)| m == method && *r == route)
        .map_or(&[], |(_, _, params)| *params)
}

/// The first parameter of `query` that is not in `allowed`, decoded as axum's `Query` decodes it.
fn unknown_parameter(query: &str, allowed: &[&str]) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(name, _)| name)
        .find(|name| !allowed.contains(&name.as_ref()))
        .map(|name| name.into_owned())
}

/// Middleware (a route layer, so the matched route is known).
pub(crate) async fn layer(request: Request, next: Next) -> Response {
    if let (Some(query), Some(route)) = (
        request.uri().query(),
        request.extensions().get::<MatchedPath>(),
    ) {
        let allowed = allowed(request.method(), route.as_str());
        if let Some(name) = unknown_parameter(query, allowed) {
            let takes = if allowed.is_empty() {
                "takes no query parameters".to_owned()
            } else {
                format!("takes only {}", allowed.join(", "))
            };
            return ApiError::from(ServiceError::invalid_field(
                &name,
                format!(
                    "unknown query parameter {name:?}: {} {} {takes}",
                    request.method(),
                    route.as_str()
                ),
            ))
            .into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_a_route_does_not_take_are_named() {
        let deploy = allowed(&Method::POST, "/api/v1/deploy");
        assert_eq!(unknown_parameter("wait=false", deploy), None);
        assert_eq!(unknown_parameter("wait=false&dryRun=true", deploy), None);
        assert_eq!(
            unknown_parameter("wait=false&dryrun=true", deploy),
            Some("dryrun".to_owned())
        );
        assert_eq!(
            unknown_parameter("dry%72un", deploy),
            Some("dryrun".to_owned())
        );
        assert_eq!(unknown_parameter("", deploy), None);
        let status = allowed(&Method::GET, "/api/v1/status/{service}");
        assert_eq!(
            unknown_parameter("env=prod", status),
            Some("env".to_owned())
        );
        assert_eq!(
            allowed(&Method::GET, "/api/v1/releases"),
            &["service", "env", "count"]
        );
        assert!(allowed(&Method::POST, "/api/v1/unpin").is_empty());
    }
}
