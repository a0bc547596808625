//go:build tools

// Package metallb pins MetalLB's controller, which test/tools/build.sh builds for the end-to-end
// suite's LoadBalancer Services. It is a module of its own so that MetalLB's dependency versions
// neither fight k8s.io/kubernetes' replaces in test/tools nor enter brokerport's go.mod.
package metallb

import _ "go.universe.tf/metallb/controller"
