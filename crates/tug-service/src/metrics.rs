//! Prometheus metrics of a tug server, served at `/metrics` in the text exposition format.
//!
//! Families (all prefixed `tug_`):
//! - `tug_queue_depth{repository,branch}` — unfinished tasks per branch;
//! - `tug_job_duration_seconds` — from acceptance (stored) to the job's end;
//! - `tug_push_duration_seconds` — one `git push` of a batch;
//! - `tug_batch_size` — requests carried by one push;
//! - `tug_push_retries_total{repository}` — pushes tried again after a transient failure;
//! - `tug_push_conflicts_total{repository}` — pushes the remote rejected because the branch moved
//!   (the edits are then re-applied to the new tip);
//! - `tug_jobs_total{status}` — finished jobs by final status.
//!
//! Retries and conflicts are labelled by repository only: a server writes to thousands of
//! branches, and per-branch counters would multiply the series for little insight.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BranchLabels {
    repository: String,
    branch: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RepositoryLabels {
    repository: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot encode metrics: {0}")]
pub struct RenderError(#[from] std::fmt::Error);

/// The server's metrics. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    queue_depth: Family<BranchLabels, Gauge>,
    /// The branches `queue_depth` currently has a series for, so vanished ones can be dropped.
    queued_branches: Mutex<HashSet<BranchLabels>>,
    job_duration: Histogram,
    push_duration: Histogram,
    batch_size: Histogram,
    push_retries: Family<RepositoryLabels, Counter>,
    push_conflicts: Family<RepositoryLabels, Counter>,
    jobs: Family<StatusLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tug");
        let queue_depth = Family::<BranchLabels, Gauge>::default();
        registry.register(
            "queue_depth",
            "Unfinished tasks per repository branch",
            queue_depth.clone(),
        );
        // 5 ms to ~80 s: an edit-and-push cycle is tens of milliseconds, a job waiting behind a
        // busy branch or a slow remote can take a minute.
        let job_duration = Histogram::new(exponential_buckets(0.005, 2.0, 15));
        registry.register_with_unit(
            "job_duration",
            "Time from a job being stored to its end",
            Unit::Seconds,
            job_duration.clone(),
        );
        let push_duration = Histogram::new(exponential_buckets(0.005, 2.0, 13));
        registry.register_with_unit(
            "push_duration",
            "Duration of one push of a batch of commits",
            Unit::Seconds,
            push_duration.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "batch_size",
            "Requests carried by one push",
            batch_size.clone(),
        );
        let push_retries = Family::<RepositoryLabels, Counter>::default();
        registry.register(
            "push_retries",
            "Pushes tried again after a transient failure",
            push_retries.clone(),
        );
        let push_conflicts = Family::<RepositoryLabels, Counter>::default();
        registry.register(
            "push_conflicts",
            "Pushes rejected because the branch moved (compare-and-swap failures)",
            push_conflicts.clone(),
        );
        let jobs = Family::<StatusLabels, Counter>::default();
        registry.register("jobs", "Finished jobs by final status", jobs.clone());
        Metrics {
            registry,
            queue_depth,
            queued_branches: Mutex::new(HashSet::new()),
            job_duration,
            push_duration,
            batch_size,
            push_retries,
            push_conflicts,
            jobs,
        }
    }

    /// Replaces every queue-depth series with `depths` (as from `Store::queue_depths`); branches
    /// absent from it lose their series, so idle branches do not linger as zeros forever.
    pub fn set_queue_depths<'a>(&self, depths: impl IntoIterator<Item = (&'a str, &'a str, u64)>) {
        let mut current = HashSet::new();
        for (repository, branch, depth) in depths {
            let labels = BranchLabels {
                repository: repository.to_owned(),
                branch: branch.to_owned(),
            };
            self.queue_depth
                .get_or_create(&labels)
                .set(i64::try_from(depth).unwrap_or(i64::MAX));
            current.insert(labels);
        }
        let mut known = self
            .queued_branches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for stale in known.difference(&current) {
            self.queue_depth.remove(stale);
        }
        *known = current;
    }

    pub fn observe_job_duration(&self, accepted_to_finished: Duration) {
        self.job_duration
            .observe(accepted_to_finished.as_secs_f64());
    }

    pub fn observe_push_duration(&self, push: Duration) {
        self.push_duration.observe(push.as_secs_f64());
    }

    pub fn observe_batch_size(&self, requests: usize) {
        // Precision loss above 2^53 requests in one push is not a concern.
        #[allow(clippy::cast_precision_loss)]
        self.batch_size.observe(requests as f64);
    }

    pub fn inc_push_retries(&self, repository: &str) {
        self.push_retries
            .get_or_create(&RepositoryLabels {
                repository: repository.to_owned(),
            })
            .inc();
    }

    pub fn inc_push_conflicts(&self, repository: &str) {
        self.push_conflicts
            .get_or_create(&RepositoryLabels {
                repository: repository.to_owned(),
            })
            .inc();
    }

    /// Counts a finished job; `status` is its final state (`succeeded`, `failed`).
    pub fn inc_jobs(&self, status: &str) {
        self.jobs
            .get_or_create(&StatusLabels {
                status: status.to_owned(),
            })
            .inc();
    }

    /// The text exposition format (OpenMetrics text, which Prometheus scrapes as is). Serve it
    /// with [`CONTENT_TYPE`].
    pub fn render(&self) -> Result<String, RenderError> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let metrics = Metrics::new();
        metrics.set_queue_depths([("platform", "main", 3)]);
        metrics.observe_job_duration(Duration::from_millis(120));
        metrics.observe_push_duration(Duration::from_millis(40));
        metrics.observe_batch_size(5);
        metrics.inc_push_retries("platform");
        metrics.inc_push_conflicts("platform");
        metrics.inc_jobs("succeeded");
        let text = metrics.render().unwrap();
        for expected in [
            "# TYPE tug_queue_depth gauge",
            "tug_queue_depth{repository=\"platform\",branch=\"main\"} 3",
            "# TYPE tug_job_duration_seconds histogram",
            "tug_job_duration_seconds_count 1",
            "# TYPE tug_push_duration_seconds histogram",
            "tug_push_duration_seconds_count 1",
            "# TYPE tug_batch_size histogram",
            "tug_batch_size_sum 5.0",
            "tug_push_retries_total{repository=\"platform\"} 1",
            "tug_push_conflicts_total{repository=\"platform\"} 1",
            "tug_jobs_total{status=\"succeeded\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
        }
    }

    #[test]
    fn queue_depths_drop_branches_that_emptied() {
        let metrics = Metrics::new();
        metrics.set_queue_depths([("platform", "main", 3), ("apps", "dev", 1)]);
        metrics.set_queue_depths([("apps", "dev", 2)]);
        let text = metrics.render().unwrap();
        assert!(!text.contains("branch=\"main\""), "{text}");
        assert!(
            text.contains("tug_queue_depth{repository=\"apps\",branch=\"dev\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn job_latency_lands_in_the_right_bucket() {
        let metrics = Metrics::new();
        metrics.observe_job_duration(Duration::from_millis(7));
        let text = metrics.render().unwrap();
        // Buckets start at 5 ms and double: 7 ms is above 0.005 and within 0.01.
        assert!(
            text.contains("tug_job_duration_seconds_bucket{le=\"0.005\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("tug_job_duration_seconds_bucket{le=\"0.01\"} 1"),
            "{text}"
        );
    }
}
