package patches

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// The fuzzers feed arbitrary annotation values, names, ports and env values into the mutations.
// Each mutation must never panic; when it accepts its input, its output must be valid where
// brokerport wrote it, and applying it again must change nothing.

func FuzzParseConfig(f *testing.F) {
	f.Add("kafka=9094,http=8083", "30000", "8", "ExternalIP,InternalIP", "{{.Node}}.example.com", "KAFKA_ADVERTISED_LISTENERS", "kafka")
	f.Add("", "0", "-1", "", "{{", "1X", "confluent")
	f.Add("a=1,b=65535", "65535", "1000", "Hostname", "{{.Zone}}", "X", "bitnami")
	f.Add("kafka=9094,http=8083", "30000", "3", "ExternalIP", "", "", "redpanda")
	f.Fuzz(func(t *testing.T, listeners, portBase, maxBrokers, addressTypes, hostTemplate, advertiseEnv, flavor string) {
		cfg, errs := ParseConfig(map[string]string{
			AnnotationListeners: listeners, AnnotationPortBase: portBase, AnnotationMaxBrokers: maxBrokers,
			AnnotationAddressTypes: addressTypes, AnnotationHostTemplate: hostTemplate,
			AnnotationAdvertiseEnv: advertiseEnv, AnnotationFlavor: flavor,
		}, field.NewPath("metadata", "annotations"), DefaultOptions())
		if len(errs) > 0 {
			for _, e := range errs {
				if e.Field == "" || e.Detail == "" {
					t.Fatalf("an error names no field or says nothing: %v", e)
				}
			}
			return
		}
		if len(cfg.Listeners) == 0 || cfg.MaxBrokers < 1 {
			t.Fatalf("accepted a configuration with no listeners or brokers: %+v", cfg)
		}
		if cfg.PortBase != 0 && cfg.Block().Last > 65535 {
			t.Fatalf("accepted a block past 65535: %v", cfg.Block())
		}
	})
}

// FuzzHostURI: whatever a node's address is, host-uri:port splits back into exactly that host,
// and an IP literal stays one.
func FuzzHostURI(f *testing.F) {
	for _, h := range []string{"203.0.113.1", "2001:db8::1", "::1", "::ffff:1.2.3.4", "fe80::1%eth0", "node-1.example.com", ""} {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, host string) {
		if strings.ContainsAny(host, "[]") {
			return // not a node address: neither an IP literal nor a DNS name
		}
		uri := HostURI(host)
		got, port, err := net.SplitHostPort(uri + ":30000")
		if err != nil || got != host || port != "30000" {
			t.Fatalf("HostURI(%q) = %q, which splits into %q, %q, %v", host, uri, got, port, err)
		}
	})
}

func fuzzPod(name, listeners, portBase, envValue, nodeName string, containerPort, hostPort int32) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name,
			Labels:      map[string]string{LabelExpose: ExposeValue, LabelCluster: "kafka"},
			Annotations: map[string]string{AnnotationListeners: listeners, AnnotationPortBase: portBase, AnnotationFlavor: "kafka"}},
		Spec: corev1.PodSpec{
			NodeName:       nodeName,
			InitContainers: []corev1.Container{{Name: "init", Env: []corev1.EnvVar{{Name: "BROKERPORT_OLD", Value: "x"}}}},
			Containers: []corev1.Container{{
				Name:  "kafka",
				Ports: []corev1.ContainerPort{{Name: "internal", ContainerPort: containerPort, HostPort: hostPort}},
				Env: []corev1.EnvVar{
					{Name: "KAFKA_LISTENERS", Value: envValue},
					{Name: "KAFKA_ADVERTISED_LISTENERS", Value: envValue},
					{Name: "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", Value: envValue},
				},
			}},
		},
	}
}

func FuzzMutatePod(f *testing.F) {
	f.Add("kafka-2", "kafka=9094", "30000", "INTERNAL://0.0.0.0:9092", "", int32(9092), int32(0))
	f.Add("kafka-0", "kafka=9094,http=8083", "30010", "", "node-1", int32(9094), int32(30010))
	f.Add("kafka-x", "kafka=9094", "30000", "EXTERNAL://a:1", "node-1", int32(9094), int32(1))
	f.Fuzz(func(t *testing.T, name, listeners, portBase, envValue, nodeName string, containerPort, hostPort int32) {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeExternalIP, Address: "203.0.113.1"}}}}
		opts := DefaultOptions()
		opts.GateImage = "brokerport:test"
		pod := fuzzPod(name, listeners, portBase, envValue, nodeName, containerPort, hostPort)
		if errs := MutatePod(pod, node, opts); len(errs) > 0 {
			return
		}
		// Every listener's port entry carries the broker's external port, valid and unique.
		broker, errs := BrokerOf(pod, opts)
		if len(errs) > 0 {
			t.Fatalf("its own output does not parse: %v", errs)
		}
		for l, listener := range broker.Config.Listeners {
			i := tcpPortIndex(pod.Spec.Containers[0].Ports, listener.ContainerPort)
			if i < 0 {
				t.Fatalf("listener %s has no port entry", listener.Name)
			}
			p := pod.Spec.Containers[0].Ports[i]
			if want := broker.Config.Port(broker.Ordinal, l); p.HostPort != want || want < 1 || want > 65535 {
				t.Fatalf("listener %s: hostPort %d, want %d", listener.Name, p.HostPort, want)
			}
			if len(validation.IsValidPortName(p.Name)) > 0 && p.Name != "internal" {
				t.Fatalf("invalid port name %q", p.Name)
			}
		}
		again := pod.DeepCopy()
		if errs := MutatePod(again, node, opts); len(errs) > 0 {
			t.Fatalf("refuses its own output: %v", errs)
		}
		if !apiequality.Semantic.DeepEqual(pod, again) {
			t.Fatalf("not idempotent")
		}
	})
}

func FuzzMutateStatefulSet(f *testing.F) {
	f.Add("kafka", "kafka=9094", "", "8", int32(3), true)
	f.Add("kafka", "kafka=9094", "30080", "1", int32(9), false)
	f.Fuzz(func(t *testing.T, name, listeners, portBase, maxBrokers string, replicas int32, exposed bool) {
		sts := &appsv1.StatefulSet{
			ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{AnnotationListeners: listeners, AnnotationMaxBrokers: maxBrokers}},
			Spec: appsv1.StatefulSetSpec{Replicas: &replicas, Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{
				Labels: map[string]string{"app": "x", LabelCluster: "stale"}, Annotations: map[string]string{AnnotationHost: "stale"},
			}}},
		}
		if portBase != "" {
			sts.Annotations[AnnotationPortBase] = portBase
		}
		if exposed {
			sts.Labels = map[string]string{LabelExpose: ExposeValue}
		}
		inUse := NewPortSet(Reservation{PortRange: PortRange{First: 30000, Last: 30007}, Owner: "other"})
		if errs := MutateStatefulSet(sts, inUse, DefaultOptions()); len(errs) > 0 {
			return
		}
		if exposed {
			cfg, errs := ParseConfig(sts.Annotations, nil, DefaultOptions())
			if len(errs) > 0 || cfg.PortBase == 0 {
				t.Fatalf("accepted without a valid block: %v %+v", errs, cfg)
			}
			if _, conflict := inUse.Conflict(cfg.Block()); conflict {
				t.Fatalf("block %v overlaps a reservation", cfg.Block())
			}
		} else if IsExposed(sts.Spec.Template.Labels) {
			t.Fatalf("not opted in, yet the template is")
		}
		again := sts.DeepCopy()
		if errs := MutateStatefulSet(again, inUse, DefaultOptions()); len(errs) > 0 {
			t.Fatalf("refuses its own output: %v", errs)
		}
		if !apiequality.Semantic.DeepEqual(sts, again) {
			t.Fatalf("not idempotent")
		}
	})
}

func FuzzMutateService(f *testing.F) {
	f.Add("kafka-1", "kafka", int32(0), "kafka=9094,http=8083")
	f.Add("kafka-9", "http", int32(30003), "kafka=9094,http=8083")
	f.Fuzz(func(t *testing.T, podName, portName string, nodePort int32, listeners string) {
		sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "kafka", Annotations: map[string]string{AnnotationListeners: listeners, AnnotationPortBase: "30000"}}}
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{LabelExpose: ExposeValue, LabelCluster: "kafka"}},
			Spec: corev1.ServiceSpec{Selector: map[string]string{labelPodName: podName},
				Ports: []corev1.ServicePort{{Name: portName, Port: 1, NodePort: nodePort, TargetPort: intstr.FromInt32(9094)}}},
		}
		if errs := MutateService(svc, sts, DefaultOptions()); len(errs) > 0 {
			return
		}
		if svc.Spec.Type != corev1.ServiceTypeNodePort || svc.Spec.Ports[0].NodePort < 30000 {
			t.Fatalf("accepted but not exposed: %+v", svc.Spec)
		}
		again := svc.DeepCopy()
		if errs := MutateService(again, sts, DefaultOptions()); len(errs) > 0 || !apiequality.Semantic.DeepEqual(svc, again) {
			t.Fatalf("not idempotent: %v", errs)
		}
	})
}

// FuzzHostTemplate: parsing never panics and costs the same whatever the text (a bounded
// number of allocations, the text's length bounded); whatever parses gives, for any node, a valid
// host or an error, never something else, and allocates only that host.
func FuzzHostTemplate(f *testing.F) {
	f.Add("{{.Node}}.nodes.example.com", "node-1", "zone-a")
	f.Add("{{ .Node }}.{{.Zone}}.example.com", "ip-10-0-0-1.ec2.internal", "us-east-1a")
	f.Add("{{range 3000000}}abcdefghij{{end}}", "n", "z")
	f.Add("{{.Node", "n", "")
	f.Add("{{.Zone}}", "n", "2001:db8::1")
	f.Add("a}}{{{{.Node}}}}", "n", "z")
	f.Fuzz(func(t *testing.T, text, nodeName, zone string) {
		tmpl, err := ParseHostTemplate(text)
		if err != nil {
			if len(err.Error()) > 300 {
				t.Fatalf("an error of %d bytes", len(err.Error()))
			}
			return
		}
		if len(text) > MaxHostTemplateLen {
			t.Fatalf("accepted %d bytes", len(text))
		}
		if len(tmpl.parts) > len(text)+1 {
			t.Fatalf("%d parts from %d bytes", len(tmpl.parts), len(text))
		}
		host, err := tmpl.Execute(HostData{Node: nodeName, Zone: zone})
		if err != nil {
			if len(err.Error()) > 300 {
				t.Fatalf("an error of %d bytes", len(err.Error()))
			}
			return
		}
		if len(host) > MaxHostLen {
			t.Fatalf("a host of %d characters", len(host))
		}
		if _, ipErr := netip.ParseAddr(host); ipErr != nil && len(validation.IsDNS1123Subdomain(strings.ToLower(host))) > 0 {
			t.Fatalf("%q is neither an IP address nor a DNS name", host)
		}
		for label := range strings.SplitSeq(host, ".") {
			if len(label) > 63 && !strings.Contains(host, ":") {
				t.Fatalf("%q has a label longer than 63", host)
			}
		}
	})
}
