//! Every request survives a trip through the gRPC messages: spec → proto → spec is the identity,
//! and so is proto → spec → proto for the messages the conversion writes. Requests come from a
//! seeded generator that sets every edit kind and each optional field on and off, so a field the
//! conversion forgets fails here with the seed that shows it.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tug_proto::v1;
use tug_spec::{
    BranchUpdate, ChartUpdate, CommitSpec, DeployRequest, DeploySpec, HelmImageUpdate, ImageSpec,
    KustomizeUpdate, ManifestImageUpdate, NotifySpec, PathUpdate, RedeployUpdate, ScalarText,
    YqUpdate,
};

const REQUESTS: u64 = 2000;

struct Gen(StdRng);

impl Gen {
    fn flip(&mut self) -> bool {
        self.0.random_bool(0.5)
    }

    /// Text that is never empty: proto3 reads an empty string as "not given".
    fn text(&mut self) -> String {
        const WORDS: &[&str] = &[
            "web",
            "registry.example.com/shop/web",
            "v1.2.3",
            "sha256:0a1b2c",
            "apps/web/prod",
            ".image.tag",
            " spaced ",
            "ünïcode ✓",
            "line\nbreak",
            "0",
            "null",
        ];
        let word = WORDS[self.0.random_range(0..WORDS.len())];
        format!("{word}{}", self.0.random_range(0..100))
    }

    fn maybe(&mut self) -> Option<String> {
        self.flip().then(|| self.text())
    }

    fn some<T>(&mut self, max: usize, mut item: impl FnMut(&mut Self) -> T) -> Vec<T> {
        let n = self.0.random_range(0..=max);
        (0..n).map(|_| item(self)).collect()
    }

    fn request(&mut self) -> DeployRequest {
        DeployRequest {
            commit_spec: CommitSpec {
                message: self.maybe(),
                user_name: self.maybe(),
                user_email: self.maybe(),
                project: self.maybe(),
                branch: self.maybe(),
                tag: self.maybe(),
                short_sha: self.maybe(),
            },
            deploy_specs: self.some(2, Self::deploy_spec),
            notify: self.flip().then(|| NotifySpec {
                disabled: self.flip(),
                message: self.maybe(),
                context: self.some(3, |g| (g.text(), g.text())).into_iter().collect(),
            }),
            idempotency_key: self.maybe(),
            allow_empty: self.flip(),
            strict: self.flip().then(|| self.flip()),
        }
    }

    fn deploy_spec(&mut self) -> DeploySpec {
        DeploySpec {
            // Plain strings in both forms: the empty one round-trips too.
            url: if self.flip() {
                self.text()
            } else {
                String::new()
            },
            repository: self.maybe(),
            updates: self.some(2, |g| BranchUpdate {
                branch: g.text(),
                paths: g.some(2, Self::path_update),
            }),
        }
    }

    fn path_update(&mut self) -> PathUpdate {
        PathUpdate {
            path: if self.flip() {
                self.text()
            } else {
                String::new()
            },
            kustomize: self.flip().then(|| KustomizeUpdate {
                images: self.some(2, |g| ImageSpec {
                    name: g.text(),
                    new_name: g.maybe(),
                    new_tag: g.maybe(),
                    digest: g.maybe(),
                }),
            }),
            yq: self.some(2, |g| YqUpdate {
                file: g.text(),
                key: g.text(),
                value: ScalarText {
                    text: g.text(),
                    typed: None,
                },
                value_type: g.maybe(),
            }),
            images: self.some(2, |g| ManifestImageUpdate {
                file: g.maybe(),
                name: g.text(),
                container: g.maybe(),
                new_name: g.maybe(),
                new_tag: g.maybe(),
                digest: g.maybe(),
            }),
            helm: self.some(2, |g| HelmImageUpdate {
                file: g.maybe(),
                key: g.maybe(),
                name: g.maybe(),
                new_name: g.maybe(),
                new_tag: g.maybe(),
                digest: g.maybe(),
            }),
            chart: self.some(2, |g| ChartUpdate {
                file: g.maybe(),
                name: g.text(),
                repository: g.maybe(),
                version: g.text(),
            }),
            redeploy: self.flip().then(|| RedeployUpdate {
                file: self.maybe(),
                workload: self.maybe(),
                annotation: self.maybe(),
            }),
        }
    }
}

#[test]
fn spec_to_proto_to_spec_is_the_identity() {
    for seed in 0..REQUESTS {
        let request = Gen(StdRng::seed_from_u64(seed)).request();
        let proto = v1::DeployRequest::from(request.clone());
        let back = DeployRequest::from(proto.clone());
        assert_eq!(back, request, "seed {seed}");
        assert_eq!(v1::DeployRequest::from(back), proto, "seed {seed}");
    }
}

/// The generator reaches every edit kind and both states of every optional field; without this
/// a generator change could make the round trip above vacuous.
#[test]
fn the_generator_covers_every_field() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..REQUESTS {
        let request = Gen(StdRng::seed_from_u64(seed)).request();
        // Each key the model writes, with its path of keys (array indexes left out).
        fn walk(
            value: &serde_json::Value,
            at: &str,
            seen: &mut std::collections::BTreeSet<String>,
        ) {
            match value {
                serde_json::Value::Object(map) => {
                    for (key, item) in map {
                        let here = format!("{at}.{key}");
                        if !at.ends_with(".context") {
                            walk(item, &here, seen);
                            seen.insert(here);
                        }
                    }
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, at, seen)),
                _ => {}
            }
        }
        walk(&serde_json::to_value(&request).unwrap(), "", &mut seen);
    }
    let path = ".deploySpecs.updates.paths";
    for key in [
        ".commitSpec.CommitMessage".to_owned(),
        ".commitSpec.CommitUserName".to_owned(),
        ".commitSpec.CommitUserEmail".to_owned(),
        ".commitSpec.CommitProject".to_owned(),
        ".commitSpec.CommitBranch".to_owned(),
        ".commitSpec.CommitTag".to_owned(),
        ".commitSpec.CommitShortSHA".to_owned(),
        ".notify.disabled".to_owned(),
        ".notify.message".to_owned(),
        ".notify.context".to_owned(),
        ".idempotencyKey".to_owned(),
        ".allowEmpty".to_owned(),
        ".strict".to_owned(),
        ".deploySpecs.repository".to_owned(),
        format!("{path}.kustomize.images.newName"),
        format!("{path}.kustomize.images.newTag"),
        format!("{path}.kustomize.images.digest"),
        format!("{path}.yq.type"),
        format!("{path}.images.file"),
        format!("{path}.images.container"),
        format!("{path}.images.newName"),
        format!("{path}.images.newTag"),
        format!("{path}.images.digest"),
        format!("{path}.helm.file"),
        format!("{path}.helm.key"),
        format!("{path}.helm.name"),
        format!("{path}.helm.newName"),
        format!("{path}.helm.newTag"),
        format!("{path}.helm.digest"),
        format!("{path}.chart.file"),
        format!("{path}.chart.repository"),
        format!("{path}.chart.version"),
        format!("{path}.redeploy.file"),
        format!("{path}.redeploy.workload"),
        format!("{path}.redeploy.annotation"),
    ] {
        assert!(seen.contains(&key), "no generated request sets {key}");
    }
}

/// A typed JSON value (`"value": 3`) crosses as an explicit `type`, so the gRPC request writes
/// what the REST one would; an explicit `type` wins over the value's own.
#[test]
fn a_typed_value_crosses_as_its_type() {
    for (typed, value_type, expected) in [
        (Some("number"), None, Some("number")),
        (Some("bool"), None, Some("bool")),
        (Some("null"), None, Some("null")),
        (Some("number"), Some("string"), Some("string")),
        (None, None, None),
    ] {
        let edit = YqUpdate {
            file: "values.yaml".into(),
            key: ".n".into(),
            value: ScalarText {
                text: "3".into(),
                typed,
            },
            value_type: value_type.map(str::to_owned),
        };
        let path = PathUpdate {
            path: ".".into(),
            yq: vec![edit],
            ..Default::default()
        };
        let back = PathUpdate::from(v1::PathUpdate::from(path));
        assert_eq!(back.yq[0].value.text, "3");
        assert_eq!(
            back.yq[0].value_type.as_deref(),
            expected,
            "{typed:?} {value_type:?}"
        );
    }
}
