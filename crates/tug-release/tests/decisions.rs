//! Runs every case under `tests/decisions/`: a service's environments, artifacts, release history
//! and policies (`<case>.yaml`), one request, and the exact decision or refusal expected
//! (`<case>.expected`). `UPDATE_EXPECT=1 cargo test -p tug-release --test decisions` rewrites the
//! expected files after an intentional change; review the diff before keeping it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use jiff::Timestamp;
use serde::Deserialize;
use similar::TextDiff;
use tug_release::decide::{AutoRelease, Choice, Decision, Facts, Nothing, Refusal, Request, unpin};
use tug_release::policy::{auto_release_id, branch_restriction_id};
use tug_release::{
    AutoReleasePolicy, BranchRestrictionPolicy, EditKind, Environment, Environments,
    GlobalBranchRestrictions, Intent, Person, RecordedRelease, ReleaseRecord, ServicePolicies,
    ServiceSpec, Services, TargetSpec, Unpin,
};

const SERVICE: &str = "api";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// `name` or `name after predecessor`, in any order.
    environments: Vec<String>,
    /// Where the service has a target; every environment when absent.
    #[serde(default)]
    targets: Option<Vec<String>>,
    /// `id branch`, oldest first.
    #[serde(default)]
    artifacts: Vec<String>,
    /// `env intent artifact [from env | of artifact]` or `unpin env`, oldest first.
    #[serde(default)]
    history: Vec<String>,
    #[serde(default)]
    policies: Policies,
    /// `env=regex` items, as the server's flag takes them.
    #[serde(default)]
    global: Vec<String>,
    request: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Policies {
    /// `branch to env`.
    #[serde(default)]
    auto_release: Vec<String>,
    /// `env regex`.
    #[serde(default)]
    branch_restriction: Vec<String>,
}

struct World {
    environments: Environments,
    services: Services,
    artifacts: Vec<(String, String)>,
    history: Vec<RecordedRelease>,
    unpins: Vec<Unpin>,
    policies: ServicePolicies,
    global: GlobalBranchRestrictions,
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

fn at(minute: usize) -> Timestamp {
    Timestamp::from_second(i64::try_from(minute * 60).unwrap()).unwrap()
}

impl World {
    fn new(case: &Case) -> Self {
        let environments = Environments::new(
            case.environments
                .iter()
                .map(|e| match words(e).as_slice() {
                    [name] => Environment::new(*name),
                    [name, "after", after] => Environment::after(*name, *after),
                    _ => panic!("environment '{e}' is not `name [after env]`"),
                })
                .collect(),
        )
        .unwrap();
        let targets: Vec<String> = case
            .targets
            .clone()
            .unwrap_or_else(|| environments.iter().map(|e| e.name.clone()).collect());
        let spec = ServiceSpec {
            name: SERVICE.to_owned(),
            namespace: None,
            path: None,
            edit: Some(EditKind::Kustomize { image: None }),
            environments: targets
                .iter()
                .map(|env| {
                    let target = TargetSpec {
                        path: Some("apps/{service}/{env}".to_owned()),
                        ..TargetSpec::default()
                    };
                    (env.clone(), target)
                })
                .collect::<BTreeMap<_, _>>(),
        };
        let services = Services::new(vec![spec], &environments).unwrap();
        let artifacts = case
            .artifacts
            .iter()
            .map(|a| match words(a).as_slice() {
                [id, branch] => ((*id).to_owned(), (*branch).to_owned()),
                _ => panic!("artifact '{a}' is not `id branch`"),
            })
            .collect();
        let mut history = Vec::new();
        let mut unpins = Vec::new();
        let alice = Person::new("Alice", "alice@example.com");
        for (minute, line) in case.history.iter().enumerate() {
            let (env, intent, artifact) = match words(line).as_slice() {
                ["unpin", env] => {
                    unpins.push(Unpin {
                        env: (*env).to_owned(),
                        service: SERVICE.to_owned(),
                        by: Person::new("Bob", "bob@example.com"),
                        at: at(minute + 1),
                    });
                    continue;
                }
                [env, "release", artifact] => (*env, Intent::Release, *artifact),
                [env, "auto-release", artifact] => (*env, Intent::AutoRelease, *artifact),
                [env, "redeploy", artifact] => (*env, Intent::Redeploy, *artifact),
                [env, "promote", artifact, "from", from] => (
                    *env,
                    Intent::Promote {
                        from_env: (*from).to_owned(),
                    },
                    *artifact,
                ),
                [env, "rollback", artifact, "of", of] => (
                    *env,
                    Intent::Rollback {
                        of_artifact: (*of).to_owned(),
                    },
                    *artifact,
                ),
                _ => panic!("history line '{line}' is not understood"),
            };
            history.push(RecordedRelease {
                record: ReleaseRecord {
                    service: SERVICE.to_owned(),
                    environment: env.to_owned(),
                    artifact_id: artifact.to_owned(),
                    intent,
                    released_by: alice.clone(),
                    request: None,
                },
                commit: format!("c{minute}"),
                at: at(minute + 1),
            });
        }
        // Decisions read history newest first, as the release index answers it.
        history.reverse();
        let mut policies = ServicePolicies::new(SERVICE);
        for p in &case.policies.auto_release {
            let words = words(p);
            let [branch, "to", env] = words.as_slice() else {
                panic!("auto-release '{p}' is not `branch to env`");
            };
            policies.auto_releases.push(AutoReleasePolicy {
                id: auto_release_id(branch, env),
                branch: (*branch).to_owned(),
                environment: (*env).to_owned(),
            });
        }
        for p in &case.policies.branch_restriction {
            let (env, regex) = p
                .split_once(' ')
                .expect("branch restriction is `env regex`");
            policies.branch_restrictions.push(BranchRestrictionPolicy {
                id: branch_restriction_id(env),
                branch_regex: regex.to_owned(),
                environment: env.to_owned(),
            });
        }
        let global = GlobalBranchRestrictions::parse(&case.global).unwrap();
        World {
            environments,
            services,
            artifacts,
            history,
            unpins,
            policies,
            global,
        }
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            service: SERVICE,
            environments: &self.environments,
            services: &self.services,
            history: &self.history,
            unpins: &self.unpins,
            policies: &self.policies,
            global: &self.global,
        }
    }

    fn branch_of(&self, id: &str) -> Option<&str> {
        self.artifacts
            .iter()
            .find(|(a, _)| a == id)
            .map(|(_, b)| b.as_str())
    }

    fn newest_of(&self, branches: &[String]) -> Option<&str> {
        self.artifacts
            .iter()
            .rev()
            .find(|(_, b)| branches.contains(b))
            .map(|(a, _)| a.as_str())
    }

    /// What the case's request decides, one line per outcome, as the service would act on it:
    /// look up the artifacts a decision names and go on with the next step.
    fn run(&mut self, request: &str) -> String {
        let mut out = String::new();
        let facts = self.facts();
        match words(request).as_slice() {
            ["unpin", env] => {
                match unpin(&self.history, &self.unpins, SERVICE, env) {
                    Ok(pin) => writeln!(
                        out,
                        "unpin: lifts the pin of {} to '{}' by {}",
                        pin.env,
                        pin.artifact,
                        pin.by.short()
                    )
                    .unwrap(),
                    Err(refusal) => {
                        out.push_str(&refused(&refusal));
                        return out;
                    }
                }
                self.unpins.push(Unpin {
                    env: (*env).to_owned(),
                    service: SERVICE.to_owned(),
                    by: Person::new("Bob", "bob@example.com"),
                    at: at(10_000),
                });
                out.push_str(&self.held_back(env));
            }
            ["auto", artifact, rest @ ..] => {
                let only = match rest {
                    [] => None,
                    ["only", env] => Some(*env),
                    _ => panic!("request '{request}' is not `auto artifact [only env]`"),
                };
                let branch = self.branch_of(artifact).expect("the artifact is listed");
                out.push_str(&auto_lines(&facts.auto_release(artifact, branch, only)));
            }
            [kind, env, rest @ ..] => {
                let request = match (*kind, rest) {
                    ("release", []) => Request::Release {
                        artifact_id: None,
                        branch: None,
                    },
                    ("release", ["artifact", id]) => Request::Release {
                        artifact_id: Some((*id).to_owned()),
                        branch: None,
                    },
                    ("release", ["branch", b]) => Request::Release {
                        artifact_id: None,
                        branch: Some((*b).to_owned()),
                    },
                    ("promote", []) => Request::Promote { from_env: None },
                    ("promote", ["from", from]) => Request::Promote {
                        from_env: Some((*from).to_owned()),
                    },
                    ("rollback", []) => Request::Rollback { artifact_id: None },
                    ("rollback", ["to", id]) => Request::Rollback {
                        artifact_id: Some((*id).to_owned()),
                    },
                    _ => panic!("request '{request}' is not understood"),
                };
                out.push_str(&self.decide(env, &request));
            }
            _ => panic!("request '{request}' is not understood"),
        }
        out
    }

    fn decide(&self, env: &str, request: &Request) -> String {
        let facts = self.facts();
        let chosen = match facts.choose(env, request) {
            Ok(Choice::Artifact(decision)) => decision,
            Ok(Choice::NewestOfBranch {
                environment,
                branch,
            }) => {
                let Some(id) = self.newest_of(std::slice::from_ref(&branch)) else {
                    return format!("not found: no artifact of branch '{branch}'\n");
                };
                Decision {
                    environment,
                    artifact_id: id.to_owned(),
                    intent: Intent::Release,
                }
            }
            Err(refusal) => return refused(&refusal),
        };
        let Some(branch) = self.branch_of(&chosen.artifact_id) else {
            return format!("not found: artifact '{}'\n", chosen.artifact_id);
        };
        match facts.admit(chosen, branch) {
            Ok(decision) => format!("{}\n", decision_line(&decision)),
            Err(refusal) => refused(&refusal),
        }
    }

    fn held_back(&self, env: &str) -> String {
        let facts = self.facts();
        let nothing = |n: &Nothing| format!("then nothing: {n}\n");
        let branches = match facts.auto_release_branches(env) {
            Ok(branches) => branches,
            Err(n) => return nothing(&n),
        };
        let newest = match facts.held_back(env, &branches, self.newest_of(&branches)) {
            Ok(newest) => newest,
            Err(n) => return nothing(&n),
        };
        let branch = self.branch_of(newest).expect("the artifact is listed");
        let auto = facts.auto_release(newest, branch, Some(env));
        if auto.is_empty() {
            return nothing(&Nothing::NotAutoReleased {
                environment: env.to_owned(),
                artifact_id: newest.to_owned(),
            });
        }
        format!("then {}", auto_lines(&auto))
    }
}

fn decision_line(d: &Decision) -> String {
    let why = match &d.intent {
        Intent::Promote { from_env } => format!("promote from {from_env}"),
        Intent::Rollback { of_artifact } => format!("rollback of {of_artifact}"),
        other => other.word().to_owned(),
    };
    format!("{} goes to {} ({why})", d.artifact_id, d.environment)
}

fn refused(r: &Refusal) -> String {
    format!("refused ({}): {r}\n", r.kind())
}

fn auto_lines(auto: &[AutoRelease]) -> String {
    if auto.is_empty() {
        return "no auto-release\n".to_owned();
    }
    auto.iter()
        .map(|a| match &a.outcome {
            Ok(d) => format!("{}: {}\n", a.environment, decision_line(d)),
            Err(r) => format!("{}: {}", a.environment, refused(r)),
        })
        .collect()
}

#[test]
fn decision_cases() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/decisions");
    let mut cases: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 20,
        "expected at least 20 cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for path in &cases {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let case: Case = serde_saphyr::from_str(&fs::read_to_string(path).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = World::new(&case).run(&case.request);
        let expected_path = path.with_extension("expected");
        if update {
            fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let want = fs::read_to_string(&expected_path).unwrap_or_default();
        if got != want {
            let diff = TextDiff::from_lines(&want, &got)
                .unified_diff()
                .header("expected", "actual")
                .to_string();
            failures.push(format!("{name} ({}):\n{diff}", case.request));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} decision cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
