//! Conversions between the gRPC messages and tug-spec's request model, which stays the single
//! source of truth for what a request may contain: the server turns every gRPC request into a
//! [`tug_spec::DeployRequest`] and validates it exactly as it validates a REST body.
//!
//! Proto3 cannot tell an empty string from an absent one, so an empty string means "not given"
//! (`None`); the model never needs an empty string where `None` would mean something else.

use std::collections::BTreeMap;

use crate::v1;

fn given(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

fn text(s: Option<String>) -> String {
    s.unwrap_or_default()
}

impl From<v1::DeployRequest> for tug_spec::DeployRequest {
    fn from(r: v1::DeployRequest) -> Self {
        tug_spec::DeployRequest {
            commit_spec: r.commit_spec.map(Into::into).unwrap_or_default(),
            deploy_specs: r.deploy_specs.into_iter().map(Into::into).collect(),
            notify: r.notify.map(Into::into),
            idempotency_key: given(r.idempotency_key),
            allow_empty: r.allow_empty,
            strict: r.strict,
        }
    }
}

impl From<tug_spec::DeployRequest> for v1::DeployRequest {
    fn from(r: tug_spec::DeployRequest) -> Self {
        let commit_spec =
            (r.commit_spec != tug_spec::CommitSpec::default()).then(|| r.commit_spec.into());
        v1::DeployRequest {
            commit_spec,
            deploy_specs: r.deploy_specs.into_iter().map(Into::into).collect(),
            idempotency_key: text(r.idempotency_key),
            notify: r.notify.map(Into::into),
            allow_empty: r.allow_empty,
            strict: r.strict,
        }
    }
}

impl From<v1::CommitSpec> for tug_spec::CommitSpec {
    fn from(c: v1::CommitSpec) -> Self {
        tug_spec::CommitSpec {
            message: given(c.message),
            user_name: given(c.user_name),
            user_email: given(c.user_email),
            project: given(c.project),
            branch: given(c.branch),
            tag: given(c.tag),
            short_sha: given(c.short_sha),
        }
    }
}

impl From<tug_spec::CommitSpec> for v1::CommitSpec {
    fn from(c: tug_spec::CommitSpec) -> Self {
        v1::CommitSpec {
            message: text(c.message),
            user_name: text(c.user_name),
            user_email: text(c.user_email),
            project: text(c.project),
            branch: text(c.branch),
            tag: text(c.tag),
            short_sha: text(c.short_sha),
        }
    }
}

impl From<v1::NotifySpec> for tug_spec::NotifySpec {
    fn from(n: v1::NotifySpec) -> Self {
        tug_spec::NotifySpec {
            disabled: n.disabled,
            message: given(n.message),
            context: n.context.into_iter().collect::<BTreeMap<_, _>>(),
        }
    }
}

impl From<tug_spec::NotifySpec> for v1::NotifySpec {
    fn from(n: tug_spec::NotifySpec) -> Self {
        v1::NotifySpec {
            disabled: n.disabled,
            message: text(n.message),
            context: n.context.into_iter().collect(),
        }
    }
}

impl From<v1::DeploySpec> for tug_spec::DeploySpec {
    fn from(s: v1::DeploySpec) -> Self {
        tug_spec::DeploySpec {
            url: s.url,
            repository: given(s.repository),
            updates: s
                .updates
                .into_iter()
                .map(|u| tug_spec::BranchUpdate {
                    branch: u.branch,
                    paths: u.paths.into_iter().map(Into::into).collect(),
                })
                .collect(),
        }
    }
}

impl From<tug_spec::DeploySpec> for v1::DeploySpec {
    fn from(s: tug_spec::DeploySpec) -> Self {
        v1::DeploySpec {
            url: s.url,
            repository: text(s.repository),
            updates: s
                .updates
                .into_iter()
                .map(|u| v1::BranchUpdate {
                    branch: u.branch,
                    paths: u.paths.into_iter().map(Into::into).collect(),
                })
                .collect(),
        }
    }
}

impl From<v1::PathUpdate> for tug_spec::PathUpdate {
    fn from(p: v1::PathUpdate) -> Self {
        tug_spec::PathUpdate {
            path: p.path,
            kustomize: p.kustomize.map(|k| tug_spec::KustomizeUpdate {
                images: k.images.into_iter().map(Into::into).collect(),
            }),
            yq: p
                .yq
                .into_iter()
                .map(|y| tug_spec::YqUpdate {
                    file: y.file,
                    key: y.key,
                    value: tug_spec::ScalarText {
                        text: y.value,
                        typed: None,
                    },
                    value_type: given(y.r#type),
                })
                .collect(),
            images: p
                .images
                .into_iter()
                .map(|i| tug_spec::ManifestImageUpdate {
                    file: given(i.file),
                    name: i.name,
                    container: given(i.container),
                    new_name: given(i.new_name),
                    new_tag: given(i.new_tag),
                    digest: given(i.digest),
                })
                .collect(),
            helm: p
                .helm
                .into_iter()
                .map(|h| tug_spec::HelmImageUpdate {
                    file: given(h.file),
                    key: given(h.key),
                    name: given(h.name),
                    new_name: given(h.new_name),
                    new_tag: given(h.new_tag),
                    digest: given(h.digest),
                })
                .collect(),
            chart: p
                .chart
                .into_iter()
                .map(|c| tug_spec::ChartUpdate {
                    file: given(c.file),
                    name: c.name,
                    repository: given(c.repository),
                    version: c.version,
                })
                .collect(),
            redeploy: p.redeploy.map(|r| tug_spec::RedeployUpdate {
                file: given(r.file),
                workload: given(r.workload),
                annotation: given(r.annotation),
            }),
        }
    }
}

impl From<tug_spec::PathUpdate> for v1::PathUpdate {
    fn from(p: tug_spec::PathUpdate) -> Self {
        v1::PathUpdate {
            path: p.path,
            kustomize: p.kustomize.map(|k| v1::KustomizeEdit {
                images: k.images.into_iter().map(Into::into).collect(),
            }),
            yq: p
                .yq
                .into_iter()
                .map(|y| v1::YqEdit {
                    file: y.file,
                    key: y.key,
                    // A typed JSON value (`"value": 3`) keeps its type as an explicit `type`, so
                    // the gRPC request writes what the REST one would.
                    r#type: text(y.value_type.or(y.value.typed.map(str::to_owned))),
                    value: y.value.text,
                })
                .collect(),
            images: p
                .images
                .into_iter()
                .map(|i| v1::ManifestImageEdit {
                    file: text(i.file),
                    name: i.name,
                    container: text(i.container),
                    new_name: text(i.new_name),
                    new_tag: text(i.new_tag),
                    digest: text(i.digest),
                })
                .collect(),
            helm: p
                .helm
                .into_iter()
                .map(|h| v1::HelmImageEdit {
                    file: text(h.file),
                    key: text(h.key),
                    name: text(h.name),
                    new_name: text(h.new_name),
                    new_tag: text(h.new_tag),
                    digest: text(h.digest),
                })
                .collect(),
            chart: p
                .chart
                .into_iter()
                .map(|c| v1::ChartEdit {
                    file: text(c.file),
                    name: c.name,
                    repository: text(c.repository),
                    version: c.version,
                })
                .collect(),
            redeploy: p.redeploy.map(|r| v1::RedeployEdit {
                file: text(r.file),
                workload: text(r.workload),
                annotation: text(r.annotation),
            }),
        }
    }
}

impl From<v1::KustomizeImage> for tug_spec::ImageSpec {
    fn from(i: v1::KustomizeImage) -> Self {
        tug_spec::ImageSpec {
            name: i.name,
            new_name: given(i.new_name),
            new_tag: given(i.new_tag),
            digest: given(i.digest),
        }
    }
}

impl From<tug_spec::ImageSpec> for v1::KustomizeImage {
    fn from(i: tug_spec::ImageSpec) -> Self {
        v1::KustomizeImage {
            name: i.name,
            new_name: text(i.new_name),
            new_tag: text(i.new_tag),
            digest: text(i.digest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of the model, as a REST client would send it.
    const FULL_REQUEST: &str = r#"{
      "commitSpec": {
        "CommitMessage": "update image tag to v1.2.3\n\nfrom pipeline 42",
        "CommitUserName": "ci", "CommitUserEmail": "ci@example.com",
        "CommitProject": "shop/web", "CommitBranch": "main", "CommitTag": "v1.2.3",
        "CommitShortSHA": "0a1b2c3"
      },
      "deploySpecs": [
        {"url": "https://git.example.com/infra/platform", "updates": [
          {"branch": "main", "paths": [
            {"path": "apps/web/dev",
             "kustomize": {"images": [
               {"name": "registry.example.com/web", "newName": "registry.example.com/web2",
                "newTag": "v1.2.3", "digest": "sha256:0123"}]},
             "yq": [
               {"file": "values.yaml", "key": ".image.tag", "value": "v1.2.3"},
               {"file": "values.yaml", "key": ".replicas", "value": "3", "type": "number"}],
             "images": [
               {"file": "deployment.yaml", "name": "registry.example.com/web", "newTag": "v1.2.3"},
               {"name": "registry.example.com/worker", "digest": "sha256:4567"}],
             "helm": [
               {"file": "values.yaml", "key": ".image", "name": "registry.example.com/web",
                "newName": "registry.example.com/web2", "newTag": "v1.2.3", "digest": "sha256:89ab"},
               {"newTag": "v2"}],
             "chart": [
               {"name": "podinfo", "version": "6.10"},
               {"file": "Chart.yaml", "name": "redis", "repository": "oci://registry-1.docker.io/bitnamicharts",
                "version": ">=19.0.0 <20"}],
             "redeploy": {"file": "deployment.yaml", "workload": "web", "annotation": "x/restart"}}
          ]}]},
        {"url": "", "repository": "apps", "updates": [
          {"branch": "release/1", "paths": [{"path": ".", "redeploy": {}}]}]}
      ],
      "notify": {"disabled": false, "message": "shipped", "context": {"pipeline": "42"}},
      "idempotencyKey": "shop-web-0a1b2c3",
      "allowEmpty": true
    }"#;

    #[test]
    fn every_rest_request_survives_a_trip_through_grpc() {
        let rest: tug_spec::DeployRequest = tug_spec::from_json("request", FULL_REQUEST).unwrap();
        let grpc = v1::DeployRequest::from(rest.clone());
        let back = tug_spec::DeployRequest::from(grpc);
        assert_eq!(back, rest);
    }

    #[test]
    fn empty_strings_mean_not_given() {
        let grpc = v1::DeployRequest {
            commit_spec: Some(v1::CommitSpec {
                message: "deploy".into(),
                ..Default::default()
            }),
            deploy_specs: vec![v1::DeploySpec {
                repository: "platform".into(),
                updates: vec![v1::BranchUpdate {
                    branch: "main".into(),
                    paths: vec![v1::PathUpdate {
                        path: "apps/web".into(),
                        kustomize: Some(v1::KustomizeEdit {
                            images: vec![v1::KustomizeImage {
                                name: "web".into(),
                                new_tag: "v2".into(),
                                ..Default::default()
                            }],
                        }),
                        ..Default::default()
                    }],
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let model = tug_spec::DeployRequest::from(grpc);
        assert_eq!(
            serde_json::to_value(&model).unwrap(),
            serde_json::json!({
                "commitSpec": {"CommitMessage": "deploy"},
                "deploySpecs": [{"url": "", "repository": "platform", "updates": [
                    {"branch": "main", "paths": [{"path": "apps/web", "kustomize": {"images": [
                        {"name": "web", "newTag": "v2"}]}}]}]}],
            })
        );
    }

    /// A chart edit sent over gRPC is the request a REST client sends with the same JSON.
    #[test]
    fn a_chart_edit_over_grpc_is_the_rest_edit() {
        let grpc = v1::PathUpdate {
            path: "apps/web".into(),
            chart: vec![v1::ChartEdit {
                name: "podinfo".into(),
                version: "6.10".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let model = tug_spec::PathUpdate::from(grpc.clone());
        assert_eq!(
            serde_json::to_value(&model).unwrap(),
            serde_json::json!({"path": "apps/web", "chart": [{"name": "podinfo", "version": "6.10"}]})
        );
        assert_eq!(v1::PathUpdate::from(model), grpc);
    }

    #[test]
    fn a_typed_json_value_keeps_its_type_over_grpc() {
        let rest: tug_spec::DeployRequest = tug_spec::from_json(
            "request",
            r#"{"deploySpecs": [{"url": "u", "updates": [{"branch": "main", "paths": [
                {"path": ".", "yq": [{"file": "v.yaml", "key": ".n", "value": 3},
                                     {"file": "v.yaml", "key": ".b", "value": true}]}]}]}]}"#,
        )
        .unwrap();
        let grpc = v1::DeployRequest::from(rest);
        let yq = &grpc.deploy_specs[0].updates[0].paths[0].yq;
        assert_eq!(
            (yq[0].value.as_str(), yq[0].r#type.as_str()),
            ("3", "number")
        );
        assert_eq!(
            (yq[1].value.as_str(), yq[1].r#type.as_str()),
            ("true", "bool")
        );
    }

    /// The proto JSON mapping of `DeployRequest` reads REST bodies: every key the model writes
    /// is the JSON name of a field.
    #[test]
    fn every_rest_key_is_a_proto_json_name() {
        use prost::Message;

        fn keys(value: &serde_json::Value, out: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    for (key, value) in map {
                        // `notify.context` is a map: its keys are data, not field names.
                        if key != "context" {
                            keys(value, out);
                        }
                        out.push(key.clone());
                    }
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
                _ => {}
            }
        }
        let rest: tug_spec::DeployRequest = tug_spec::from_json("request", FULL_REQUEST).unwrap();
        let mut rest_keys = Vec::new();
        keys(&serde_json::to_value(&rest).unwrap(), &mut rest_keys);
        let set = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
        let json_names: Vec<String> = set
            .file
            .iter()
            .filter(|file| file.package() == "tug.v1")
            .flat_map(|file| &file.message_type)
            .flat_map(|message| &message.field)
            .map(|field| field.json_name().to_owned())
            .collect();
        for key in rest_keys {
            assert!(json_names.contains(&key), "{key} is no JSON name of tug.v1");
        }
    }
}
