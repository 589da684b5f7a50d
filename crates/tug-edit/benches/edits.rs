//! Edit engine throughput: kustomize-image edits with a changing tag on a realistic
//! kustomization (the shape CI bumps in a GitOps repository), including the verification parse.
//! Run with `cargo bench -p tug-edit`.

use std::hint::black_box;
use std::time::{Duration, Instant};
use tug_edit::{Edit, ImageSpec};

const KUSTOMIZATION: &str = r#"# Managed by the delivery pipeline. Image tags below are bumped automatically by CI;
# do not edit newTag by hand, open a PR against the service repository instead.
# Service: svc-0042  environment: prod  owner: team-checkout
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: svc-0042-prod
resources:
  - ../base
patches:
  - path: deployment.yaml
labels:
  - pairs:
      app.kubernetes.io/name: svc-0042
      app.kubernetes.io/part-of: team-checkout
      environment: prod
images:
  # application container (bumped by CI on every release)
  - name: registry.example.com/checkout/svc-0042
    newTag: "1.7.23"  # release tag
  # service mesh sidecar (pinned by platform team)
  - name: registry.example.com/platform/envoy-sidecar
    newTag: "v1.29.3"
  # log shipper
  - name: registry.example.com/platform/fluent-bit
    newTag: "3.0.7"
configMapGenerator:
  - name: svc-0042-config
    files:
      - values.yaml
"#;

/// CPU time this thread has run, from the kernel's scheduler statistics; the machine may be
/// shared, so wall-clock time alone would understate what one core does.
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

fn main() {
    let mut file = KUSTOMIZATION.as_bytes().to_vec();
    let run_for = Duration::from_secs(2);
    let start = Instant::now();
    let cpu_start = thread_cpu_time();
    let mut edits: u64 = 0;
    while start.elapsed() < run_for {
        for _ in 0..100 {
            let tag = format!("1.{}.{}", edits / 1000 % 100, edits % 1000);
            let spec =
                match ImageSpec::parse(&format!("registry.example.com/checkout/svc-0042:{tag}")) {
                    Ok(spec) => spec,
                    Err(e) => {
                        eprintln!("bench spec: {e}");
                        std::process::exit(1);
                    }
                };
            match tug_edit::apply(
                "kustomization.yaml",
                black_box(&file),
                &Edit::KustomizeImage(spec),
            ) {
                Ok(outcome) => file = outcome.output,
                Err(e) => {
                    eprintln!("bench edit failed: {e}");
                    std::process::exit(1);
                }
            }
            edits += 1;
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = match (cpu_start, thread_cpu_time()) {
        (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
        _ => wall,
    };
    println!(
        "edit engine: {:.0} kustomization edits/s (one core; {:.0}/s by wall clock, the thread ran {:.0}% of the time)",
        edits as f64 / cpu,
        edits as f64 / wall,
        100.0 * cpu / wall
    );
}
