#!/usr/bin/env bash
# Checks the Kubernetes side offline (scripts/test.sh runs it after the Rust tests):
# - helm lint of helm/imclust;
# - helm template with default values, with GPU workers, and as a nightly CronJob;
# - strict schema validation (kubernetes-validate, Kubernetes 1.33) of everything rendered and
#   of the plain manifests in k8s/;
# - every job TOML inside a rendered or plain ConfigMap passes `imclust validate-config`.
# Tools come from scripts/fetch-k8s-tools.sh (cached in .cache/, checksummed).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
k8s_version=1.33.0
bin="$(bash scripts/fetch-k8s-tools.sh)"
export PATH="$bin:$PATH"
cargo build --quiet --locked -p imclust-cli
imclust="${CARGO_TARGET_DIR:-$root/target}/debug/imclust"
py="$root/.cache/k8s-tools/venv/bin/python" # has PyYAML (a dependency of kubernetes-validate)
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

helm lint --strict helm/imclust
helm template imclust helm/imclust >"$out/default.yaml"
helm template imclust helm/imclust --set workers.gpus=1 >"$out/gpu.yaml"
helm template imclust helm/imclust --set schedule="0 2 * * *" >"$out/nightly.yaml"
# Rendering must fail on values the schema refuses.
if helm template imclust helm/imclust --set workers.replicas=zero >/dev/null 2>&1; then
  echo "check-k8s: the chart accepted workers.replicas=zero; values.schema.json should refuse it" >&2
  exit 1
fi
grep -q "kind: CronJob" "$out/nightly.yaml" || { echo "check-k8s: schedule set but no CronJob rendered" >&2; exit 1; }
grep -q "nvidia.com/gpu" "$out/gpu.yaml" || { echo "check-k8s: workers.gpus=1 but no nvidia.com/gpu limit rendered" >&2; exit 1; }
if grep -q "nvidia.com/gpu" "$out/default.yaml"; then
  echo "check-k8s: the default (CPU) rendering asks for GPUs" >&2
  exit 1
fi

manifests=("$out"/*.yaml)
for f in k8s/*.yaml; do manifests+=("$f"); done
kubernetes-validate --strict --quiet -k "$k8s_version" "${manifests[@]}"

# Every job spec in a ConfigMap is valid for the binary that will run it.
"$py" - "$out/tomls" "${manifests[@]}" <<'PY'
import os, sys, yaml
dest = sys.argv[1]
os.makedirs(dest, exist_ok=True)
n = 0
for path in sys.argv[2:]:
    for doc in yaml.safe_load_all(open(path)):
        if not doc or doc.get("kind") != "ConfigMap":
            continue
        for key, text in (doc.get("data") or {}).items():
            if key.endswith(".toml"):
                n += 1
                name = f"{os.path.basename(path)}-{doc['metadata']['name']}-{key}"
                open(os.path.join(dest, name), "w").write(text)
if n == 0:
    sys.exit("check-k8s: no job TOML found in any ConfigMap")
PY
for t in "$out"/tomls/*.toml; do
  "$imclust" validate-config "$t" >/dev/null 2>"$out/err" || { echo "check-k8s: $(basename "$t"):" >&2; cat "$out/err" >&2; exit 1; }
done
echo "check-k8s: helm lint, 3 renderings and k8s/ valid for Kubernetes $k8s_version (strict); $(ls "$out"/tomls | wc -l) job spec(s) valid"
