//! The OpenAPI document served at `/api/v1/openapi.json`.

use serde_json::{Value, json};

pub fn document() -> Value {
    let error = json!({"$ref": "#/components/schemas/Error"});
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "tug",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "GitOps delivery: deploy requests that edit manifests byte-exactly, commit and push."
        },
        "paths": {
            "/api/v1/deploy": {"post": {
                "summary": "Submit a deploy request; streams progress as NDJSON, then the outcome",
                "parameters": [
                    {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"},
                     "description": "The same key returns the same job, never a second commit"},
                    {"name": "wait", "in": "query", "schema": {"type": "boolean", "default": true},
                     "description": "false: answer 202 with the job once stored"},
                    {"name": "dryRun", "in": "query", "schema": {"type": "boolean", "default": false},
                     "description": "true: answer (JSON) what the request would change on the current tips — per branch the status (would_commit, up_to_date, failed), the commit message and a unified diff per file; nothing is stored or pushed"}
                ],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DeployRequest"}}}},
                "responses": {
                    "200": {"description": "Progress lines `{\"result\":{\"message\":…}}`, the last one with the job outcome",
                            "content": {"application/x-ndjson": {"schema": {"type": "object"}}}},
                    "202": {"description": "Stored (wait=false)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}},
                    "400": {"description": "Invalid request", "content": {"application/json": {"schema": error}}},
                    "401": {"description": "No valid token", "content": {"application/json": {"schema": error}}},
                    "403": {"description": "Token not allowed for a repository or branch", "content": {"application/json": {"schema": error}}},
                    "413": {"description": "Body too large", "content": {"application/json": {"schema": error}}}
                }
            }},
            "/api/v1/jobs": {"get": {
                "summary": "List jobs, newest first",
                "parameters": [
                    {"name": "repository", "in": "query", "schema": {"type": "string"}},
                    {"name": "status", "in": "query", "schema": {"type": "string", "enum": ["queued", "running", "pending", "succeeded", "failed"]}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}
                ],
                "responses": {"200": {"description": "Jobs", "content": {"application/json": {"schema": {"type": "object", "properties": {"jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}}}}}}}}
            }},
            "/api/v1/jobs/{id}": {"get": {
                "summary": "One job with its events",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "The job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}},
                    "404": {"description": "No such job", "content": {"application/json": {"schema": error}}}
                }
            }},
            "/api/v1/health": {"get": {"summary": "Health", "responses": {"200": {"description": "`{\"status\":\"SERVING\"}`"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "OpenMetrics text"}}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "object"}}},
                "DeployRequest": {"type": "object", "properties": {
                    "commitSpec": {"type": "object", "properties": {
                        "CommitMessage": {"type": "string"}, "CommitUserName": {"type": "string"}, "CommitUserEmail": {"type": "string"},
                        "CommitProject": {"type": "string"}, "CommitBranch": {"type": "string"}, "CommitTag": {"type": "string"}, "CommitShortSHA": {"type": "string"}}},
                    "deploySpecs": {"type": "array", "items": {"type": "object", "properties": {
                        "url": {"type": "string"}, "repository": {"type": "string"},
                        "updates": {"type": "array", "items": {"type": "object", "properties": {
                            "branch": {"type": "string"},
                            "paths": {"type": "array", "items": {"type": "object", "properties": {
                                "path": {"type": "string"},
                                "kustomize": {"type": "object"}, "yq": {"type": "array"}, "images": {"type": "array"},
                                "helm": {"type": "array"}, "chart": {"type": "array"}, "redeploy": {"type": "object"}}}}}}}}}},
                    "notify": {"type": "object"},
                    "idempotencyKey": {"type": "string"},
                    "allowEmpty": {"type": "boolean"},
                    "strict": {"type": "boolean", "description": "Refuse the request when an edit would only add (a new images entry, a new key); absent: the server's deploy.strict"}}},
                "Job": {"type": "object", "properties": {
                    "jobId": {"type": "string"}, "status": {"type": "string"}, "requestedBy": {"type": "string"},
                    "createdAt": {"type": "string"}, "updatedAt": {"type": "string"},
                    "updates": {"type": "array", "items": {"type": "object"}}, "events": {"type": "array", "items": {"type": "object"}}}}
            }
        },
        "security": [{"bearer": []}]
    });
    if let (Some(paths), Value::Object(more)) = (doc["paths"].as_object_mut(), release_paths()) {
        paths.extend(more);
    }
    if let (Some(schemas), Value::Object(more)) = (
        doc["components"]["schemas"].as_object_mut(),
        release_schemas(),
    ) {
        schemas.extend(more);
    }
    doc
}

fn body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn ok(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"type": "object"}}}})
}

fn query(name: &str, required: bool, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": required, "schema": {"type": "string"}, "description": description})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

/// Releases: artifacts, release / promote / rollback, status and history, policies, triggers and
/// cluster feedback.
fn release_paths() -> Value {
    let error = json!({"$ref": "#/components/schemas/Error"});
    let errors = json!({
        "400": {"description": "Invalid input; `details.field` names the field", "content": {"application/json": {"schema": error}}},
        "401": {"description": "No valid token", "content": {"application/json": {"schema": error}}},
        "403": {"description": "Token not allowed for the repository or branch", "content": {"application/json": {"schema": error}}},
        "404": {"description": "Unknown service, environment or artifact", "content": {"application/json": {"schema": error}}}
    });
    let with = |mut responses: Value, extra: Value| {
        if let (Some(r), Value::Object(e)) = (responses.as_object_mut(), extra) {
            r.extend(e);
        }
        responses
    };
    let webhook = |summary: &str, auth: &str| {
        json!({"post": {
            "summary": summary,
            "description": auth,
            "security": [],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": with(json!({"200": ok("What the event did (artifacts registered, releases queued)")}), errors.clone())
        }})
    };
    json!({
        "/api/v1/artifacts": {
            "post": {
                "summary": "Register an artifact (the release manager's artifact.json); runs the service's auto-release policies",
                "requestBody": body("Artifact"),
                "responses": with(json!({"201": ok("The stored artifact and the auto-releases it started"), "409": {"description": "The id exists with other content", "content": {"application/json": {"schema": error}}}}), errors.clone())
            },
            "get": {
                "summary": "Artifacts of a service, newest first",
                "parameters": [query("service", true, "The service"), query("branch", false, "Only artifacts built from this branch (may contain `/`)"), query("count", false, "How many (default 10)")],
                "responses": with(json!({"200": ok("`{artifacts: [...]}`")}), errors.clone())
            }
        },
        "/api/v1/artifacts/{id}": {"get": {
            "summary": "One artifact",
            "parameters": [path_param("id")],
            "responses": with(json!({"200": ok("The artifact")}), errors.clone())
        }},
        "/api/v1/artifacts/{id}/bundle": {"post": {
            "summary": "Attach rendered manifests for copy-mode releases",
            "parameters": [path_param("id")],
            "requestBody": body("Bundle"),
            "responses": with(json!({"200": ok("The files stored and the auto-releases started")}), errors.clone())
        }},
        "/api/v1/releases": {
            "post": {
                "summary": "Release, promote or roll back a service in environments; streams progress as NDJSON",
                "description": "One commit per environment through the branch's writer. Refused with the policy's id when a branch restriction forbids it; `already up to date` when it already runs.",
                "requestBody": body("ReleaseRequest"),
                "responses": with(json!({"200": {"description": "Progress lines, then one outcome per environment", "content": {"application/x-ndjson": {"schema": {"type": "object"}}}}}), errors.clone())
            },
            "get": {
                "summary": "Release history of a service, newest first (from commit trailers)",
                "parameters": [query("service", true, "The service"), query("env", false, "Only this environment"), query("count", false, "How many per environment (default 10)")],
                "responses": with(json!({"200": ok("`{releases: [...]}` with artifact, intent, who, commit and rollout state")}), errors.clone())
            }
        },
        "/api/v1/status/{service}": {"get": {
            "summary": "What runs where: per environment the artifact, tag, author, committer, message, date, CI link, commit, pin and rollout state",
            "parameters": [path_param("service")],
            "responses": with(json!({"200": ok("`{service, environments: [...]}`")}), errors.clone())
        }},
        "/api/v1/reindex": {"post": {
            "summary": "Rebuild the release index from the commit trailers of every environment branch",
            "responses": with(json!({"200": ok("Branches read and releases found")}), errors.clone())
        }},
        "/api/v1/unpin": {"post": {
            "summary": "Lift a rollback pin so auto-release resumes (an empty commit with `Unpinned-by`)",
            "requestBody": body("Unpin"),
            "responses": with(json!({"200": ok("The unpin commit's job and the lifted pin")}), errors.clone())
        }},
        "/api/v1/rollouts": {"post": {
            "summary": "Record a rollout state (progressing, healthy, degraded) for the release at a revision",
            "requestBody": body("Rollout"),
            "responses": with(json!({"200": ok("The release it matched")}), errors.clone())
        }},
        "/api/v1/policies/{service}": {
            "get": {
                "summary": "The service's policies (policies/<service>.json) and the global restrictions",
                "parameters": [path_param("service")],
                "responses": with(json!({"200": ok("`{autoReleases, branchRestrictions, global}`")}), errors.clone())
            },
            "delete": {
                "summary": "Delete policies by id (global restrictions cannot be deleted)",
                "parameters": [path_param("service")],
                "requestBody": body("DeletePolicies"),
                "responses": with(json!({"200": ok("The policies after the commit")}), errors.clone())
            }
        },
        "/api/v1/policies/{service}/auto-release": {"post": {
            "summary": "Release every new artifact of a branch to an environment automatically",
            "parameters": [path_param("service")],
            "requestBody": body("AutoRelease"),
            "responses": with(json!({"200": ok("The policies after the commit"), "409": {"description": "Conflicts with a branch restriction (named)", "content": {"application/json": {"schema": error}}}}), errors.clone())
        }},
        "/api/v1/policies/{service}/branch-restriction": {"post": {
            "summary": "Allow only branches matching a regex in an environment",
            "parameters": [path_param("service")],
            "requestBody": body("BranchRestriction"),
            "responses": with(json!({"200": ok("The policies after the commit"), "409": {"description": "Conflicts with an auto-release (named)", "content": {"application/json": {"schema": error}}}}), errors.clone())
        }},
        "/api/v1/webhooks/github": webhook("GitHub push and package events", "Signed with `X-Hub-Signature-256` (HMAC-SHA256 of the body with the configured secret)."),
        "/api/v1/webhooks/gitlab": webhook("GitLab push and tag events", "Authenticated by `X-Gitlab-Token`."),
        "/api/v1/webhooks/dockerhub": webhook("Docker Hub image pushes", "Authenticated by the `token` query parameter."),
        "/api/v1/webhooks/harbor": webhook("Harbor PUSH_ARTIFACT events", "Authenticated by the `Authorization` header Harbor sends."),
        "/api/v1/dispatch": {"post": {
            "summary": "A repository_dispatch-style event mapped to deploy specs by the server's rules",
            "requestBody": body("Dispatch"),
            "responses": with(json!({"200": ok("The jobs started")}), errors.clone())
        }},
        "/api/v1/webhooks/argocd": webhook("Argo CD notification webhooks", "Matched to a release by revision; sets the rollout state."),
        "/api/v1/webhooks/flux": webhook("Flux notification-controller events", "Matched to a release by revision; sets the rollout state.")
    })
}

fn release_schemas() -> Value {
    let person = json!({"type": "object", "properties": {"name": {"type": "string"}, "email": {"type": "string"}}});
    let string = json!({"type": "string"});
    json!({
        "Artifact": {"type": "object", "required": ["id", "service"], "additionalProperties": false, "properties": {
            "id": string, "service": string, "namespace": string,
            "application": {"type": "object", "properties": {
                "branch": string, "sha": string, "authorName": string, "authorEmail": string,
                "committerName": string, "committerEmail": string, "message": string, "url": string, "provider": string}},
            "ci": {"type": "object", "properties": {"jobUrl": string, "start": string, "end": string}},
            "stages": {"type": "array", "items": {"type": "object", "properties": {"id": string, "name": string, "data": {"type": "object"}}}}}},
        "Bundle": {"type": "object", "required": ["service", "files"], "properties": {
            "service": string,
            "files": {"type": "object", "additionalProperties": string, "description": "`<env>/<file>` → content"}}},
        "ReleaseRequest": {"type": "object", "required": ["service", "environments"], "additionalProperties": false, "properties": {
            "service": string,
            "environments": {"type": "array", "items": string},
            "artifactId": string, "branch": string,
            "intent": {"type": "string", "enum": ["release", "promote", "rollback"], "default": "release"},
            "fromEnv": string, "by": person}},
        "Unpin": {"type": "object", "required": ["service", "env"], "additionalProperties": false, "properties": {"service": string, "env": string, "by": person}},
        "Rollout": {"type": "object", "required": ["service", "env", "revision", "state"], "additionalProperties": false, "properties": {
            "service": string, "env": string, "revision": string,
            "state": {"type": "string", "enum": ["progressing", "healthy", "degraded"]}, "message": string}},
        "AutoRelease": {"type": "object", "required": ["branch", "env"], "additionalProperties": false, "properties": {"branch": string, "env": string, "by": person}},
        "BranchRestriction": {"type": "object", "required": ["env", "branchRegex"], "additionalProperties": false, "properties": {"env": string, "branchRegex": string, "by": person}},
        "DeletePolicies": {"type": "object", "required": ["ids"], "additionalProperties": false, "properties": {"ids": {"type": "array", "items": string}, "by": person}},
        "Dispatch": {"type": "object", "required": ["event_type"], "properties": {"event_type": string, "client_payload": {"type": "object"}}}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Every schema a path refers to exists.
        let text = doc.to_string();
        for reference in text.split("#/components/schemas/").skip(1) {
            let name: String = reference
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect();
            assert!(
                doc["components"]["schemas"].get(&name).is_some(),
                "missing schema {name}"
            );
        }
    }
}
