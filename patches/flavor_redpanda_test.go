package patches

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

const redpandaTestdata = "../test/testdata/redpanda/"

// redpandaBroker is broker ordinal of the chart's rendered StatefulSet (default values), opted
// in with the annotations given, as the pod webhook sees it.
func redpandaBroker(t *testing.T, ordinal int, annotations map[string]string) *corev1.Pod {
	t.Helper()
	data, err := os.ReadFile(redpandaTestdata + "01-default-values.statefulset.yaml")
	require.NoError(t, err)
	sts := &appsv1.StatefulSet{}
	require.NoError(t, yaml.Unmarshal(data, sts))
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("redpanda-%d", ordinal), Namespace: "default", Labels: map[string]string{LabelExpose: ExposeValue, LabelCluster: "redpanda"}, Annotations: annotations},
		Spec:       sts.Spec.Template.Spec,
	}
	require.Empty(t, MutatePod(pod, nil, DefaultOptions()))
	return pod
}

// runInit runs an init container's bash script as the kubelet would start it, with env, a
// stand-in rpk that records what it is asked to set and a stand-in cp (the chart's script copies
// its base config from a path that exists only in the pod). It returns the settings in order.
func runInit(t *testing.T, dir string, script []string, env map[string]string) []string {
	t.Helper()
	bin := filepath.Join(dir, "bin")
	log := filepath.Join(dir, "rpk.log")
	require.NoError(t, os.MkdirAll(bin, 0o755))
	// rpk redpanda config --config <file> set <key> <value>
	require.NoError(t, os.WriteFile(filepath.Join(bin, "rpk"), []byte("#!/bin/bash\n[ \"$1 $2 $3 $5\" = \"redpanda config --config set\" ] || { echo \"unexpected rpk $*\" >&2; exit 2; }\nprintf '%s %s\\n' \"$6\" \"$7\" >> \""+log+"\"\n"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(bin, "cp"), []byte("#!/bin/sh\nexit 0\n"), 0o755))
	cmd := exec.Command(script[0], script[1:]...)
	cmd.Env = []string{"PATH=" + bin + ":" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	data, err := os.ReadFile(log)
	require.NoError(t, err)
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

// settled is the value each key has once every setting is applied in order.
func settled(settings []string) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, s := range settings {
		key, value, _ := strings.Cut(s, " ")
		var v map[string]any
		if json.Unmarshal([]byte(value), &v) == nil {
			out[key] = v
		}
	}
	return out
}

// TestRedpandaConfiguratorAdvertisesBrokerport runs the chart's configurator.sh as rendered,
// then brokerport's advertiser as the pod webhook adds it, and checks what redpanda.yaml ends up
// advertising on every external listener brokerport exposes.
func TestRedpandaConfiguratorAdvertisesBrokerport(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	for name, host := range map[string]string{"IPv4": "203.0.113.2", "IPv6": "2001:db8::10"} {
		t.Run(name, func(t *testing.T) {
			pod := redpandaBroker(t, 1, map[string]string{AnnotationPortBase: "30000", AnnotationFlavor: "redpanda", AnnotationListeners: "kafka=9094,http=8083,schema=8084,admin=9645"})
			names := make([]string, len(pod.Spec.InitContainers))
			for i, c := range pod.Spec.InitContainers {
				names[i] = c.Name
			}
			require.Equal(t, []string{"tuning", "redpanda-configurator", RedpandaAdvertiser, "bootstrap-yaml-envsubst"}, names, "the advertiser runs right after the configurator")
			configurator, advertiser := pod.Spec.InitContainers[1], pod.Spec.InitContainers[2]
			assert.Equal(t, configurator.Image, advertiser.Image)
			assert.Equal(t, []corev1.VolumeMount{{Name: "config", MountPath: "/etc/redpanda"}}, advertiser.VolumeMounts)

			// The environment the kubelet gives the advertiser: fieldRefs resolved for a broker
			// bound to a node whose address is host.
			env := map[string]string{}
			for _, e := range advertiser.Env {
				switch {
				case e.ValueFrom == nil:
					env[e.Name] = e.Value
				case e.ValueFrom.FieldRef.FieldPath == annotationRef(AnnotationHost):
					env[e.Name] = host
				case e.ValueFrom.FieldRef.FieldPath == annotationRef(AnnotationHostURI):
					env[e.Name] = HostURI(host)
				}
			}
			dir := t.TempDir()
			chart := runInit(t, dir, []string{"bash", redpandaTestdata + "01-default-values.configurator.sh", pod.Name, "node-1"}, nil)
			before := settled(chart)
			require.Equal(t, map[string]any{"address": "redpanda-1", "name": "default", "port": 31092.0}, before["redpanda.advertised_kafka_api[1]"],
				"the chart alone advertises the pod name and its own NodePort: this test must see that to mean anything")

			after := settled(runInit(t, dir, advertiser.Command, env))
			// Broker 1 of 4 listeners from 30000: kafka 30004, http 30005.
			assert.Equal(t, map[string]map[string]any{
				"redpanda.advertised_kafka_api[0]":        {"address": "redpanda-1.redpanda.default.svc.cluster.local.", "name": "internal", "port": 9093.0},
				"redpanda.advertised_kafka_api[1]":        {"address": host, "name": "default", "port": 30004.0},
				"pandaproxy.advertised_pandaproxy_api[0]": {"address": "redpanda-1.redpanda.default.svc.cluster.local.", "name": "internal", "port": 8082.0},
				"pandaproxy.advertised_pandaproxy_api[1]": {"address": host, "name": "default", "port": 30005.0},
			}, after)
			assert.Equal(t, "30004", env["BROKERPORT_KAFKA_PORT"])
			assert.Equal(t, "30005", env["BROKERPORT_HTTP_PORT"])
		})
	}
}

func TestRedpandaEntries(t *testing.T) {
	c := &corev1.Container{Name: "redpanda", Ports: []corev1.ContainerPort{
		{Name: "kafka", ContainerPort: 9093}, {Name: "kafka-private", ContainerPort: 9095}, {Name: "kafka-default", ContainerPort: 9094},
		{Name: "http-default", ContainerPort: 8083}, {Name: "admin-default", ContainerPort: 9645},
	}}
	tests := map[string]struct {
		listeners string
		want      []string
		wantErr   string
	}{
		"external listeners in name order": {listeners: "kafka=9094,private=9095,http=8083,admin=9645", want: []string{"redpanda.advertised_kafka_api[1] default", "redpanda.advertised_kafka_api[2] private", "pandaproxy.advertised_pandaproxy_api[1] default"}},
		"first listener not kafka":         {listeners: "http=8083", wantErr: `the first listener must be an external Kafka API listener`},
		"first listener the internal one":  {listeners: "kafka=9093", wantErr: `containerPort 9093 is "kafka"`},
		"first listener not declared":      {listeners: "kafka=9096", wantErr: "declares no containerPort 9096"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			cfg, errs := ParseConfig(map[string]string{AnnotationListeners: tt.listeners, AnnotationFlavor: "redpanda"}, nil, DefaultOptions())
			require.Empty(t, errs)
			entries, err := RedpandaEntries(c, cfg)
			if tt.wantErr != "" {
				require.NotNil(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.Nil(t, err)
			var got []string
			for _, e := range entries {
				got = append(got, e.Key+" "+e.Name)
			}
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestRedpandaFlavorNeedsTheConfigurator(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "redpanda-0", Labels: map[string]string{LabelExpose: ExposeValue, LabelCluster: "redpanda"}, Annotations: map[string]string{AnnotationPortBase: "30000", AnnotationFlavor: "redpanda"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "redpanda", Ports: []corev1.ContainerPort{{Name: "kafka-default", ContainerPort: 9094}}}}},
	}
	errs := MutatePod(pod, nil, DefaultOptions())
	require.Len(t, errs, 1)
	assert.Contains(t, errs[0].Error(), "no init container mounts /etc/redpanda")

	cfg, perrs := ParseConfig(map[string]string{AnnotationFlavor: "redpanda", AnnotationAdvertiseEnv: "X"}, nil, DefaultOptions())
	_ = cfg
	require.Len(t, perrs, 1)
	assert.Contains(t, perrs[0].Error(), "not an environment variable")
}

func TestRedpandaFlavorIsIdempotent(t *testing.T) {
	pod := redpandaBroker(t, 0, map[string]string{AnnotationPortBase: "30000", AnnotationFlavor: "redpanda"})
	again := pod.DeepCopy()
	require.Empty(t, MutatePod(again, nil, DefaultOptions()))
	assert.Equal(t, pod, again)
	assert.Equal(t, 1, len(slices.DeleteFunc(slices.Clone(again.Spec.InitContainers), func(c corev1.Container) bool { return c.Name != RedpandaAdvertiser })))
}
