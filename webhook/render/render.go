// Package render shows, offline, what brokerport would do to a manifest: it runs the webhook's
// own handlers on the manifest's StatefulSets, on the broker pods their controller would create
// and on the per-broker Services, and applies the patches they answer with.
package render

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"text/tabwriter"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/webhook"
)

// Result is what the webhook would make of a manifest.
type Result struct {
	StatefulSets []*appsv1.StatefulSet
	Pods         []*corev1.Pod
	Services     []*corev1.Service
	Clusters     []Cluster
	// Notes say what was ignored or assumed, for the user to read.
	Notes []string
}

// Cluster is one StatefulSet's advertised addresses.
type Cluster struct {
	Namespace, Name string
	Block           patches.PortRange
	// LoadBalanced: the brokers are reached through LoadBalancer Services (no port block).
	LoadBalanced bool
	Listeners    []patches.Listener
	Brokers      []Broker
}

// Broker is one broker's node and its address per listener (in listener order).
type Broker struct {
	Pod, Node string
	Addresses []string
}

// Bootstrap is the bootstrap.servers line of the first (Kafka API) listener.
func (c Cluster) Bootstrap() string {
	var addrs []string
	for _, b := range c.Brokers {
		if len(b.Addresses) > 0 {
			addrs = append(addrs, b.Addresses[0])
		}
	}
	return strings.Join(addrs, ",")
}

// DefaultNodes are the nodes render binds brokers to when it is given none: node-i with
// ExternalIP 203.0.113.(i+1) (TEST-NET-3, documentation only), InternalIP 10.0.0.(i+1) and zone
// zone-a, zone-b or zone-c in turn.
func DefaultNodes(n int) []*corev1.Node {
	nodes := make([]*corev1.Node, n)
	for i := range nodes {
		name := fmt.Sprintf("node-%d", i)
		nodes[i] = &corev1.Node{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
				corev1.LabelHostname: name, patches.LabelZone: "zone-" + string(rune('a'+i%3)),
			}},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("10.0.%d.%d", (i+1)/256, (i+1)%256)},
				{Type: corev1.NodeExternalIP, Address: fmt.Sprintf("203.0.113.%d", i+1)},
				{Type: corev1.NodeHostName, Address: name},
			}},
		}
	}
	return nodes
}

// ReadObjects splits a multi-document YAML stream (kubectl or Helm output) into JSON objects,
// expanding Lists and skipping empty documents.
func ReadObjects(r io.Reader) ([][]byte, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var out [][]byte
	for i := 1; ; i++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading YAML document %d: %w", i, err)
		}
		obj, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("YAML document %d: %w", i, err)
		}
		if string(obj) == "null" {
			continue
		}
		var list struct {
			Kind  string            `json:"kind"`
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(obj, &list); err != nil {
			return nil, fmt.Errorf("YAML document %d is not an object: %w", i, err)
		}
		if strings.HasSuffix(list.Kind, "List") && list.Items != nil {
			for _, item := range list.Items {
				out = append(out, item)
			}
			continue
		}
		out = append(out, obj)
	}
}

// Render runs brokerport's handlers over the objects. Nodes are where the brokers are bound:
// broker k of a StatefulSet on the k-th node, one broker per node as the anti-affinity requires.
func Render(ctx context.Context, objects [][]byte, nodes []*corev1.Node, opts patches.Options) (*Result, error) {
	scheme := webhook.Scheme()
	res := &Result{}
	var sets []map[string]any
	var cluster []client.Object
	for _, n := range nodes {
		cluster = append(cluster, n)
	}
	for _, raw := range objects {
		var meta metav1.PartialObjectMetadata
		if err := json.Unmarshal(raw, &meta); err != nil {
			return nil, fmt.Errorf("reading object: %w", err)
		}
		switch meta.GroupVersionKind() {
		case appsv1.SchemeGroupVersion.WithKind("StatefulSet"):
			var obj map[string]any
			if err := json.Unmarshal(raw, &obj); err != nil {
				return nil, err
			}
			sets = append(sets, obj)
		case corev1.SchemeGroupVersion.WithKind("Service"):
			// A Service of the manifest may hold nodePorts: they count as taken.
			svc := &corev1.Service{}
			if err := json.Unmarshal(raw, svc); err != nil {
				return nil, fmt.Errorf("reading Service %s: %w", meta.Name, err)
			}
			cluster = append(cluster, svc)
			res.Notes = append(res.Notes, fmt.Sprintf("ignored %s %s: brokerport mutates StatefulSets (its nodePorts count as taken)", meta.Kind, meta.Name))
		default:
			res.Notes = append(res.Notes, fmt.Sprintf("ignored %s %s: brokerport mutates StatefulSets only", meta.Kind, meta.Name))
		}
	}
	reader := fake.NewClientBuilder().WithScheme(scheme).WithObjects(cluster...).Build()
	snapshot := webhook.ReaderSnapshot{Reader: reader, Options: opts}
	clusters := webhook.NewClusters()
	r := renderer{
		sts:      webhook.NewStatefulSetHandler(snapshot, opts),
		pod:      webhook.NewPodHandler(snapshot, opts),
		svc:      webhook.NewServiceHandler(snapshot, opts),
		bind:     webhook.NewBindingHandler(clusters, reader, reader, snapshot, events.NewFakeRecorder(100), opts),
		clusters: clusters,
		reader:   reader,
	}

	for _, obj := range sets {
		sts, err := r.statefulSet(ctx, obj, res)
		if err != nil {
			return nil, err
		}
		// Later StatefulSets of the manifest must see this one's block, as they would in a cluster;
		// its pods are controlled by it, by UID, as the StatefulSet controller makes them.
		sts.UID = types.UID("render-" + sts.Namespace + "-" + sts.Name)
		if err := reader.Create(ctx, sts.DeepCopy()); err != nil {
			return nil, fmt.Errorf("recording StatefulSet %s: %w", sts.Name, err)
		}
		clusters.EventHandler().OnAdd(sts, false)
		if err := r.brokers(ctx, sts, nodes, opts, res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

type renderer struct {
	sts, pod, svc, bind admission.Handler
	clusters            *webhook.Clusters
	reader              client.Client // the cluster render builds up as it goes
}

func (r renderer) statefulSet(ctx context.Context, obj map[string]any, res *Result) (*appsv1.StatefulSet, error) {
	meta, _ := obj["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		obj["metadata"] = meta
	}
	name, _ := meta["name"].(string)
	if ns, _ := meta["namespace"].(string); ns == "" {
		meta["namespace"] = "default"
	}
	labels, _ := meta["labels"].(map[string]any)
	if labels == nil {
		labels = map[string]any{}
		meta["labels"] = labels
	}
	if labels[patches.LabelExpose] != patches.ExposeValue {
		labels[patches.LabelExpose] = patches.ExposeValue
		res.Notes = append(res.Notes, fmt.Sprintf("rendered StatefulSet %s as if labeled %s=%s", name, patches.LabelExpose, patches.ExposeValue))
	}
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	out, err := admit(ctx, r.sts, admissionv1.Create, meta["namespace"].(string), raw)
	if err != nil {
		return nil, err
	}
	sts := &appsv1.StatefulSet{}
	if err := json.Unmarshal(out, sts); err != nil {
		return nil, err
	}
	res.StatefulSets = append(res.StatefulSets, sts)
	return sts, nil
}

// brokers renders each broker pod as the StatefulSet controller would create it, binds it to its
// node, and renders its Service.
func (r renderer) brokers(ctx context.Context, sts *appsv1.StatefulSet, nodes []*corev1.Node, opts patches.Options, res *Result) error {
	cfg, errs := patches.ParseConfig(sts.Annotations, nil, opts)
	if len(errs) > 0 {
		return errs.ToAggregate()
	}
	c := Cluster{Namespace: sts.Namespace, Name: sts.Name, Block: cfg.Block(), Listeners: cfg.Listeners, LoadBalanced: cfg.LoadBalanced()}
	if cfg.LoadBalanced() {
		res.Notes = append(res.Notes, fmt.Sprintf("StatefulSet %s: each broker advertises the address its load balancer gives its Service (unknown offline: shown as <Service>); its gate holds it until then", sts.Name))
	}
	if cfg.TLSIssuer != nil {
		res.Notes = append(res.Notes, fmt.Sprintf("StatefulSet %s: brokerport's controller asks %s for a certificate per broker naming its address (Certificate <sts>-<i>-external-tls), once the address is known", sts.Name, cfg.TLSIssuer))
	}
	replicas, start := 1, 0
	if sts.Spec.Replicas != nil {
		replicas = int(*sts.Spec.Replicas)
	}
	if sts.Spec.Ordinals != nil {
		start = int(sts.Spec.Ordinals.Start)
	}
	for k := range replicas {
		ordinal := start + k
		raw, err := json.Marshal(podFor(sts, ordinal))
		if err != nil {
			return err
		}
		out, err := admit(ctx, r.pod, admissionv1.Create, sts.Namespace, raw)
		if err != nil {
			return err
		}
		pod := &corev1.Pod{}
		if err := json.Unmarshal(out, pod); err != nil {
			return err
		}
		broker := Broker{Pod: pod.Name}
		if k >= len(nodes) {
			res.Notes = append(res.Notes, fmt.Sprintf("pod %s would stay Pending: %d nodes for %d brokers, and brokerport places one broker per node", pod.Name, len(nodes), replicas))
		} else {
			if err := r.bindTo(ctx, pod, nodes[k], cfg.LoadBalanced()); err != nil {
				return err
			}
			broker.Node = pod.Spec.NodeName
			host := pod.Annotations[patches.AnnotationHost]
			if cfg.LoadBalanced() {
				host = "<" + patches.BrokerServiceName(sts.Name, ordinal) + ">"
			}
			for l := range cfg.Listeners {
				broker.Addresses = append(broker.Addresses, net.JoinHostPort(host, strconv.Itoa(int(cfg.Port(ordinal, l)))))
			}
		}
		res.Pods = append(res.Pods, pod)
		c.Brokers = append(c.Brokers, broker)

		raw, err = json.Marshal(patches.BrokerService(sts, cfg, ordinal))
		if err != nil {
			return err
		}
		if out, err = admit(ctx, r.svc, admissionv1.Create, sts.Namespace, raw); err != nil {
			return err
		}
		svc := &corev1.Service{}
		if err := json.Unmarshal(out, svc); err != nil {
			return err
		}
		res.Services = append(res.Services, svc)
	}
	res.Clusters = append(res.Clusters, c)
	return nil
}

// bindTo binds the pod to the node as the scheduler and the API server would: the binding
// webhook's annotations are copied onto the pod with its nodeName.
// A broker of the loadbalancer strategy gets no address at binding (its Service has none yet).
func (r renderer) bindTo(ctx context.Context, pod *corev1.Pod, node *corev1.Node, loadBalanced bool) error {
	if err := r.reader.Create(ctx, pod.DeepCopy()); err != nil {
		return fmt.Errorf("recording pod %s: %w", pod.Name, err)
	}
	binding := &corev1.Binding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Binding"},
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node.Name},
	}
	raw, err := json.Marshal(binding)
	if err != nil {
		return err
	}
	out, err := admit(ctx, r.bind, admissionv1.Create, pod.Namespace, raw)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, binding); err != nil {
		return err
	}
	if binding.Annotations[patches.AnnotationHost] == "" && !loadBalanced {
		return fmt.Errorf("binding pod %s to node %s: the node has no address brokerport accepts (see %s)", pod.Name, node.Name, patches.AnnotationAddressTypes)
	}
	pod.Spec.NodeName = node.Name
	for k, v := range binding.Annotations {
		pod.Annotations[k] = v
	}
	return nil
}

// podFor is the pod the StatefulSet controller creates for an ordinal.
func podFor(sts *appsv1.StatefulSet, ordinal int) *corev1.Pod {
	name := fmt.Sprintf("%s-%d", sts.Name, ordinal)
	tmpl := sts.Spec.Template.DeepCopy()
	pod := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: tmpl.ObjectMeta,
		Spec:       tmpl.Spec,
	}
	pod.Name, pod.Namespace = name, sts.Namespace
	pod.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(sts, appsv1.SchemeGroupVersion.WithKind("StatefulSet"))}
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	pod.Labels[appsv1.StatefulSetPodNameLabel] = name
	pod.Labels[appsv1.PodIndexLabel] = strconv.Itoa(ordinal)
	pod.Spec.Hostname, pod.Spec.Subdomain = name, sts.Spec.ServiceName
	return pod
}

// admit sends an object through a handler as the API server would and applies the patch.
func admit(ctx context.Context, h admission.Handler, op admissionv1.Operation, namespace string, raw []byte) ([]byte, error) {
	var meta metav1.PartialObjectMetadata
	if err := json.Unmarshal(raw, &meta); err != nil {
		return nil, err
	}
	resp := h.Handle(ctx, admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Operation: op, Namespace: namespace, Name: meta.Name,
		Kind:   metav1.GroupVersionKind(meta.GroupVersionKind()),
		Object: runtime.RawExtension{Raw: raw},
	}})
	if !resp.Allowed {
		msg := "refused"
		if resp.Result != nil {
			msg = resp.Result.Message
		}
		return nil, fmt.Errorf("brokerport would refuse %s %s: %s", meta.Kind, meta.Name, msg)
	}
	if len(resp.Patches) == 0 {
		return raw, nil
	}
	patchJSON, err := json.Marshal(resp.Patches)
	if err != nil {
		return nil, err
	}
	patch, err := jsonpatchapply.DecodePatch(patchJSON)
	if err != nil {
		return nil, fmt.Errorf("decoding the patch for %s %s: %w", meta.Kind, meta.Name, err)
	}
	return patch.Apply(raw)
}

// Write prints the objects as one YAML stream, followed by the address table as YAML comments
// so that the output still applies with kubectl.
func (r *Result) Write(w io.Writer) error {
	var objects []any
	for _, o := range r.StatefulSets {
		objects = append(objects, o)
	}
	for _, o := range r.Pods {
		objects = append(objects, o)
	}
	for _, o := range r.Services {
		objects = append(objects, o)
	}
	for _, o := range objects {
		out, err := marshalClean(o)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "---\n%s", out); err != nil {
			return err
		}
	}
	return r.WriteTable(w, "# ")
}

// WriteTable prints each StatefulSet's advertised addresses, each line starting with prefix.
func (r *Result) WriteTable(w io.Writer, prefix string) error {
	for _, c := range r.Clusters {
		block := "port block " + c.Block.String()
		if c.LoadBalanced {
			block = "LoadBalancer Services"
		}
		fmt.Fprintf(w, "%sAdvertised addresses of StatefulSet %s/%s (%s):\n", prefix, c.Namespace, c.Name, block)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		header := prefix + "BROKER\tNODE"
		for _, l := range c.Listeners {
			header += "\t" + strings.ToUpper(l.Name)
		}
		fmt.Fprintln(tw, header)
		for _, b := range c.Brokers {
			line := prefix + b.Pod + "\t" + b.Node
			if b.Node == "" {
				line += "(pending)"
			}
			for _, a := range b.Addresses {
				line += "\t" + a
			}
			fmt.Fprintln(tw, line)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(w, "%sbootstrap.servers=%s\n", prefix, c.Bootstrap())
	}
	return nil
}

// DecodeNodes reads Node objects (from --nodes).
func DecodeNodes(objects [][]byte) ([]*corev1.Node, error) {
	var nodes []*corev1.Node
	for i, raw := range objects {
		node := &corev1.Node{}
		if err := json.Unmarshal(raw, node); err != nil {
			return nil, fmt.Errorf("object %d: %w", i+1, err)
		}
		if node.Kind != "Node" {
			return nil, fmt.Errorf("object %d is a %q, not a Node", i+1, node.Kind)
		}
		nodes = append(nodes, node)
	}
	if len(nodes) == 0 {
		return nil, errors.New("no Node objects")
	}
	return nodes, nil
}

// MostReplicas is the largest replica count of the StatefulSets among objects: how many nodes
// render makes up when it is given none.
func MostReplicas(objects [][]byte) int {
	most := 1
	for _, raw := range objects {
		var sts appsv1.StatefulSet
		if json.Unmarshal(raw, &sts) == nil && sts.Kind == "StatefulSet" && sts.Spec.Replicas != nil {
			most = max(most, int(*sts.Spec.Replicas))
		}
	}
	return most
}

// marshalClean is the object as YAML without the empty status and creation timestamp that Go
// structs always carry and a user's manifest never has.
func marshalClean(o any) ([]byte, error) {
	raw, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	delete(m, "status")
	if meta, ok := m["metadata"].(map[string]any); ok && meta["creationTimestamp"] == nil {
		delete(meta, "creationTimestamp")
	}
	return yaml.Marshal(m)
}
