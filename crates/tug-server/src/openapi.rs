//! The OpenAPI document served at `/api/v1/openapi.json`.

use serde_json::{Value, json};

pub fn document() -> Value {
    let error = json!({"$ref": "#/components/schemas/Error"});
    json!({
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
                     "description": "false: answer 202 with the job once stored"}
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
                                "helm": {"type": "array"}, "redeploy": {"type": "object"}}}}}}}}}},
                    "notify": {"type": "object"},
                    "idempotencyKey": {"type": "string"},
                    "allowEmpty": {"type": "boolean"}}},
                "Job": {"type": "object", "properties": {
                    "jobId": {"type": "string"}, "status": {"type": "string"}, "requestedBy": {"type": "string"},
                    "createdAt": {"type": "string"}, "updatedAt": {"type": "string"},
                    "updates": {"type": "array", "items": {"type": "object"}}, "events": {"type": "array", "items": {"type": "object"}}}}
            }
        },
        "security": [{"bearer": []}]
    })
}
