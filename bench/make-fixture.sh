#!/usr/bin/env bash
# make-fixture.sh SIZE DIR
#   Create a realistic GitOps manifest repository as a bare "remote" at DIR (e.g. /tmp/tug-bench/fixtures/small.git).
#   SIZE = small  : 50 services x 3 envs   (~500 files,    ~300 commits)
#          large  : 2000 services x 3 envs (~20,000 files, ~20,000 commits)
#          or "SERVICES:COMMITS" for a custom size, e.g. 500:5000
#
# Layout per service:
#   apps/svc-NNNN/base/service.yaml
#   apps/svc-NNNN/<env>/kustomization.yaml   (images: list with comments; the tag CI bumps)
#   apps/svc-NNNN/<env>/deployment.yaml      (strategic-merge patch: replicas, resources, env)
#   apps/svc-NNNN/<env>/values.yaml          (app config)
# History: one initial commit with every file, then COMMITS-1 commits that each touch one file
# (90% image-tag bumps in a kustomization.yaml, 10% replica changes in a deployment.yaml), like a
# real CI-driven GitOps repo. It is generated as a `git fast-import` stream (seconds, not hours),
# then repacked and given a commit-graph, as a hosted remote would have.
set -euo pipefail
SIZE=${1:?usage: make-fixture.sh small|large|SERVICES:COMMITS DIR}
DIR=${2:?usage: make-fixture.sh SIZE DIR}
case $SIZE in
  small) SVCS=50;   COMMITS=300 ;;
  large) SVCS=2000; COMMITS=20000 ;;
  *:*)   SVCS=${SIZE%%:*}; COMMITS=${SIZE##*:} ;;
  *) echo "bad SIZE $SIZE" >&2; exit 2 ;;
esac

rm -rf "$DIR"
git init -q --bare -b main "$DIR"
# Server-side settings the benches need: partial clone filters, anonymous push over git:// and http.
git -C "$DIR" config uploadpack.allowFilter true
git -C "$DIR" config uploadpack.allowAnySHA1InWant true
git -C "$DIR" config daemon.receivepack true
git -C "$DIR" config http.receivepack true

# The generator: prints a fast-import stream on stdout. Deterministic (seeded).
python3 - "$SVCS" "$COMMITS" <<'PY' | git -C "$DIR" fast-import --quiet --done
import sys, random
svcs, commits = int(sys.argv[1]), int(sys.argv[2])
random.seed(42)
envs = ["dev", "staging", "prod"]
teams = ["payments", "search", "identity", "catalog", "checkout", "platform", "data", "growth"]
out = sys.stdout.buffer
ts = 1_600_000_000

def name(i): return "svc-%04d" % i
def team(i): return teams[i % len(teams)]
tag = {(i, e): [1, random.randint(0, 20), random.randint(0, 50)] for i in range(svcs) for e in envs}
reps = {(i, e): {"dev": 1, "staging": 2, "prod": 3}[e] for i in range(svcs) for e in envs}

def kust(i, e):
    t = tag[(i, e)]
    return f"""# Managed by the delivery pipeline. Image tags below are bumped automatically by CI;
# do not edit newTag by hand, open a PR against the service repository instead.
# Service: {name(i)}  environment: {e}  owner: team-{team(i)}
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: {name(i)}-{e}
resources:
  - ../base
patches:
  - path: deployment.yaml
labels:
  - pairs:
      app.kubernetes.io/name: {name(i)}
      app.kubernetes.io/part-of: team-{team(i)}
      environment: {e}
images:
  # application container (bumped by CI on every release)
  - name: registry.example.com/{team(i)}/{name(i)}
    newTag: "{t[0]}.{t[1]}.{t[2]}"  # release tag
  # service mesh sidecar (pinned by platform team)
  - name: registry.example.com/platform/envoy-sidecar
    newTag: "v1.29.3"
  # log shipper
  - name: registry.example.com/platform/fluent-bit
    newTag: "3.0.7"
configMapGenerator:
  - name: {name(i)}-config
    files:
      - values.yaml
""".encode()

def deploy(i, e):
    return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name(i)}
spec:
  replicas: {reps[(i, e)]}
  template:
    spec:
      containers:
        - name: app
          resources:
            requests:
              cpu: {100 * (1 + i % 4)}m
              memory: {128 * (1 + i % 3)}Mi
            limits:
              memory: {256 * (1 + i % 3)}Mi
          env:
            - name: ENVIRONMENT
              value: {e}
            - name: LOG_LEVEL
              value: {"debug" if e == "dev" else "info"}
            - name: OTEL_SERVICE_NAME
              value: {name(i)}
          readinessProbe:
            httpGet:
              path: /healthz
              port: 8080
            periodSeconds: 10
""".encode()

def values(i, e):
    return f"""# Application configuration for {name(i)} ({e})
server:
  port: 8080
  readTimeout: 30s
  writeTimeout: 30s
database:
  host: {name(i)}-db.{e}.internal
  pool: {5 + i % 10}
features:
  newCheckout: {"true" if (i + len(e)) % 2 else "false"}
  rateLimit: {100 * (1 + i % 5)}
upstreams:
  - name: {name((i + 1) % svcs)}
    url: http://{name((i + 1) % svcs)}.{name((i + 1) % svcs)}-{e}.svc:8080
  - name: {name((i + 7) % svcs)}
    url: http://{name((i + 7) % svcs)}.{name((i + 7) % svcs)}-{e}.svc:8080
""".encode()

def base(i):
    return f"""apiVersion: v1
kind: Service
metadata:
  name: {name(i)}
spec:
  selector:
    app.kubernetes.io/name: {name(i)}
  ports:
    - port: 8080
      targetPort: 8080
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name(i)}
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: {name(i)}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {name(i)}
    spec:
      containers:
        - name: app
          image: registry.example.com/{team(i)}/{name(i)}
          ports:
            - containerPort: 8080
""".encode()

def data(b): out.write(b"data %d\n" % len(b)); out.write(b); out.write(b"\n")
def commit(msg, files):
    global ts
    ts += random.randint(60, 3600)
    out.write(b"commit refs/heads/main\n")
    out.write(b"author Delivery Bot <bot@example.invalid> %d +0000\n" % ts)
    out.write(b"committer Delivery Bot <bot@example.invalid> %d +0000\n" % ts)
    data(msg.encode())
    for path, content in files:
        out.write(b"M 100644 inline %s\n" % path.encode()); data(content)

init = [("README.md", b"# GitOps manifests\n\nOne directory per service under apps/, one overlay per environment.\n")]
for i in range(svcs):
    init.append((f"apps/{name(i)}/base/service.yaml", base(i)))
    for e in envs:
        d = f"apps/{name(i)}/{e}/"
        init += [(d + "kustomization.yaml", kust(i, e)), (d + "deployment.yaml", deploy(i, e)), (d + "values.yaml", values(i, e))]
commit("Initial import of manifests\n", init)
for _ in range(commits - 1):
    i, e = random.randrange(svcs), random.choice(envs)
    if random.random() < 0.9:
        t = tag[(i, e)]; t[2] += 1
        if random.random() < 0.1: t[1] += 1; t[2] = 0
        commit(f"deploy({name(i)}/{e}): bump image to {t[0]}.{t[1]}.{t[2]}\n\nRequested-by: ci-pipeline\n",
               [(f"apps/{name(i)}/{e}/kustomization.yaml", kust(i, e))])
    else:
        reps[(i, e)] = max(1, reps[(i, e)] + random.choice([-1, 1, 1]))
        commit(f"scale({name(i)}/{e}): replicas={reps[(i, e)]}\n", [(f"apps/{name(i)}/{e}/deployment.yaml", deploy(i, e))])
out.write(b"done\n")
PY

# Repack like a hosted remote: one pack with good deltas, bitmaps, commit-graph.
git -C "$DIR" repack -adf -q --write-bitmap-index
git -C "$DIR" commit-graph write --reachable
git -C "$DIR" gc --quiet --prune=now   # packs refs too
echo "$DIR: $(git -C "$DIR" rev-list --count main) commits, $(git -C "$DIR" ls-tree -r main | wc -l) files, $(du -sh "$DIR" | cut -f1)"
