#!/usr/bin/env bash
# Offline checks of deploy/ (issue #19): no cluster, no Docker daemon, no network after the first run.
#
#   tools/validate-deploy.sh              # checks deploy/
#   tools/validate-deploy.sh DIR          # checks another copy laid out like deploy/ (Dockerfile*, k8s/)
#
# 1. Every manifest in k8s/ (kustomization.yaml aside, the example Secret included) against the Kubernetes
#    OpenAPI schemas bundled in kubernetes-validate, strictly (unknown fields are errors), for each version in
#    $K8S_VERSIONS (default: 1.29.0, the oldest these manifests are meant for, and 1.37.0, the newest the
#    package bundles). A resource whose kind has no schema is a failure too, not a warning.
# 2. What a schema cannot see: kustomization.yaml lists every manifest but the examples; labels; selectors
#    match pod labels; Services, probes and HPAs name ports and targets that exist; ConfigMap, Secret and
#    volume references resolve; $(VAR) references are defined; no `serve --follow` container has
#    CONTRASTGEO_PUBLISH_URL (serve's env for --publish) in its environment; the Indexed Job's shard count
#    agrees with completions; every image has a pinned tag.
# 3. `kubectl kustomize` (or `kustomize build`) of k8s/, validated again as rendered, when either tool is
#    installed; skipped with a message otherwise.
# 4. Each Dockerfile: every FROM is a pinned tag or digest (ARG defaults resolved) or an earlier stage; the
#    stages the README documents exist; a <Dockerfile>.dockerignore beside it excludes target/. With a
#    running Docker daemon, also `docker build --check` (BuildKit's lint; builds nothing).
#
# Exits non-zero when anything fails. kubernetes-validate is installed once, with pip --require-hashes from
# deploy/validate-requirements.txt, into target/deploy-venv (override with $DEPLOY_VENV).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEPLOY=$(cd "${1:-deploy}" && pwd)
K8S=$DEPLOY/k8s
REQS=$ROOT/deploy/validate-requirements.txt
VENV=${DEPLOY_VENV:-$ROOT/target/deploy-venv}
K8S_VERSIONS=${K8S_VERSIONS:-1.29.0 1.37.0}
PYTHON=${PYTHON:-python3}

say() { echo "validate-deploy: $*" >&2; }
die() { say "error: $*"; exit 1; }
failures=0
fail() { say "FAIL: $*"; failures=$((failures + 1)); }

[ -d "$K8S" ] || die "$K8S not found"
[ -f "$REQS" ] || die "$REQS not found"

# --- kubernetes-validate, pinned and hash-checked, in its own venv ---------------------------------------
stamp="$VENV/.requirements-$(sha256sum "$REQS" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found (needed for kubernetes-validate)"
  say "installing kubernetes-validate into $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes -r "$REQS" \
    || die "pip install -r $REQS failed (is PyPI reachable?)"
  touch "$stamp"
fi
KV="$VENV/bin/kubernetes-validate"
VPY="$VENV/bin/python"
say "kubernetes-validate $("$KV" --version); Kubernetes versions: $K8S_VERSIONS"

# validate FILE LABEL: strict schema validation against each version; WARN (no schema), ERROR, FATAL fail.
validate() {
  local file=$1 label=$2 version out rc passed
  for version in $K8S_VERSIONS; do
    rc=0
    out=$("$KV" --strict -k "$version" "$file" 2>&1) || rc=$?
    passed=$(grep -c '^INFO .* passed for resource' <<<"$out" || true)
    if [ "$rc" -ne 0 ] || grep -qv '^INFO ' <<<"$out"; then
      fail "$label against Kubernetes $version:"
      grep -v '^INFO ' <<<"$out" | sed 's/^/    /' >&2
    elif [ "$passed" -eq 0 ]; then
      fail "$label: no resources found"
    else
      say "ok   $label: $passed resource(s) valid against Kubernetes $version (strict)"
    fi
  done
}

# --- 1. each manifest --------------------------------------------------------------------------------------
shopt -s nullglob
manifests=()
for f in "$K8S"/*.yaml "$K8S"/*.yml; do
  case $(basename "$f") in kustomization.yaml | kustomization.yml) continue ;; esac
  manifests+=("$f")
done
[ "${#manifests[@]}" -gt 0 ] || die "no manifests in $K8S"
for f in "${manifests[@]}"; do
  validate "$f" "k8s/$(basename "$f")"
done

# --- 2. cross-references ---------------------------------------------------------------------------------
if ! "$VPY" - "$K8S" <<'PY'; then
import os, re, sys
import yaml

k8s = sys.argv[1]
problems = []
def bad(msg):
    problems.append(msg)

def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]

kust_path = os.path.join(k8s, "kustomization.yaml")
if not os.path.isfile(kust_path):
    bad("kustomization.yaml is missing")
    kust = {}
else:
    kust = load(kust_path)[0]
listed = kust.get("resources", []) or []
files = sorted(f for f in os.listdir(k8s) if f.endswith((".yaml", ".yml")) and not f.startswith("kustomization."))
examples = [f for f in files if "example" in f]
for f in listed:
    if not os.path.isfile(os.path.join(k8s, f)):
        bad(f"kustomization.yaml lists {f}, which does not exist")
    if "example" in f:
        bad(f"kustomization.yaml lists the example {f}: placeholders would be applied")
for f in files:
    if f not in listed and f not in examples:
        bad(f"{f} is not listed in kustomization.yaml")
for key in ("namespace", "commonLabels"):
    if key in kust:
        bad(f"kustomization.yaml sets {key}: the manifests are meant to be namespace-free / explicitly labelled")

docs = []  # (file, resource)
for f in files:
    for d in load(os.path.join(k8s, f)):
        docs.append((f, d))
def name_of(d):
    return f"{d.get('kind')}/{d.get('metadata', {}).get('name')}"

by_kind = {}
for f, d in docs:
    by_kind.setdefault(d.get("kind"), {})[d["metadata"]["name"]] = (f, d)
config_maps = {n: (d.get("data") or {}) for n, (f, d) in by_kind.get("ConfigMap", {}).items()}
secrets = {n: {**(d.get("data") or {}), **(d.get("stringData") or {})} for n, (f, d) in by_kind.get("Secret", {}).items()}

WORKLOADS = ("Deployment", "StatefulSet", "Job", "DaemonSet")
COMPONENTS = {"writer", "follower", "bulk"}
for f, d in docs:
    meta = d.get("metadata", {})
    where = f"{f}: {name_of(d)}"
    if "namespace" in meta:
        bad(f"{where}: sets metadata.namespace (the manifests are namespace-free)")
    labels = meta.get("labels") or {}
    if labels.get("app.kubernetes.io/name") != "contrastgeo":
        bad(f"{where}: label app.kubernetes.io/name: contrastgeo missing")
    comp = labels.get("app.kubernetes.io/component")
    if d.get("kind") in WORKLOADS and comp not in COMPONENTS:
        bad(f"{where}: component label {comp!r} is not one of {sorted(COMPONENTS)}")

def pod_labels(d):
    return ((d["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}

def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

def containers(pod_spec):
    return (pod_spec.get("initContainers") or []) + (pod_spec.get("containers") or [])

workloads = [(f, d) for f, d in docs if d.get("kind") in WORKLOADS]
for f, d in workloads:
    where = f"{f}: {name_of(d)}"
    spec = d["spec"]
    labels = pod_labels(d)
    sel = (spec.get("selector") or {}).get("matchLabels")
    if d["kind"] != "Job" and not matches(sel, labels):
        bad(f"{where}: selector {sel} does not match the pod labels {labels}")
    if labels.get("app.kubernetes.io/component") != d["metadata"]["labels"].get("app.kubernetes.io/component"):
        bad(f"{where}: the pod's component label differs from the workload's")
    pod = spec["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    claim_names = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates") or []}
    for v in volumes.values():
        if "configMap" in v and v["configMap"]["name"] not in config_maps:
            bad(f"{where}: volume {v['name']} names ConfigMap {v['configMap']['name']}, defined nowhere")
        if "secret" in v:
            s = v["secret"]["secretName"]
            if s not in secrets:
                bad(f"{where}: volume {v['name']} names Secret {s}, defined nowhere (not even in an example)")
            for item in v["secret"].get("items") or []:
                if s in secrets and item["key"] not in secrets[s]:
                    bad(f"{where}: volume {v['name']} wants key {item['key']} of Secret {s}, which lacks it")
    indexed = d["kind"] == "Job" and spec.get("completionMode") == "Indexed"
    for c in containers(pod):
        cw = f"{where} container {c['name']}"
        image = c.get("image", "")
        if "@sha256:" not in image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
            bad(f"{cw}: image {image!r} has no pinned tag")
        env_names = set()
        for e in c.get("env") or []:
            env_names.add(e["name"])
            ref = (e.get("valueFrom") or {})
            if "configMapKeyRef" in ref:
                r = ref["configMapKeyRef"]
                if r["key"] not in config_maps.get(r["name"], {}):
                    bad(f"{cw}: env {e['name']} wants key {r['key']} of ConfigMap {r['name']}, which lacks it")
            if "secretKeyRef" in ref:
                r = ref["secretKeyRef"]
                if r["key"] not in secrets.get(r["name"], {}) and not r.get("optional"):
                    bad(f"{cw}: env {e['name']} wants key {r['key']} of Secret {r['name']}, which lacks it")
        for src in c.get("envFrom") or []:
            if "configMapRef" in src:
                n = src["configMapRef"]["name"]
                if n not in config_maps:
                    bad(f"{cw}: envFrom names ConfigMap {n}, defined nowhere")
                env_names |= set(config_maps.get(n, {}))
            if "secretRef" in src:
                n = src["secretRef"]["name"]
                if n not in secrets:
                    bad(f"{cw}: envFrom names Secret {n}, defined nowhere (not even in an example)")
                env_names |= set(secrets.get(n, {}))
        argv = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
        if "--follow" in argv and "CONTRASTGEO_PUBLISH_URL" in env_names:
            bad(f"{cw}: runs serve --follow with CONTRASTGEO_PUBLISH_URL in its environment, which serve reads "
                "as --publish (refused together with --follow); pass the URL under another name")
        if indexed:
            env_names.add("JOB_COMPLETION_INDEX")  # set by the Job controller in every container
        for arg in (c.get("command") or []) + (c.get("args") or []):
            for var in re.findall(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(arg)):
                if var not in env_names:
                    bad(f"{cw}: $({var}) is not defined in the container's environment (it would stay literal)")
        for m in c.get("volumeMounts") or []:
            if m["name"] not in volumes and m["name"] not in claim_names:
                bad(f"{cw}: mounts {m['name']}, which is neither a volume nor a volumeClaimTemplate")
        ports = {p.get("name") for p in c.get("ports") or []} | {p.get("containerPort") for p in c.get("ports") or []}
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
            if port is not None and port not in ports:
                bad(f"{cw}: {probe} uses port {port!r}, which the container does not declare")
    if d["kind"] == "StatefulSet":
        svc = spec.get("serviceName")
        if svc not in by_kind.get("Service", {}):
            bad(f"{where}: serviceName {svc} is not a Service here")
    if indexed:
        n = spec.get("completions")
        if spec.get("parallelism") not in (None, n):
            bad(f"{where}: parallelism {spec.get('parallelism')} differs from completions {n}")
        text = yaml.safe_dump(pod)
        counts = set(re.findall(r"--shard\s+\S*?/(\d+)", text)) | set(re.findall(r"-of-(\d+)", text))
        if counts != {str(n)}:
            bad(f"{where}: the shard counts in the pod ({sorted(counts)}) are not all completions={n}")

for n, (f, d) in by_kind.get("Service", {}).items():
    where = f"{f}: Service/{n}"
    sel = d["spec"].get("selector")
    targets = [(wf, w) for wf, w in workloads if w["kind"] != "Job" and matches(sel, pod_labels(w))]
    if not targets:
        bad(f"{where}: selector {sel} matches no workload's pods")
    for p in d["spec"].get("ports") or []:
        tp = p.get("targetPort", p.get("port"))
        for wf, w in targets:
            declared = set()
            for c in w["spec"]["template"]["spec"].get("containers") or []:
                declared |= {q.get("name") for q in c.get("ports") or []} | {q.get("containerPort") for q in c.get("ports") or []}
            if tp not in declared:
                bad(f"{where}: targetPort {tp!r} is not a port of {name_of(w)}")
for n, (f, d) in by_kind.get("HorizontalPodAutoscaler", {}).items():
    ref = d["spec"]["scaleTargetRef"]
    target = by_kind.get(ref["kind"], {}).get(ref["name"])
    if not target:
        bad(f"{f}: HorizontalPodAutoscaler/{n} targets {ref['kind']}/{ref['name']}, which is not here")
    elif "replicas" in target[1]["spec"]:
        bad(f"{f}: {ref['kind']}/{ref['name']} sets spec.replicas although HorizontalPodAutoscaler/{n} owns it")
    for m in d["spec"].get("metrics") or []:
        if m.get("type") == "Resource" and target:
            res = m["resource"]["name"]
            for c in target[1]["spec"]["template"]["spec"].get("containers") or []:
                if res not in ((c.get("resources") or {}).get("requests") or {}):
                    bad(f"{f}: HorizontalPodAutoscaler/{n} scales on {res}, but container {c['name']} requests none")
for n, (f, d) in by_kind.get("PodDisruptionBudget", {}).items():
    sel = (d["spec"].get("selector") or {}).get("matchLabels")
    if not any(matches(sel, pod_labels(w)) for _, w in workloads):
        bad(f"{f}: PodDisruptionBudget/{n} selects no workload's pods")

for p in problems:
    print(f"validate-deploy: FAIL: {p}", file=sys.stderr)
print(f"validate-deploy: {'ok  ' if not problems else 'FAIL'} cross-references: {len(docs)} resources in "
      f"{len(files)} files, {len(problems)} problem(s)", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
  failures=$((failures + 1))
fi

# --- 3. the kustomization, rendered ------------------------------------------------------------------------
render=""
if command -v kubectl >/dev/null; then
  render="kubectl kustomize"
elif command -v kustomize >/dev/null; then
  render="kustomize build"
fi
if [ -n "$render" ]; then
  rendered=$(mktemp --suffix=.yaml)
  trap 'rm -f "$rendered"' EXIT
  if $render "$K8S" >"$rendered" 2>"$rendered.err"; then
    validate "$rendered" "$render k8s/ (rendered)"
    if grep -qE '^\s+image: contrastgeo(:|$)' "$rendered" && ! grep -qE '^\s+image: contrastgeo:with-data$' "$rendered"; then
      fail "$render k8s/: the images entry did not rewrite the contrastgeo image"
    fi
  else
    fail "$render k8s/ failed:"
    sed 's/^/    /' "$rendered.err" >&2
  fi
  rm -f "$rendered.err"
else
  say "skip $(basename "$K8S")/kustomization.yaml rendering: neither kubectl nor kustomize is installed"
fi

# --- 4. Dockerfiles ----------------------------------------------------------------------------------------
dockerfiles=()
for f in "$DEPLOY"/Dockerfile "$DEPLOY"/Dockerfile.*; do
  case $f in *.dockerignore) continue ;; esac
  [ -f "$f" ] && dockerfiles+=("$f")
done
[ "${#dockerfiles[@]}" -gt 0 ] || fail "no Dockerfile in $DEPLOY"
for f in "${dockerfiles[@]}"; do
  if "$VPY" - "$f" <<'PY'; then
import os, re, sys
path = sys.argv[1]
name = os.path.basename(path)
text = open(path).read()
# Join continuation lines, drop comments and blank lines.
lines, buf = [], ""
for raw in text.splitlines():
    s = raw.strip()
    if not buf and (not s or s.startswith("#")):
        continue
    if s.endswith("\\"):
        buf += s[:-1] + " "
        continue
    lines.append(buf + s)
    buf = ""
problems = []
args = {}        # ARG defaults declared before the first FROM
stages = []
seen_from = False
def resolve(s):
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), s)
def pinned(image):
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last and not last.endswith(":latest") and "$" not in image
for line in lines:
    word, _, rest = line.partition(" ")
    word = word.upper()
    if word == "ARG" and not seen_from:
        k, _, v = rest.strip().partition("=")
        args[k] = v.strip().strip('"')
    elif word == "FROM":
        seen_from = True
        parts = [p for p in rest.split() if not p.startswith("--platform")]
        image = resolve(parts[0])
        stage = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
        if image.lower() not in [s.lower() for s in stages] and not pinned(image):
            problems.append(f"FROM {parts[0]} (= {image}) is not a pinned tag or digest")
        if stage:
            stages.append(stage)
    elif word == "COPY":
        m = re.search(r"--from=(\S+)", rest)
        if m:
            src = resolve(m.group(1))
            if src.lower() not in [s.lower() for s in stages] and not pinned(src):
                problems.append(f"COPY --from={m.group(1)} is neither an earlier stage nor a pinned image")
for wanted in ("build", "data", "runtime-base", "with-data", "runtime"):
    if wanted not in stages:
        problems.append(f"no stage named {wanted} (deploy/README.md documents it)")
if stages and stages[-1] != "runtime":
    problems.append(f"the last stage (the default target) is {stages[-1]}, not runtime (the image without data)")
if not re.search(r"^USER\s+\d+(:\d+)?\s*$", text, re.M):
    problems.append("no numeric USER (Kubernetes' runAsNonRoot needs a numeric user)")
if not re.search(r"^EXPOSE\s+8080\s*$", text, re.M):
    problems.append("does not EXPOSE 8080")
ignore = path + ".dockerignore"
if not os.path.isfile(ignore):
    problems.append(f"no {name}.dockerignore beside it (the build context is the repository root)")
elif not re.search(r"^/?target/?\s*$", open(ignore).read(), re.M):
    problems.append(f"{name}.dockerignore does not exclude target/")
for p in problems:
    print(f"validate-deploy: FAIL: {name}: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"validate-deploy: ok   {name}: {len(stages)} stages ({', '.join(stages)}), every base image pinned",
      file=sys.stderr)
PY
    :
  else
    failures=$((failures + 1))
  fi
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    if docker build --check -f "$f" "$ROOT" >/dev/null 2>&1; then
      say "ok   $(basename "$f"): docker build --check"
    else
      fail "$(basename "$f"): docker build --check:"
      docker build --check -f "$f" "$ROOT" 2>&1 | sed 's/^/    /' >&2 || true
    fi
  fi
done
if ! { command -v docker >/dev/null && docker info >/dev/null 2>&1; }; then
  say "skip docker build --check: no running Docker daemon"
fi

if [ "$failures" -gt 0 ]; then
  say "$failures check(s) failed"
  exit 1
fi
say "all checks passed"
