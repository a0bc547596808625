#!/usr/bin/env bash
# Builds the end-to-end suite's control plane from Go modules into a cache outside the clone,
# keyed by this module's go.mod/go.sum, the kwok version and the Go version; prints the bin
# directory. A second run finds the cache and returns at once; the cold path takes minutes.
# The add-ons go into the same directory: MetalLB's controller (module metallb/) and a
# cert-manager controller (module certmanager/), each with its module version's CRDs
# (metallb-crds.yaml, cert-manager-crds.yaml); their own modules keep their dependency versions
# apart from k8s.io/kubernetes' replaces here.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
k8s_version=v1.34.4
kwok_version=v0.7.0
cache="${BROKERPORT_E2E_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/brokerport-e2e}"
key="$(cat "$here/go.mod" "$here/go.sum" "$here"/metallb/{go.mod,go.sum,frrk8s/aspathprepend.go} "$here"/certmanager/{go.mod,go.sum,main.go} "$0" |
  sha256sum | cut -c1-16)-$(go env GOVERSION)"
bin="$cache/$key/bin"
tools=(etcd kube-apiserver kube-controller-manager kube-scheduler resolve-env kwok metallb-controller cert-manager-controller)
crds=(metallb-crds.yaml cert-manager-crds.yaml)

missing=0
for t in "${tools[@]}"; do [ -x "$bin/$t" ] || missing=1; done
for f in "${crds[@]}"; do [ -s "$bin/$f" ] || missing=1; done
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

# crds <module dir> <module> <CRD files...>: one YAML stream of the module's CRDs.
crds() { (cd "$1" && dir="$(go list -m -f '{{.Dir}}' "$2")" && shift 2 && for f in "$@"; do echo "---"; cat "$dir/$f"; done); }
step=$(date +%s)
echo ">> installed in $(( step - start ))s; building MetalLB's controller (about 4 minutes cold)" >&2
# MetalLB v0.16.2 requires github.com/metallb/frr-k8s v0.0.27, which the module proxy does not
# serve; metallb/go.mod replaces it with v0.0.26, whose api/v1beta1 lacks one type and one field
# of the speaker's BGP mode (the controller never uses them). They are added to a copy of that
# package, which a go.mod of the build's own (-modfile) puts in place of the module.
(cd "$here/metallb" && go mod download github.com/metallb/frr-k8s) >&2
frr="$(cd "$here/metallb" && go list -m -f '{{.Dir}}' github.com/metallb/frr-k8s)"
mkdir -p "$tmp/frr-k8s/api"
cp "$frr/go.mod" "$tmp/frr-k8s/" && cp -r "$frr/api/v1beta1" "$tmp/frr-k8s/api/" && chmod -R u+w "$tmp/frr-k8s"
cp "$here/metallb/frrk8s/aspathprepend.go" "$tmp/frr-k8s/api/v1beta1/zz_aspathprepend.go"
types="$tmp/frr-k8s/api/v1beta1/frrconfiguration_types.go"
field='PrefixesWithCommunity \[\]CommunityPrefixes `json:"withCommunity,omitempty"`'
sed -i "s|^\t$field\$|&\n\tPrefixesWithAsPathPrepend []AsPathPrependPrefixes \`json:\"withAsPathPrepend,omitempty\"\`|" "$types"
grep -q PrefixesWithAsPathPrepend "$types" || { echo "build.sh: Advertise.PrefixesWithCommunity not found in $types" >&2; exit 1; }
cp "$here/metallb/go.mod" "$tmp/metallb.mod" && cp "$here/metallb/go.sum" "$tmp/metallb.sum"
(cd "$here/metallb" && go mod edit -modfile="$tmp/metallb.mod" -replace "github.com/metallb/frr-k8s=$tmp/frr-k8s" &&
  go build -modfile="$tmp/metallb.mod" -trimpath -ldflags "-s -w" -o "$tmp/metallb-controller" go.universe.tf/metallb/controller) >&2
rm -rf "$tmp/frr-k8s" "$tmp/metallb.mod" "$tmp/metallb.sum"
crds "$here/metallb" go.universe.tf/metallb config/crd/bases/metallb.io_{bfdprofiles,bgpadvertisements,bgppeers,communities,configurationstates,ipaddresspools,l2advertisements,servicebgpstatuses,servicel2statuses}.yaml >"$tmp/metallb-crds.yaml"
echo ">> built in $(( $(date +%s) - step ))s; building cert-manager's controllers (about 3 minutes cold)" >&2
step=$(date +%s)
(cd "$here/certmanager" && go build -trimpath -ldflags "-s -w" -o "$tmp/cert-manager-controller" .) >&2
crds "$here/certmanager" github.com/cert-manager/cert-manager deploy/crds/{cert-manager.io_{certificaterequests,certificates,clusterissuers,issuers},acme.cert-manager.io_{challenges,orders}}.yaml >"$tmp/cert-manager-crds.yaml"
echo ">> built in $(( $(date +%s) - step ))s" >&2
rm -rf "$bin"
mv "$tmp" "$bin"
echo ">> control plane ready in $bin ($(( $(date +%s) - start ))s)" >&2
echo "$bin"
