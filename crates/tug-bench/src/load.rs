//! Driving a running `tug server` over HTTP: concurrent deploy clients on one keep-alive
//! connection pool, the server's `/metrics` counters and its memory, read from `/proc`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::fixture::ImageBump;

/// A client gives up on one deploy after this long; a stuck server fails the run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(25);

/// One deploy request as CI sends it: the Delivery server's JSON shape with one kustomize image
/// edit.
pub(crate) fn deploy_body(url: &str, bump: &ImageBump, tag: &str) -> Vec<u8> {
    let body = json!({
        "commitSpec": {"CommitMessage": format!("deploy({}): bump image to {tag}", bump.dir)},
        "deploySpecs": [{
            "url": url,
            "updates": [{
                "branch": crate::fixture::BRANCH,
                "paths": [{
                    "path": bump.dir,
                    "kustomize": {"images": [{"name": bump.image, "newTag": tag}]},
                }],
            }],
        }],
    });
    body.to_string().into_bytes()
}

/// The runtime the benchmark's HTTP clients run on: two workers, as many as the machine the
/// numbers come from has cores.
pub(crate) fn client_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the client runtime")
}

/// What one deploy request came back with.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub latency: Duration,
    pub succeeded: bool,
    /// The final line's message (or the transport error) of a request that did not succeed.
    pub error: Option<String>,
    /// The HTTP status of the answer; none when the transport failed.
    pub status: Option<u16>,
    /// The final line's `jobId` (set for succeeded and failed jobs alike).
    pub job_id: Option<String>,
    /// When the answer was complete.
    pub done_at: Instant,
}

/// Sends one deploy and reads the NDJSON stream to its final line.
pub(crate) async fn deploy(client: &reqwest::Client, endpoint: &str, body: Vec<u8>) -> Outcome {
    let started = Instant::now();
    let result = async {
        let response = client
            .post(endpoint)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, bytes))
    }
    .await;
    let done_at = Instant::now();
    let latency = done_at.duration_since(started);
    let (succeeded, error, status, job_id) = match result {
        Err(e) => (false, Some(format!("transport: {e}")), None, None),
        Ok((status, bytes)) => {
            let last = bytes
                .split(|&b| b == b'\n')
                .rfind(|l| !l.iter().all(u8::is_ascii_whitespace))
                .and_then(|l| serde_json::from_slice::<Value>(l).ok());
            let ok = status.is_success()
                && last
                    .as_ref()
                    .is_some_and(|v| v["result"]["status"] == "succeeded");
            let error = (!ok).then(|| {
                format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&bytes).lines().last().unwrap_or("")
                )
            });
            let job_id = last
                .as_ref()
                .and_then(|v| v["result"]["jobId"].as_str())
                .map(str::to_owned);
            (ok, error, Some(status.as_u16()), job_id)
        }
    };
    Outcome {
        latency,
        succeeded,
        error,
        status,
        job_id,
        done_at,
    }
}

/// The result of `clients` concurrent loops, each sending its share of `bodies` one after
/// another.
pub(crate) struct LoadRun {
    pub outcomes: Vec<Outcome>,
    pub wall: Duration,
}

/// Runs `bodies` split round-robin over `clients` concurrent loops sharing one keep-alive pool.
pub(crate) fn run_clients(endpoint: &str, clients: usize, bodies: Vec<Vec<u8>>) -> Result<LoadRun> {
    run_clients_on(&[endpoint.to_owned()], clients, bodies)
}

/// Like [`run_clients`], with client `i` sending to `endpoints[i % endpoints.len()]` (one
/// replica each, spread evenly).
pub(crate) fn run_clients_on(
    endpoints: &[String],
    clients: usize,
    bodies: Vec<Vec<u8>>,
) -> Result<LoadRun> {
    if endpoints.is_empty() {
        bail!("no endpoint to send requests to");
    }
    let runtime = client_runtime()?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("build the HTTP client")?;
    let mut shares: Vec<Vec<Vec<u8>>> = vec![Vec::new(); clients.max(1)];
    for (i, body) in bodies.into_iter().enumerate() {
        shares[i % clients.max(1)].push(body);
    }
    runtime.block_on(async {
        let started = Instant::now();
        let mut handles = Vec::new();
        for (i, share) in shares.into_iter().enumerate() {
            let client = client.clone();
            let endpoint = endpoints[i % endpoints.len()].clone();
            handles.push(tokio::spawn(async move {
                let mut out = Vec::with_capacity(share.len());
                for body in share {
                    out.push(deploy(&client, &endpoint, body).await);
                }
                out
            }));
        }
        let mut outcomes = Vec::new();
        for handle in handles {
            outcomes.extend(handle.await.context("a client task panicked")?);
        }
        Ok(LoadRun {
            outcomes,
            wall: started.elapsed(),
        })
    })
}

/// Runs `bodies` as an open loop: request `i` is sent at `i / rate` seconds after the start by
/// client `i % clients` (each client its own connection pool), whether or not earlier requests
/// have come back, as independent CI pipelines do. Latency counts from the scheduled send time,
/// so a server that falls behind is charged for the queueing it causes.
pub(crate) fn run_open_loop(
    endpoint: &str,
    clients: usize,
    rate_per_s: f64,
    bodies: Vec<Vec<u8>>,
) -> Result<LoadRun> {
    if rate_per_s <= 0.0 {
        bail!("the offered rate must be positive, got {rate_per_s}");
    }
    let runtime = client_runtime()?;
    let pools = (0..clients.max(1))
        .map(|_| {
            reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .context("build the HTTP client")
        })
        .collect::<Result<Vec<_>>>()?;
    runtime.block_on(async {
        let started = tokio::time::Instant::now();
        let mut handles = Vec::with_capacity(bodies.len());
        for (i, body) in bodies.into_iter().enumerate() {
            let at = started + Duration::from_secs_f64(i as f64 / rate_per_s);
            let client = pools[i % pools.len()].clone();
            let endpoint = endpoint.to_owned();
            handles.push(tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                let mut outcome = deploy(&client, &endpoint, body).await;
                // Charge any delay between the schedule and the actual send to the server's side.
                outcome.latency = at.elapsed();
                outcome
            }));
        }
        let mut outcomes = Vec::with_capacity(handles.len());
        for handle in handles {
            outcomes.push(handle.await.context("a client task panicked")?);
        }
        Ok(LoadRun {
            outcomes,
            wall: started.elapsed(),
        })
    })
}

/// The counters of `/metrics` the benchmark reads.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Counters {
    /// Pushes that landed a batch (`tug_batch_size_count`).
    pub batches: f64,
    /// Requests those batches carried (`tug_batch_size_sum`).
    pub batched_requests: f64,
    /// `tug_push_retries_total`, summed over repositories.
    pub push_retries: f64,
    /// `tug_push_conflicts_total`, summed over repositories.
    pub push_conflicts: f64,
}

impl Counters {
    pub(crate) fn since(self, before: Counters) -> Counters {
        Counters {
            batches: self.batches - before.batches,
            batched_requests: self.batched_requests - before.batched_requests,
            push_retries: self.push_retries - before.push_retries,
            push_conflicts: self.push_conflicts - before.push_conflicts,
        }
    }
}

/// Reads the counters from Prometheus text: a family's samples summed over their labels.
pub(crate) fn parse_counters(text: &str) -> Counters {
    let sum = |family: &str| -> f64 {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                let bare = name.split('{').next()?;
                (bare == family).then(|| value.trim().parse::<f64>().ok())?
            })
            .sum()
    };
    Counters {
        batches: sum("tug_batch_size_count"),
        batched_requests: sum("tug_batch_size_sum"),
        push_retries: sum("tug_push_retries_total"),
        push_conflicts: sum("tug_push_conflicts_total"),
    }
}

/// `VmRSS` or `VmHWM` of a process, in KiB.
pub(crate) fn memory_kib(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    parse_status_kib(&text, field).with_context(|| format!("{path} has no {field} line"))
}

fn parse_status_kib(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Samples a process's resident set in the background until stopped; keeps the largest.
pub(crate) struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    pub(crate) fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                if let Ok(kib) = memory_kib(pid, "VmRSS") {
                    peak = peak.max(kib);
                }
                std::thread::sleep(RSS_SAMPLE_INTERVAL);
            }
            peak
        });
        Self { stop, handle }
    }

    /// The largest `VmRSS` seen, in KiB.
    pub(crate) fn finish(self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.join() {
            Ok(peak) => Ok(peak),
            Err(_) => bail!("the RSS sampler thread panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_over_labels_and_skip_comments() {
        let text = "# HELP tug_batch_size Requests per push.\n# TYPE tug_batch_size histogram\ntug_batch_size_sum 42.0\ntug_batch_size_count 5\ntug_batch_size_bucket{le=\"1.0\"} 1\ntug_push_retries_total{repository=\"a\"} 2\ntug_push_retries_total{repository=\"b\"} 1\n";
        let c = parse_counters(text);
        assert!((c.batches - 5.0).abs() < 1e-9);
        assert!((c.batched_requests - 42.0).abs() < 1e-9);
        assert!((c.push_retries - 3.0).abs() < 1e-9);
        assert!(c.push_conflicts.abs() < 1e-9);
        let later = Counters { batches: 7.0, ..c };
        assert!((later.since(c).batches - 2.0).abs() < 1e-9);
    }

    #[test]
    fn status_fields_are_read_in_kib() {
        let text = "Name:\ttug\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(parse_status_kib(text, "VmHWM"), Some(51_200));
        assert_eq!(parse_status_kib(text, "VmRSS"), Some(40_960));
        assert_eq!(parse_status_kib(text, "VmSwap"), None);
    }

    #[test]
    fn this_process_has_a_resident_set() {
        assert!(memory_kib(std::process::id(), "VmRSS").unwrap() > 0);
    }
}
