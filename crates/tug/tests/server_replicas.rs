//! Several `tug server` replicas on one PostgreSQL: any replica accepts any request, one writer
//! per branch across them, and a replica killed with SIGKILL loses nothing — another one takes
//! its branches once its lease lapses, nor when the git server restarts under it. Every part is
//! real: the PostgreSQL server (started for the test), nginx + git http-backend, three tug
//! processes, a person pushing to the hot branch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod server_common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use server_common::*;
use tug_testkit::{HumanPusher, Postgres, SmartHttp, TugServer};

const TOKEN: &str = "tug-replica-token-5c1e";
const REPLICAS: usize = 3;
const CLIENTS: usize = 24;
const REQUESTS: usize = 600;
const SERVICES: usize = 12;
/// Branches besides `main` (the hot one, where the person pushes too).
const OTHER_BRANCHES: usize = 10;
/// A replica is killed (SIGKILL) and restarted this often during the run.
const KILL_EVERY: Duration = Duration::from_secs(4);
const HUMAN_INTERVAL: Duration = Duration::from_millis(100);

fn replica_config(url: &str) -> String {
    format!(
        "store:\n  postgres:\n    url: \"${{DATABASE_URL}}\"\n    max_connections: 8\n\
         repositories:\n  - name: platform\n    url: \"{url}\"\n\
         auth:\n  tokens:\n    - name: ci\n      sha256: \"{sha}\"\n      repositories: [\"platform\"]\n",
        sha = token_sha256(TOKEN),
    )
}

fn start_replicas(database_url: &str, git_url: &str) -> Vec<TugServer> {
    (0..REPLICAS)
        .map(|_| {
            TugServer::start_with_env(
                tug_binary(),
                &replica_config(git_url),
                &[("DATABASE_URL", database_url)],
            )
            .expect("start a replica")
        })
        .collect()
}

fn services() -> Vec<String> {
    (0..SERVICES).map(|i| format!("svc-{i:02}")).collect()
}

/// The branch request `k` writes to: every other request goes to `main`.
fn branch_of(k: usize) -> String {
    if k.is_multiple_of(2) {
        "main".to_owned()
    } else {
        format!("env-{}", (k / 2) % OTHER_BRANCHES)
    }
}

fn request(url: &str, k: usize) -> Value {
    let service = format!("svc-{:02}", k % SERVICES);
    json!({
        "commitSpec": {"CommitMessage": format!("deploy {service} v{k}")},
        "deploySpecs": [{
            "url": url,
            "updates": [{
                "branch": branch_of(k),
                "paths": [{
                    "path": format!("apps/{service}/dev"),
                    "kustomize": {"images": [{
                        "name": format!("registry.example.com/{service}"),
                        "newTag": format!("v{k}"),
                    }]},
                }],
            }],
        }],
    })
}

/// Sends request `k` until some replica gives its final result; the idempotency key makes every
/// retry the same request. The job id and how many tries it took.
fn deploy_until_done(replicas: &[SocketAddr], url: &str, k: usize) -> (String, usize) {
    let key = format!("replica-test-{k}");
    let auth = format!("Bearer {TOKEN}");
    let headers = [
        ("Content-Type", "application/json"),
        ("Authorization", auth.as_str()),
        ("Idempotency-Key", key.as_str()),
    ];
    let landed = tug_testkit::deploy_until_done(
        replicas,
        &headers,
        &body(&request(url, k)),
        k,
        Duration::from_secs(240),
    )
    .unwrap_or_else(|e| panic!("request {k}: {e}"));
    (landed.job_id, landed.tries)
}

#[test]
fn replicas_land_every_request_once_while_they_are_killed() {
    let postgres = Postgres::start().unwrap();
    let database_url = postgres.create_database("tug").unwrap();
    let names = services();
    let repo = overlays_repo(&names.iter().map(String::as_str).collect::<Vec<_>>());
    for n in 0..OTHER_BRANCHES {
        repo.git(&["branch", &format!("env-{n}"), "main"]).unwrap();
    }
    let mut http = SmartHttp::start(repo.root(), None).unwrap();
    let url = http.url(repo.name());
    let mut replicas = start_replicas(&database_url, &url);
    let addresses: Vec<SocketAddr> = replicas.iter().map(TugServer::http_addr).collect();
    let human = HumanPusher::start(&url, "main", HUMAN_INTERVAL).unwrap();
    let mut git_restarts = 0;

    let done = AtomicBool::new(false);
    let started = Instant::now();
    let (results, kills) = std::thread::scope(|scope| {
        let chaos = scope.spawn(|| {
            let mut kills = 0;
            let mut next = Instant::now() + KILL_EVERY;
            // Once, between the first two kills: every connection to the git host drops
            // mid-answer, pushes included (some of which landed before their answer was lost).
            let mut restart_git = Some(next + KILL_EVERY / 2);
            while !done.load(Ordering::SeqCst) {
                if restart_git.is_some_and(|at| Instant::now() >= at) {
                    http.restart().unwrap();
                    git_restarts += 1;
                    restart_git = None;
                }
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let victim = &mut replicas[kills % REPLICAS];
                victim.kill9().unwrap();
                victim.restart().unwrap();
                kills += 1;
                next = Instant::now() + KILL_EVERY;
            }
            kills
        });
        // Set however the clients end (a panicking client included), so the chaos thread stops
        // and the scope can end.
        struct StopChaos<'a>(&'a AtomicBool);
        impl Drop for StopChaos<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let stop = StopChaos(&done);
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (addresses, url) = (&addresses, &url);
                scope.spawn(move || {
                    (client..REQUESTS)
                        .step_by(CLIENTS)
                        .map(|k| (k, deploy_until_done(addresses, url, k)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<(usize, (String, usize))> = clients
            .into_iter()
            .flat_map(|client| client.join().unwrap())
            .collect();
        drop(stop);
        (results, chaos.join().unwrap())
    });
    let elapsed = started.elapsed();
    let human = human.stop().unwrap();

    assert!(
        kills >= 2,
        "the run is long enough to kill replicas ({kills})"
    );
    assert_eq!(
        git_restarts, 1,
        "the git server was restarted during the run"
    );
    let retried = results.iter().filter(|(_, (_, tries))| *tries > 1).count();

    // Every request acknowledged, each as its own job.
    let ids: BTreeSet<String> = results.iter().map(|(_, (id, _))| id.clone()).collect();
    assert_eq!(ids.len(), REQUESTS, "one job per request");

    // Each request in git exactly once.
    let mut landed: BTreeMap<String, usize> = BTreeMap::new();
    for trailer in repo.trailer_values_on_all_branches("Tug-Request").unwrap() {
        *landed.entry(trailer).or_default() += 1;
    }
    let duplicated: Vec<_> = landed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "landed twice: {duplicated:?}");
    let landed: BTreeSet<String> = landed.into_keys().collect();
    assert_eq!(
        landed, ids,
        "the commits are exactly the acknowledged requests"
    );

    // Every human commit kept; history linear on every branch.
    assert!(!human.commits.is_empty());
    let on_main =
        String::from_utf8(repo.git(&["rev-list", "--first-parent", "main"]).unwrap()).unwrap();
    for commit in &human.commits {
        assert!(
            on_main.contains(commit.as_str()),
            "human commit {commit} lost"
        );
    }
    assert!(
        repo.git(&["rev-list", "--all", "--min-parents=2"])
            .unwrap()
            .is_empty(),
        "history is linear"
    );

    // No job left unfinished, every one of them succeeded.
    let unfinished = postgres
        .psql(
            "tug",
            "SELECT count(*) FROM jobs WHERE state <> 'succeeded'",
        )
        .unwrap();
    assert_eq!(unfinished, "0");
    // Any replica answers for any job.
    let some_job = ids.iter().next().unwrap();
    for replica in &replicas {
        let job = job(replica, some_job, TOKEN);
        assert_eq!(job["status"], "succeeded");
    }
    let retried_by_writer = postgres
        .psql(
            "tug",
            "SELECT count(*) FROM tasks WHERE last_error IS NOT NULL",
        )
        .unwrap();
    eprintln!(
        "{REQUESTS} requests from {CLIENTS} clients over {REPLICAS} replicas in {:.1} s, \
         {kills} replicas killed, the git server restarted once, {retried} requests retried by \
         their client, {retried_by_writer} tasks retried after an error, {} human commits ({} of \
         their pushes retried)",
        elapsed.as_secs_f64(),
        human.commits.len(),
        human.failed_attempts,
    );
}

#[test]
fn a_replica_reports_the_database_down_and_recovers_when_it_returns() {
    let mut postgres = Postgres::start().unwrap();
    let database_url = postgres.create_database("tug").unwrap();
    let repo = overlays_repo(&["api"]);
    let url = repo.file_url();
    let server = TugServer::start_with_env(
        tug_binary(),
        &replica_config(&url),
        &[("DATABASE_URL", &database_url)],
    )
    .unwrap();
    let (status, health) = server.get_json("/api/v1/health", None).unwrap();
    assert_eq!((status, health["status"].as_str()), (200, Some("SERVING")));

    postgres.kill();
    let health = wait_for(Duration::from_secs(30), "health to say NOT_SERVING", || {
        let (status, health) = server.get_json("/api/v1/health", None).unwrap();
        (status == 503).then_some(health)
    });
    assert_eq!(health["status"], "NOT_SERVING");
    assert!(
        health["reason"].as_str().unwrap().contains("database"),
        "{health}"
    );
    // A request is refused at once with a clear message instead of hanging; nothing is lost
    // because nothing was acknowledged.
    let asked = Instant::now();
    let (status, lines) = server
        .post_deploy(&body(&image_deploy(&url, "api", "v2")), Some(TOKEN), None)
        .unwrap();
    assert_eq!(status, 503, "{lines:?}");
    assert!(asked.elapsed() < Duration::from_secs(15));
    let message = lines[0]["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains("store") || message.contains("database"),
        "{message}"
    );
    assert!(!message.contains("password"), "{message}");

    postgres.restart().unwrap();
    wait_for(
        Duration::from_secs(30),
        "health to say SERVING again",
        || {
            let (status, _) = server.get_json("/api/v1/health", None).unwrap();
            (status == 200).then_some(())
        },
    );
    let (status, lines) = server
        .post_deploy(&body(&image_deploy(&url, "api", "v3")), Some(TOKEN), None)
        .unwrap();
    assert_eq!(status, 200, "{lines:?}");
    assert_eq!(
        lines.last().unwrap()["result"]["status"],
        "succeeded",
        "{lines:?}"
    );
    let file = repo
        .read_file("main", "apps/api/dev/kustomization.yaml")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8(file).unwrap().contains("newTag: v3\n"));
}

/// Posts request `tag` for service `api` with `?wait=false` and returns its job id.
fn submit(server: &TugServer, url: &str, tag: &str) -> String {
    let response = server
        .post_deploy_to(
            "/api/v1/deploy?wait=false",
            &body(&image_deploy(url, "api", tag)),
            Some(TOKEN),
            None,
        )
        .unwrap();
    assert_eq!(response.status, 202, "{}", response.text());
    response.json().unwrap()["jobId"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Replicas on one PostgreSQL in front of a file:// repository whose pushes wait in a hook:
/// the hook creates `entered` and waits until `release` exists.
struct Gated {
    postgres: Postgres,
    database_url: String,
    repo: tug_testkit::BareRepo,
    url: String,
    _gate: tug_testkit::Scratch,
    entered: std::path::PathBuf,
    release: std::path::PathBuf,
}

impl Gated {
    fn new(services: &[&str]) -> Self {
        let postgres = Postgres::start().unwrap();
        let database_url = postgres.create_database("tug").unwrap();
        let repo = overlays_repo(services);
        let url = repo.file_url();
        let gate = tug_testkit::Scratch::new().unwrap();
        let (entered, release) = (gate.join("entered"), gate.join("release"));
        hold_pushes(&repo, &entered, &release);
        Gated {
            postgres,
            database_url,
            repo,
            url,
            _gate: gate,
            entered,
            release,
        }
    }

    fn replica(&self) -> TugServer {
        TugServer::start_with_env(
            tug_binary(),
            &replica_config(&self.url),
            &[("DATABASE_URL", &self.database_url)],
        )
        .unwrap()
    }
}

#[test]
fn a_killed_replicas_branch_is_taken_over_within_ten_seconds_and_a_stopped_one_hands_it_over_at_once()
 {
    let g = Gated::new(&["api"]);
    let (repo, url, entered, release) = (&g.repo, &g.url, &g.entered, &g.release);
    let start = || g.replica();
    // A takes `main` and hangs in its push (B starts only then, so the branch is A's); then A
    // dies (SIGKILL), the push still in flight.
    let mut a = start();
    let first = submit(&a, url, "v2");
    wait_for(
        Duration::from_secs(30),
        "A's push to reach the remote",
        || entered.exists().then_some(()),
    );
    let mut b = start();
    a.kill9().unwrap();
    let killed = Instant::now();
    let second = submit(&b, url, "v3");
    std::fs::write(release, "").unwrap();
    let job = wait_for_end(&b, &second, TOKEN, Duration::from_secs(30));
    let failover = killed.elapsed();
    assert_eq!(job["status"], "succeeded", "{job}");
    let job = wait_for_end(&b, &first, TOKEN, Duration::from_secs(30));
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(
        failover < Duration::from_secs(10),
        "B took over the branch {failover:?} after A died"
    );
    // A's push landed after all (it outlived A); B found it instead of pushing it again.
    let mut trailers = request_trailers(repo);
    trailers.sort();
    let mut expected = vec![first.clone(), second.clone()];
    expected.sort();
    assert_eq!(trailers, expected);

    // Now B holds `main` mid-push (A, restarted only then, cannot have it) and is asked to
    // stop (SIGTERM): it finishes that push, gives the lease up, and A takes the branch at once,
    // not when the lease would lapse.
    std::fs::remove_file(release).unwrap();
    std::fs::remove_file(entered).unwrap();
    let third = submit(&b, url, "v4");
    wait_for(
        Duration::from_secs(30),
        "B's push to reach the remote",
        || entered.exists().then_some(()),
    );
    a.restart().unwrap();
    let fourth = submit(&a, url, "v5");
    b.send_sigterm().unwrap();
    std::fs::write(release, "").unwrap();
    let status = b.wait_exit(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status:?}");
    let stopped = Instant::now();
    let job = wait_for_end(&a, &fourth, TOKEN, Duration::from_secs(30));
    let handover = stopped.elapsed();
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        wait_for_end(&a, &third, TOKEN, Duration::from_secs(5))["status"],
        "succeeded"
    );
    assert!(
        handover < Duration::from_secs(3),
        "A took the branch {handover:?} after B stopped"
    );
    eprintln!("failover after SIGKILL: {failover:?}; handover after SIGTERM: {handover:?}");
}

/// A gRPC deploy of `service`'s image in `platform`'s `main`.
fn grpc_image_request(service: &str, tag: &str) -> tug_proto::v1::DeployRequest {
    use tug_proto::v1;
    v1::DeployRequest {
        commit_spec: Some(v1::CommitSpec {
            message: format!("deploy {service} {tag}"),
            ..Default::default()
        }),
        deploy_specs: vec![v1::DeploySpec {
            repository: "platform".into(),
            updates: vec![v1::BranchUpdate {
                branch: "main".into(),
                paths: vec![v1::PathUpdate {
                    path: format!("apps/{service}/dev"),
                    kustomize: Some(v1::KustomizeEdit {
                        images: vec![v1::KustomizeImage {
                            name: format!("registry.example.com/{service}"),
                            new_tag: tag.into(),
                            ..Default::default()
                        }],
                    }),
                    ..Default::default()
                }],
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Every event of a gRPC deploy stream on `addr`.
async fn grpc_deploy_events(
    addr: SocketAddr,
    request: tug_proto::v1::DeployRequest,
) -> Vec<tug_proto::v1::deploy_event::Event> {
    let mut client = tug_proto::v1::deploy_service_client::DeployServiceClient::connect(format!(
        "http://{addr}"
    ))
    .await
    .unwrap();
    let mut request = tonic::Request::new(request);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let mut stream = client.deploy(request).await.unwrap().into_inner();
    let mut events = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        events.push(message.event.expect("every DeployEvent carries an event"));
    }
    events
}

/// The messages of a job's stored events, in order, as any replica answers them.
fn stored_messages(server: &TugServer, id: &str) -> Vec<String> {
    job(server, id, TOKEN)["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_request_accepted_by_one_replica_streams_every_line_written_by_another() {
    use tug_proto::v1::deploy_event::Event;

    let g = Gated::new(&["api", "web", "db"]);
    let (postgres, repo, url, entered, release) =
        (&g.postgres, &g.repo, &g.url, &g.entered, &g.release);
    let start = || g.replica();
    // B takes `main` and holds it in a push; A starts only then, so the branch stays B's.
    let b = start();
    let first = submit(&b, url, "v2");
    wait_for(
        Duration::from_secs(30),
        "B's push to reach the remote",
        || entered.exists().then_some(()),
    );
    let a = start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let grpc = runtime.spawn(grpc_deploy_events(
        a.grpc_addr(),
        grpc_image_request("db", "v4"),
    ));
    let (rest_status, rest_lines) = std::thread::scope(|scope| {
        let rest = scope.spawn(|| {
            a.post_deploy(&body(&image_deploy(url, "web", "v3")), Some(TOKEN), None)
                .unwrap()
        });
        // Both of A's requests are stored before B may go on.
        wait_for(Duration::from_secs(30), "A's two requests queued", || {
            let queued = postgres
                .psql("tug", "SELECT count(*) FROM tasks WHERE state = 'queued'")
                .unwrap();
            (queued == "2").then_some(())
        });
        std::fs::write(release, "").unwrap();
        rest.join().unwrap()
    });
    let grpc_events = runtime.block_on(grpc).unwrap();
    assert_eq!(
        wait_for_end(&b, &first, TOKEN, Duration::from_secs(30))["status"],
        "succeeded"
    );

    // REST: every line B wrote for the request, then the final result, on A's stream.
    assert_eq!(rest_status, 200, "{rest_lines:?}");
    let result = &rest_lines.last().unwrap()["result"];
    assert_eq!(result["status"], "succeeded", "{rest_lines:?}");
    let rest_job = result["jobId"].as_str().unwrap().to_owned();
    let streamed: Vec<String> = rest_lines[..rest_lines.len() - 1]
        .iter()
        .map(|l| l["result"]["message"].as_str().unwrap().to_owned())
        .collect();
    let stored = stored_messages(&b, &rest_job);
    assert!(
        stored.iter().any(|m| m.contains("was successful")),
        "{stored:#?}"
    );
    // The replica that accepted the request says so first; the rest is what the writer stored.
    assert_eq!(streamed[0], format!("[INFO] accepted job {rest_job}"));
    assert_eq!(
        streamed[1..],
        stored,
        "A streamed every stored line, in order"
    );

    // gRPC: accepted, every progress line, the result.
    let Some(Event::Accepted(accepted)) = grpc_events.first() else {
        panic!("the stream starts with {:?}", grpc_events.first());
    };
    let grpc_job = accepted.job_id.clone();
    let progress: Vec<String> = grpc_events
        .iter()
        .filter_map(|e| match e {
            Event::Progress(p) => Some(p.message.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(progress, stored_messages(&b, &grpc_job), "{grpc_events:#?}");
    let Some(Event::Result(result)) = grpc_events.last() else {
        panic!("the stream ends with {:?}", grpc_events.last());
    };
    assert_eq!(result.job_id, grpc_job);
    assert_eq!(
        result.status(),
        tug_proto::v1::JobStatus::Succeeded,
        "{result:?}"
    );

    // And it was B that wrote both.
    let b_owner = std::fs::read_to_string(b.data_dir().join("writer-owner")).unwrap();
    let writers = postgres
        .psql(
            "tug",
            &format!(
                "SELECT string_agg(DISTINCT claimed_by, ',') FROM tasks \
                 WHERE job_id IN ('{rest_job}', '{grpc_job}')"
            ),
        )
        .unwrap();
    assert_eq!(writers, b_owner.trim(), "B claimed A's requests");
    let mut trailers = request_trailers(repo);
    trailers.sort();
    let mut expected = vec![first, rest_job, grpc_job];
    expected.sort();
    assert_eq!(trailers, expected);
}
