package webhook

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"testing"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/brokerport/brokerport/patches"
)

// FuzzServeHTTP sends arbitrary bodies to every handler through controller-runtime's HTTP
// plumbing, as the API server would: the server must never panic, and must always answer with
// an AdmissionReview or a client error.
func FuzzServeHTTP(f *testing.F) {
	f.Add(0, []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","operation":"CREATE","namespace":"kafka","name":"kafka-0","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"kafka-0","labels":{"brokerport.io/expose":"true","brokerport.io/cluster":"kafka"},"annotations":{"brokerport.io/port-base":"30000"}},"spec":{"containers":[{"name":"k"}]}}}}`))
	f.Add(1, []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","operation":"CREATE","namespace":"kafka","name":"kafka","object":{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"kafka","labels":{"brokerport.io/expose":"true"}}}}}`))
	f.Add(2, []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","operation":"CREATE","namespace":"kafka","name":"kafka-0-external","object":{"apiVersion":"v1","kind":"Service","metadata":{"labels":{"brokerport.io/expose":"true","brokerport.io/cluster":"kafka"}},"spec":{"selector":{"statefulset.kubernetes.io/pod-name":"kafka-0"},"ports":[{"name":"kafka","port":1}]}}}}`))
	f.Add(3, []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","operation":"CREATE","namespace":"kafka","name":"kafka-0","object":{"apiVersion":"v1","kind":"Binding","metadata":{"name":"kafka-0"},"target":{"kind":"Node","name":"n"}}}}`))
	f.Add(0, []byte(`{"request":{"object":[]}}`))
	f.Add(3, []byte(`null`))

	scheme := Scheme()
	reader := fake.NewClientBuilder().WithScheme(scheme).Build()
	opts := patches.DefaultOptions()
	snapshot := ReaderSnapshot{Reader: reader, Options: opts}
	clusters := NewClusters()
	handlers := []http.Handler{}
	for _, h := range []admission.Handler{
		NewPodHandler(snapshot, opts),
		NewStatefulSetHandler(snapshot, opts),
		NewServiceHandler(snapshot, opts),
		NewBindingHandler(clusters, reader, reader, snapshot, events.NewFakeRecorder(100), opts),
	} {
		hh, err := admission.StandaloneWebhook(&admission.Webhook{Handler: h}, admission.StandaloneOptions{})
		if err != nil {
			f.Fatal(err)
		}
		handlers = append(handlers, hh)
	}
	f.Fuzz(func(t *testing.T, which int, body []byte) {
		if which < 0 {
			which = -which
		}
		h := handlers[which%len(handlers)]
		req := httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
		}
		if rec.Code == http.StatusOK {
			var review admissionv1.AdmissionReview
			if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil || review.Response == nil {
				t.Fatalf("200 without an AdmissionReview: %q", rec.Body.String())
			}
		}
	})
}

// FuzzDirectPatch checks on random broker pods that the direct patch, applied to the pod,
// gives the same object as the diffed patch and as the mutated pod. The seeds are the golden
// pod inputs; choices perturb each the way users and brokerport's own reinvocations do (their
// own and brokerport's variables, init containers and volumes in any place, affinities, keys
// that need escaping, bound or not, with or without the gate, opted out).
func FuzzDirectPatch(f *testing.F) {
	inputs, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, input := range inputs {
		data, err := os.ReadFile(input)
		if err != nil {
			f.Fatal(err)
		}
		var c goldenCase
		if err := yaml.Unmarshal(data, &c); err != nil || c.Resource != "pods" {
			continue
		}
		f.Add([]byte(c.Object), []byte{})
		f.Add([]byte(c.Object), []byte{1, 0, 17, 2, 9, 33, 4, 6, 8, 3, 5, 7, 42, 11})
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", Labels: map[string]string{corev1.LabelTopologyZone: "z1"}},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeExternalIP, Address: "203.0.113.2"}}}}
	f.Fuzz(func(t *testing.T, object, choices []byte) {
		pod := &corev1.Pod{}
		if json.Unmarshal(object, pod) != nil {
			return
		}
		next := func() int {
			if len(choices) == 0 {
				return 0
			}
			c := int(choices[0])
			choices = choices[1:]
			return c
		}
		opts := patches.DefaultOptions()
		flags := next()
		if flags&1 != 0 {
			opts.GateImage = "ghcr.io/brokerport/brokerport:v0.1.0"
		}
		for len(choices) > 0 {
			perturb(pod, next)
		}
		raw, err := json.Marshal(pod)
		if err != nil {
			return
		}
		mutated := pod.DeepCopy()
		if flags&2 != 0 {
			patches.StripPod(mutated)
		} else if errs := patches.MutatePod(mutated, node, opts); len(errs) > 0 {
			return
		}
		ops, ok := directPodPatch(pod, mutated)
		if !ok {
			return // the response is the diff
		}
		want := mustGeneric(t, mustMarshal(t, mutated))
		direct := applyFuzzPatch(t, raw, ops)
		if direct == nil {
			t.Fatalf("the direct patch does not apply: %s", mustMarshal(t, ops))
		}
		if got := mustGeneric(t, direct); !reflect.DeepEqual(want, got) {
			t.Fatalf("direct patch applied:\n%s\nwant the mutated pod:\n%s", direct, mustMarshal(t, mutated))
		}
		diffed := podDiffResponse(raw, pod, mutated, "")
		if !diffed.Allowed {
			t.Fatalf("diff refused: %v", diffed.Result)
		}
		if out := applyFuzzPatch(t, raw, diffed.Patches); out != nil && !reflect.DeepEqual(mustGeneric(t, out), mustGeneric(t, direct)) {
			t.Fatalf("diffed patch applied:\n%s\ndirect patch applied:\n%s", out, direct)
		}
	})
}

// perturb makes one change to pod, chosen by next.
func perturb(pod *corev1.Pod, next func() int) {
	names := []string{"A", "BROKERPORT_HOST", "BROKERPORT_ORDINAL", "KAFKA_ADVERTISED_LISTENERS", "B"}
	keys := []string{"a/b~c", "~1", "brokerport.io/host", "x", "brokerport.io/zone"}
	pickContainer := func() *corev1.Container {
		all := len(pod.Spec.Containers) + len(pod.Spec.InitContainers)
		if all == 0 {
			return nil
		}
		i := next() % all
		if i < len(pod.Spec.Containers) {
			return &pod.Spec.Containers[i]
		}
		return &pod.Spec.InitContainers[i-len(pod.Spec.Containers)]
	}
	switch next() % 10 {
	case 0: // a variable, anywhere
		if c := pickContainer(); c != nil {
			v := corev1.EnvVar{Name: names[next()%len(names)], Value: strconv.Itoa(next())}
			if next()%3 == 0 {
				v = corev1.EnvVar{Name: v.Name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: []string{"", "v1"}[next()%2], FieldPath: "metadata.name"}}}
			} else if next()%5 == 0 {
				v.ValueFrom = nil
				v = corev1.EnvVar{Name: v.Name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "k"}}}
			}
			c.Env = slices.Insert(c.Env, next()%(len(c.Env)+1), v)
		}
	case 1: // an init container, anywhere: the pod's own, or a gate from an earlier pass
		name := []string{"init-a", patches.GateContainer, "init-b"}[next()%3]
		if !slices.ContainsFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == name }) {
			c := corev1.Container{Name: name, Image: "busybox"}
			if next()%2 == 0 {
				c.Resources = patches.GateResources("10m", "32Mi")
			}
			pod.Spec.InitContainers = slices.Insert(pod.Spec.InitContainers, next()%(len(pod.Spec.InitContainers)+1), c)
		}
	case 2: // affinity
		switch next() % 4 {
		case 0:
			pod.Spec.Affinity = nil
		case 1:
			pod.Spec.Affinity = &corev1.Affinity{}
		case 2:
			pod.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{}}
		case 3:
			term := corev1.PodAffinityTerm{TopologyKey: "zone", LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}}}
			pod.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{term}}}
		}
	case 3: // labels and annotations, with keys that need escaping
		k, v := keys[next()%len(keys)], strconv.Itoa(next())
		if next()%2 == 0 {
			pod.Labels = setLabel(pod.Labels, k, v)
		} else {
			pod.Annotations = setLabel(pod.Annotations, k, v)
		}
	case 4: // a volume, the gate's (from an earlier pass, maybe stale) or another
		name := []string{"brokerport-address", "data"}[next()%2]
		if !slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == name }) {
			v := corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
			pod.Spec.Volumes = slices.Insert(pod.Spec.Volumes, next()%(len(pod.Spec.Volumes)+1), v)
		}
	case 5: // ports
		if c := pickContainer(); c != nil {
			c.Ports = append(c.Ports, corev1.ContainerPort{ContainerPort: int32(9000 + next()%100), HostPort: int32(next() % 2 * 31000)})
		}
	case 6: // bound or not
		pod.Spec.NodeName = []string{"", "node-1"}[next()%2]
	case 7: // no variables at all
		if c := pickContainer(); c != nil {
			c.Env = nil
		}
	case 8: // no annotations or labels at all
		if next()%2 == 0 {
			pod.Annotations = nil
		} else {
			pod.Labels = nil
		}
	case 9: // no init containers
		pod.Spec.InitContainers = nil
	}
}

func setLabel(m map[string]string, k, v string) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	m[k] = v
	return m
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustGeneric(t *testing.T, doc []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// applyFuzzPatch applies ops to doc, or returns nil when they do not apply.
func applyFuzzPatch(t *testing.T, doc []byte, ops []jsonpatch.Operation) []byte {
	t.Helper()
	patch, err := jsonpatchapply.DecodePatch(mustMarshal(t, ops))
	if err != nil {
		t.Fatal(err)
	}
	out, err := patch.Apply(doc)
	if err != nil {
		return nil
	}
	return out
}
