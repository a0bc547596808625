// Package charttest holds brokerport's Helm chart (manifests/chart) to the kustomize manifests
// it copies: rendered as `helm template` renders it, with the Helm library, it must produce the
// same objects as `kustomize build manifests/default` (tls.mode=cert-manager) and
// manifests/standalone (tls.mode=standalone). A module of its own so that Helm stays out of
// brokerport's go.mod: cd manifests/chart/charttest && go test ./...
package charttest
