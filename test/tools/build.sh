#!/usr/bin/env bash
# Builds the end-to-end suite's control plane from Go modules into a cache outside the clone,
# keyed by this module's go.mod/go.sum, the kwok version and the Go version; prints the bin
# directory. A second run finds the cache and returns at once; the cold path takes minutes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
k8s_version=v1.34.4
kwok_version=v0.7.0
cache="${BROKERPORT_E2E_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/brokerport-e2e}"
key="$(cat "$here/go.mod" "$here/go.sum" "$0" | sha256sum | cut -c1-16)-$(go env GOVERSION)"
bin="$cache/$key/bin"
tools=(etcd kube-apiserver kube-controller-manager kube-scheduler resolve-env kwok)

missing=0
for t in "${tools[@]}"; do [ -x "$bin/$t" ] || missing=1; done
if [ "$missing" = 0 ]; then
  echo "$bin"
  exit 0
fi

tmp="$cache/$key/tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34"
echo ">> building kube-apiserver, kube-controller-manager, kube-scheduler $k8s_version, etcd and resolve-env (about 5 minutes cold)" >&2
(cd "$here" && go build -ldflags "$ldflags" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler ./etcd ./resolve-env) >&2
echo ">> built in $(( $(date +%s) - start ))s; installing kwok $kwok_version (about 1.5 minutes cold)" >&2
GOBIN="$tmp" go install "sigs.k8s.io/kwok/cmd/kwok@$kwok_version" >&2
rm -rf "$bin"
mv "$tmp" "$bin"
echo ">> control plane ready in $bin ($(( $(date +%s) - start ))s)" >&2
echo "$bin"
