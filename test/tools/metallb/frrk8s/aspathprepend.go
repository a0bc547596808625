// Package v1beta1 is not built on its own: test/tools/build.sh adds this file to a copy of
// github.com/metallb/frr-k8s/api/v1beta1 v0.0.26 when it builds MetalLB's controller.
//
// MetalLB v0.16.2 requires frr-k8s v0.0.27, which the Go module proxy does not serve (403
// Forbidden, "This module version is not available"). go.mod replaces it with v0.0.26, whose API
// lacks only this type and the Advertise field that holds it (added by build.sh with sed). Both
// serve the speaker's BGP mode alone: the controller never reads or writes FRR objects.
package v1beta1

// AsPathPrependPrefixes are prefixes advertised with the local AS prepended AsPathPrepend times.
type AsPathPrependPrefixes struct {
	Prefixes      []string `json:"prefixes,omitempty"`
	AsPathPrepend uint8    `json:"asPathPrepend,omitempty"`
}
