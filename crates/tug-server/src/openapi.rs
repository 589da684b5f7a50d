//! The OpenAPI document served at `/api/v1/openapi.json`, generated from the types the handlers
//! read and write: the request model of tug-spec, the release inputs of tug-service and the
//! answers of this crate. Each router registers a route together with its documentation, so the
//! document lists exactly the routes the server serves. This module sits above the routers it
//! reads, so it serves its own route.

use axum::Router;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tug",
        description = "GitOps delivery: deploy requests that edit manifests byte-exactly, commit and push."
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

/// Every operation needs a bearer token unless it says otherwise (the signed webhooks).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

fn routes() -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// `GET /api/v1/openapi.json`.
pub fn router() -> Router {
    routes().split_for_parts().0
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "server",
    summary = "This document",
    responses((status = 200, description = "OpenAPI document", body = Object)))]
async fn openapi_json() -> axum::Json<Value> {
    axum::Json(document())
}

/// The document, built from the routers' registrations.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(routes().into_openapi());
    doc.merge(crate::http::routes().into_openapi());
    doc.merge(crate::release::rest::routes().into_openapi());
    doc.merge(crate::release::webhooks::routes().into_openapi());
    doc
}

/// The document as JSON.
pub fn document() -> Value {
    serde_json::to_value(openapi()).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    fn operation<'a>(doc: &'a Value, method: &Method, route: &str) -> Option<&'a Value> {
        doc["paths"]
            .get(route)?
            .get(method.as_str().to_ascii_lowercase())
    }

    fn query_parameters(operation: &Value) -> Vec<String> {
        let mut names: Vec<String> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "query")
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    }

    /// Every route the server serves is documented.
    #[test]
    fn documents_every_route() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        for route in [
            "/api/v1/deploy",
            "/api/v1/jobs",
            "/api/v1/jobs/{id}",
            "/api/v1/health",
            "/api/v1/openapi.json",
            "/metrics",
            "/api/v1/artifacts",
            "/api/v1/artifacts/{id}",
            "/api/v1/artifacts/{id}/bundle",
            "/api/v1/releases",
            "/api/v1/status/{service}",
            "/api/v1/reindex",
            "/api/v1/unpin",
            "/api/v1/rollouts",
            "/api/v1/policies/{service}",
            "/api/v1/policies/{service}/auto-release",
            "/api/v1/policies/{service}/branch-restriction",
            "/api/v1/webhooks/github",
            "/api/v1/webhooks/gitlab",
            "/api/v1/webhooks/dockerhub",
            "/api/v1/webhooks/harbor",
            "/api/v1/dispatch",
            "/api/v1/webhooks/argocd",
            "/api/v1/webhooks/flux",
        ] {
            assert!(paths.contains_key(route), "{route} is not documented");
        }
        assert_eq!(doc["info"]["title"], "tug");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    }

    /// Every operation documents exactly the query parameters the query guard lets through, so
    /// a parameter added to a route without documentation (or the reverse) fails here.
    #[test]
    fn query_parameters_are_the_guards() {
        let doc = document();
        let mut operations = 0;
        for (route, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let Ok(method) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
                    continue;
                };
                let mut allowed: Vec<String> = crate::query_guard::allowed(&method, route)
                    .iter()
                    .map(|p| (*p).to_owned())
                    .collect();
                allowed.sort();
                assert_eq!(
                    query_parameters(operation),
                    allowed,
                    "{method} {route}: documented query parameters differ from the guard's"
                );
                operations += 1;
            }
        }
        assert!(operations >= 26, "only {operations} operations");
        for (method, route, _) in crate::query_guard::ALLOWED {
            assert!(
                operation(&doc, method, route).is_some(),
                "{method} {route} takes query parameters but is not documented"
            );
        }
    }

    /// Every schema a path or schema refers to exists.
    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        for reference in text.split("#/components/schemas/").skip(1) {
            let name: String = reference
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                .collect();
            assert!(
                doc["components"]["schemas"].get(&name).is_some(),
                "missing schema {name}"
            );
        }
    }

    /// Resolves `$ref`s of the document's own schemas.
    fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
        match schema["$ref"].as_str() {
            Some(r) => {
                let name = r.trim_start_matches("#/components/schemas/");
                resolve(doc, &doc["components"]["schemas"][name])
            }
            None => schema,
        }
    }

    /// The alternatives of a schema: itself, or the members of its `oneOf`/`anyOf`.
    fn alternatives<'a>(doc: &'a Value, schema: &'a Value) -> Vec<&'a Value> {
        let schema = resolve(doc, schema);
        let mut out = vec![schema];
        for key in ["oneOf", "anyOf", "allOf"] {
            for member in schema[key].as_array().into_iter().flatten() {
                out.extend(alternatives(doc, member));
            }
        }
        out
    }

    /// Every key of `value` is a property of `schema`, recursively.
    fn check_keys(doc: &Value, schema: &Value, value: &Value, at: &str) {
        match value {
            Value::Object(map) => {
                let options = alternatives(doc, schema);
                for (key, item) in map {
                    let property = options
                        .iter()
                        .find_map(|s| s["properties"].get(key))
                        .or_else(|| {
                            options.iter().find_map(|s| {
                                s["additionalProperties"]
                                    .is_object()
                                    .then(|| &s["additionalProperties"])
                            })
                        });
                    let Some(property) = property else {
                        panic!("{at}.{key} is not in the schema");
                    };
                    check_keys(doc, property, item, &format!("{at}.{key}"));
                }
            }
            Value::Array(items) => {
                let options = alternatives(doc, schema);
                let item_schema = options
                    .iter()
                    .find(|s| s["items"].is_object())
                    .map(|s| &s["items"])
                    .unwrap_or_else(|| panic!("{at} is not an array in the schema"));
                for (i, item) in items.iter().enumerate() {
                    check_keys(doc, item_schema, item, &format!("{at}[{i}]"));
                }
            }
            _ => {}
        }
    }

    /// A request using every field of the model: each key it writes is in the schema of the
    /// deploy request body, so a field added to the model cannot go undocumented.
    #[test]
    fn the_deploy_schema_has_every_field_of_the_model() {
        let doc = document();
        let body = &doc["paths"]["/api/v1/deploy"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"];
        assert_eq!(body["$ref"], "#/components/schemas/DeployRequest");
        let request: tug_spec::DeployRequest = tug_spec::from_json(
            "request",
            r#"{
              "commitSpec": {"CommitMessage": "m", "CommitUserName": "n", "CommitUserEmail": "e",
                "CommitProject": "p", "CommitBranch": "b", "CommitTag": "t", "CommitShortSHA": "s"},
              "deploySpecs": [{"url": "u", "repository": "r", "updates": [{"branch": "main", "paths": [
                {"path": "a",
                 "kustomize": {"images": [{"name": "n", "newName": "m", "newTag": "t", "digest": "d"}]},
                 "yq": [{"file": "f", "key": ".k", "value": 3, "type": "number"}],
                 "images": [{"file": "f", "name": "n", "container": "c", "newName": "m",
                             "newTag": "t", "digest": "d"}],
                 "helm": [{"file": "f", "key": ".image", "name": "n", "newName": "m",
                           "newTag": "t", "digest": "d"}],
                 "chart": [{"file": "f", "name": "n", "repository": "r", "version": "1.0"}],
                 "redeploy": {"file": "f", "workload": "w", "annotation": "a"}}]}]}],
              "notify": {"disabled": true, "message": "m", "context": {"k": "v"}},
              "idempotencyKey": "k", "allowEmpty": true, "strict": true
            }"#,
        )
        .unwrap();
        let value = serde_json::to_value(&request).unwrap();
        check_keys(&doc, body, &value, "DeployRequest");
        // And the schema refuses what the server refuses.
        let schema = resolve(&doc, body);
        assert_eq!(schema["additionalProperties"], false);
        let yq = resolve(&doc, &doc["components"]["schemas"]["YqUpdate"]);
        assert_eq!(yq["required"], serde_json::json!(["file", "key", "value"]));
    }

    #[test]
    fn deploy_documents_wait_dry_run_and_the_idempotency_header() {
        let doc = document();
        let deploy = operation(&doc, &Method::POST, "/api/v1/deploy").unwrap();
        let parameter = |name: &str| {
            deploy["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("no parameter {name}"))
                .clone()
        };
        assert_eq!(parameter("wait")["schema"]["default"], true);
        assert_eq!(parameter("dryRun")["schema"]["default"], false);
        assert_eq!(parameter("Idempotency-Key")["in"], "header");
        assert!(deploy["responses"].get("202").is_some());
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}
