package probe

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokerport/brokerport/patches"
)

// The probe dials a published broker only where brokerport chose both its host and its port.
func TestTargets(t *testing.T) {
	nodeIP := func(i int) string { return fmt.Sprintf("10.1.0.%d", i+1) }
	tests := map[string]struct {
		annotations   map[string]string
		change        func(c *computed)
		hostTemplates bool
		want          string // rp-0's skip
	}{
		"a node's address": {},
		"a host template's host": {
			annotations: map[string]string{patches.AnnotationHostTemplate: "{{.Node}}.brokers.example.com"},
			change:      func(c *computed) { c.states[0].Host = "node-0.brokers.example.com" },
			want:        skipTemplate,
		},
		"a host template's host, allowed": {
			annotations:   map[string]string{patches.AnnotationHostTemplate: "{{.Node}}.brokers.example.com"},
			change:        func(c *computed) { c.states[0].Host = "node-0.brokers.example.com" },
			hostTemplates: true,
		},
		"a literal template": {
			annotations: map[string]string{patches.AnnotationHostTemplate: "169.254.169.254"},
			change:      func(c *computed) { c.states[0].Host = "169.254.169.254" },
			want:        skipTemplate,
		},
		"a literal template that is the broker's node's own address": {
			annotations: map[string]string{patches.AnnotationHostTemplate: "10.1.0.1"},
		},
		"a template's fallback: the node's address": {
			annotations: map[string]string{patches.AnnotationHostTemplate: "{{.Node}}.{{.Zone}}.example.com"},
		},
		"a host no node has, with no template": {
			change: func(c *computed) { c.states[0].Host = "10.9.9.9" },
			want:   skipNotNode,
		},
		"a node brokerport does not know": {
			change: func(c *computed) { delete(c.nodes, "node-0") },
			want:   skipNotNode,
		},
		"a hostPort its StatefulSet does not give it (a pod brokerport did not admit: the kubelet's port)": {
			change: func(c *computed) { c.states[0].Ports[0] = 10250 },
			want:   skipOtherPorts,
		},
		"a pod whose name is not an ordinal of the StatefulSet": {
			change: func(c *computed) { c.states[0].Pod = "rp-x" },
			want:   skipOtherPorts,
		},
		"the loadbalancer strategy: brokerport's Service's ingress": {
			annotations: map[string]string{patches.AnnotationStrategy: string(patches.StrategyLoadBalancer)},
			change: func(c *computed) {
				c.states[0].Host = "b0.elb.example.com"
				for i := range c.states {
					for l := range c.states[i].Ports {
						c.states[i].Ports[l] = c.cfg.Port(i, l) // the listeners' own ports
					}
				}
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := newComputed(t, "rp", 2, 30000, "kafka=9094,admin=9644", nodeIP)
			for k, v := range tc.annotations {
				c.sts.Annotations[k] = v
			}
			if tc.annotations[patches.AnnotationStrategy] != "" {
				delete(c.sts.Annotations, patches.AnnotationPortBase)
			}
			cfg, errs := patches.ParseConfig(c.sts.Annotations, nil, patches.DefaultOptions())
			require.Empty(t, errs)
			c.cfg = cfg
			if tc.change != nil {
				tc.change(&c)
			}
			set := newTargetSet(c.sts, c.cfg, c.states, c.nodes, tc.hostTemplates)
			require.Len(t, set.brokers, 2)
			assert.Equal(t, tc.want, set.brokers[0].skip)
			assert.Empty(t, set.brokers[1].skip, "the other broker")
			// Every published address is a peer, dialed or not: one list per listener.
			for l, listener := range set.listeners {
				assert.Equal(t, []string{c.states[0].Address(l), c.states[1].Address(l)}, listener.peers)
				assert.Equal(t, []string{c.states[0].Address(l), c.states[1].Address(l)}, []string{set.brokers[0].addrs[l], set.brokers[1].addrs[l]})
			}
		})
	}
}

// A broker with nothing published has no line; one published on some listeners only is dialed
// on those.
func TestTargetsPublishedOnly(t *testing.T) {
	c := newComputed(t, "rp", 3, 30000, "kafka=9094,admin=9644", func(i int) string { return fmt.Sprintf("10.1.0.%d", i+1) })
	c.states[1].Ports = []int32{0, 0} // e.g. waiting for its certificate
	c.states[2].Ports[1] = 0          // created before the admin listener was configured
	set := newTargetSet(c.sts, c.cfg, c.states, c.nodes, false)
	require.Len(t, set.brokers, 2)
	assert.Equal(t, "rp-0", set.brokers[0].pod)
	assert.Equal(t, []string{c.states[2].Address(0), ""}, set.brokers[1].addrs)
	assert.Equal(t, []string{c.states[0].Address(1)}, set.listeners[1].peers)
	assert.Equal(t, "kafka", set.listeners[0].name)
	assert.Equal(t, KafkaMetadata, set.listeners[0].mode)
	assert.Equal(t, TCP, set.listeners[1].mode)
}
