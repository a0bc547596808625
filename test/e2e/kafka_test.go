//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/webhook/controller"
)

// kafkaStatefulSet is an Apache Kafka (KRaft) StatefulSet with brokerport's kafka flavor: its
// external listener is completed in KAFKA_LISTENERS, KAFKA_ADVERTISED_LISTENERS and
// KAFKA_LISTENER_SECURITY_PROTOCOL_MAP.
func kafkaStatefulSet() *appsv1.StatefulSet {
	labels := map[string]string{"app": "kafka"}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "kafka", Namespace: "kafka",
			Labels:      map[string]string{patches.LabelExpose: patches.ExposeValue},
			Annotations: map[string]string{patches.AnnotationFlavor: "kafka", patches.AnnotationAddressTypes: "ExternalIP"}},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    ptrTo(int32(3)),
			ServiceName: "kafka-headless",
			Selector:    &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name:  "kafka",
					Image: "apache/kafka:e2e",
					Ports: []corev1.ContainerPort{{Name: "internal", ContainerPort: 9092}, {Name: "controller", ContainerPort: 9093}},
					Env: []corev1.EnvVar{
						{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
						{Name: "KAFKA_LISTENERS", Value: "INTERNAL://0.0.0.0:9092,CONTROLLER://0.0.0.0:9093"},
						{Name: "KAFKA_ADVERTISED_LISTENERS", Value: "INTERNAL://$(POD_NAME).kafka-headless.kafka.svc:9092"},
						{Name: "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", Value: "INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"},
					},
				}}},
			},
		},
	}
}

// kafkaClients proves, with real Kafka clients, that every advertised broker is reachable: for
// the Redpanda StatefulSet through BROKERPORT_KAFKA_ADDRESS, for the Apache Kafka one through the
// EXTERNAL entry of KAFKA_ADVERTISED_LISTENERS, each resolved exactly as the kubelet would.
func kafkaClients(t *testing.T, ctx context.Context) {
	require.NoError(t, env.admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kafka"}}))
	require.NoError(t, env.admin.Create(ctx, kafkaStatefulSet()))
	require.NoError(t, waitFor(ctx, 2*time.Minute, "the kafka brokers published", func() error { return published(ctx, "kafka", "kafka", 3) }))

	t.Run("redpanda via BROKERPORT_KAFKA_ADDRESS", func(t *testing.T) {
		require.NoError(t, checkKafka(ctx, ns, stsName, "redpanda", 3, addressVar, nil))
	})
	t.Run("kafka via the EXTERNAL entry of KAFKA_ADVERTISED_LISTENERS", func(t *testing.T) {
		require.NoError(t, checkKafka(ctx, "kafka", "kafka", "kafka", 3, externalListener, nil))
	})
	t.Run("a broker advertising a wrong port fails the check", func(t *testing.T) {
		wrongPort := func(i int, addr string) string {
			if i != 1 {
				return addr
			}
			host, port, _ := net.SplitHostPort(addr)
			n, _ := strconv.Atoi(port)
			return net.JoinHostPort(host, strconv.Itoa(n+1)) // the next broker's port
		}
		err := checkKafka(ctx, ns, stsName, "redpanda", 3, addressVar, wrongPort)
		require.Error(t, err)
		t.Logf("as expected: %v", err)
	})
}

func addressVar(env map[string]string) (string, error) {
	if a := env["BROKERPORT_KAFKA_ADDRESS"]; a != "" {
		return a, nil
	}
	return "", errors.New("BROKERPORT_KAFKA_ADDRESS is empty")
}

func externalListener(env map[string]string) (string, error) {
	for _, entry := range strings.Split(env["KAFKA_ADVERTISED_LISTENERS"], ",") {
		if addr, ok := strings.CutPrefix(entry, "EXTERNAL://"); ok {
			return addr, nil
		}
	}
	return "", fmt.Errorf("no EXTERNAL entry in KAFKA_ADVERTISED_LISTENERS=%q", env["KAFKA_ADVERTISED_LISTENERS"])
}

// published tells whether the ConfigMap lists n brokers.
func published(ctx context.Context, namespace, sts string, n int) error {
	cm := &corev1.ConfigMap{}
	if err := env.admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: controller.ConfigMapName(sts)}, cm); err != nil {
		return err
	}
	if got := cm.Data["bootstrap.servers"]; got == "" || len(strings.Split(got, ",")) != n {
		return fmt.Errorf("bootstrap.servers=%q", got)
	}
	return nil
}

// checkKafka starts one Kafka-protocol broker (kfake) per broker pod, listening on the pod's
// node ExternalIP and hostPort (where the node would deliver its traffic) and advertising what
// the pod's resolved environment says (tamper, for the negative test, may change it). Then a
// franz-go client and kcat bootstrap from the published bootstrap.servers and produce to and
// consume from a partition led by each broker.
func checkKafka(ctx context.Context, namespace, sts, container string, n int, advertised func(map[string]string) (string, error), tamper func(int, string) string) error {
	return checkKafkaWith(ctx, namespace, sts, container, n, advertised, tamper, kafkaCheck{})
}

// kafkaCheck is how checkKafkaWith reaches the brokers: where each fake broker listens (default:
// atNodePort), and, for TLS, each broker's server configuration and the CA clients trust
// (clients verify the broker's hostname).
type kafkaCheck struct {
	listenAt  func(context.Context, *corev1.Pod) (string, error)
	serverTLS func(context.Context, *corev1.Pod) (*tls.Config, error)
	caPEM     []byte
}

// atNodePort is where a broker of the nodeport strategy is reached: its node's ExternalIP and
// its hostPort.
func atNodePort(_ context.Context, pod *corev1.Pod) (string, error) {
	node := &corev1.Node{}
	if err := env.admin.Get(context.Background(), client.ObjectKey{Name: pod.Spec.NodeName}, node); err != nil {
		return "", err
	}
	return net.JoinHostPort(externalIP(node), fmt.Sprint(kafkaHostPort(pod))), nil
}

// checkKafkaWith is checkKafka reaching the brokers as kc says.
func checkKafkaWith(ctx context.Context, namespace, sts, container string, n int, advertised func(map[string]string) (string, error), tamper func(int, string) string, kc kafkaCheck) error {
	if kc.listenAt == nil {
		kc.listenAt = atNodePort
	}
	var listens, adverts []string
	var serverTLS []*tls.Config
	for i := range n {
		pod := &corev1.Pod{}
		if err := env.admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: fmt.Sprintf("%s-%d", sts, i)}, pod); err != nil {
			return err
		}
		resolved, err := resolveEnv(pod, container)
		if err != nil {
			return err
		}
		addr, err := advertised(resolved)
		if err != nil {
			return fmt.Errorf("pod %s: %w", pod.Name, err)
		}
		if tamper != nil {
			addr = tamper(i, addr)
		}
		listen, err := kc.listenAt(ctx, pod)
		if err != nil {
			return fmt.Errorf("pod %s: %w", pod.Name, err)
		}
		listens = append(listens, listen)
		adverts = append(adverts, addr)
		if kc.serverTLS != nil {
			cfg, err := kc.serverTLS(ctx, pod)
			if err != nil {
				return fmt.Errorf("pod %s: %w", pod.Name, err)
			}
			serverTLS = append(serverTLS, cfg)
		}
	}

	const topic = "brokerport-e2e"
	var mu sync.Mutex
	next := 0
	cluster, err := kfake.NewCluster(
		kfake.NumBrokers(n),
		kfake.SeedTopics(int32(n), topic),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			mu.Lock()
			defer mu.Unlock()
			i := next
			next++
			ln, err := net.Listen(network, listens[i])
			if err != nil {
				return nil, err
			}
			if serverTLS != nil {
				ln = tls.NewListener(ln, serverTLS[i])
			}
			return advertisingListener{Listener: ln, advertised: adverts[i]}, nil
		}),
	)
	if err != nil {
		return fmt.Errorf("starting the fake brokers on %v: %w", listens, err)
	}
	defer cluster.Close()
	for p := range n {
		if err := cluster.MoveTopicPartition(topic, int32(p), int32(p)); err != nil {
			return err
		}
	}

	cm := &corev1.ConfigMap{}
	if err := env.admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: controller.ConfigMapName(sts)}, cm); err != nil {
		return err
	}
	bootstrap := cm.Data["bootstrap.servers"]
	if err := franzRoundTrip(ctx, bootstrap, topic, n, adverts, kc.caPEM); err != nil {
		return fmt.Errorf("franz-go: %w", err)
	}
	if err := kcatRoundTrip(ctx, bootstrap, topic, n, adverts, kc.caPEM); err != nil {
		return fmt.Errorf("kcat: %w", err)
	}
	return nil
}

// advertisingListener reports the advertised address as its own: kfake advertises its
// listener's Addr().
type advertisingListener struct {
	net.Listener
	advertised string
}

func (l advertisingListener) Addr() net.Addr { return advertisedAddr(l.advertised) }

type advertisedAddr string

func (a advertisedAddr) Network() string { return "tcp" }
func (a advertisedAddr) String() string  { return string(a) }

// franzRoundTrip produces to and consumes from each broker's partition with franz-go; with caPEM,
// over TLS, verifying each broker's certificate against it, hostname included.
func franzRoundTrip(ctx context.Context, bootstrap, topic string, n int, adverts []string, caPEM []byte) error {
	var mu sync.Mutex
	dialed := map[string]bool{}
	offsets := map[int32]kgo.Offset{}
	for p := range n {
		offsets[int32(p)] = kgo.NewOffset().AtStart()
	}
	opts := []kgo.Opt{}
	if caPEM != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return errors.New("the CA holds no PEM certificate")
		}
		// No ServerName: franz-go sets it to the host it dials, so every broker's hostname (or
		// IP SAN) is verified.
		opts = append(opts, kgo.DialTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	}
	cl, err := kgo.NewClient(append(opts,
		kgo.SeedBrokers(strings.Split(bootstrap, ",")...),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RecordDeliveryTimeout(5*time.Second),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
		kgo.WithHooks(connectHook(func(meta kgo.BrokerMetadata) {
			mu.Lock()
			dialed[net.JoinHostPort(meta.Host, fmt.Sprint(meta.Port))] = true
			mu.Unlock()
		})),
	)...)
	if err != nil {
		return err
	}
	defer cl.Close()

	produceCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for p := range n {
		rec := &kgo.Record{Topic: topic, Partition: int32(p), Value: []byte(fmt.Sprintf("franz-%d", p))}
		if err := cl.ProduceSync(produceCtx, rec).FirstErr(); err != nil {
			return fmt.Errorf("producing to partition %d (led by the broker advertising %s): %w", p, adverts[p], err)
		}
	}
	got := map[int32]bool{}
	for len(got) < n {
		fetches := cl.PollFetches(produceCtx)
		if err := produceCtx.Err(); err != nil {
			return fmt.Errorf("consumed %d of %d partitions: %w", len(got), n, err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if string(r.Value) == fmt.Sprintf("franz-%d", r.Partition) {
				got[r.Partition] = true
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	for _, a := range adverts {
		if !dialed[a] {
			return fmt.Errorf("the client never dialed %s (dialed %v)", a, dialed)
		}
	}
	return nil
}

// connectHook calls fn for every successful broker connection.
type connectHook func(kgo.BrokerMetadata)

func (h connectHook) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err == nil {
		h(meta)
	}
}

// kcatRoundTrip checks with a second, independent client: kcat lists exactly the advertised
// brokers, then produces to and consumes from each partition.
// With caPEM, over TLS, verifying each broker's certificate against it, hostname included.
func kcatRoundTrip(ctx context.Context, bootstrap, topic string, n int, adverts []string, caPEM []byte) error {
	if _, err := exec.LookPath("kcat"); err != nil {
		return errors.New("kcat is not installed: apt-get install kcat (.ci/run installs it)")
	}
	opts := []string{"-b", bootstrap, "-X", "socket.timeout.ms=5000", "-X", "message.timeout.ms=5000", "-m", "5"}
	if caPEM != nil {
		caFile := filepath.Join(env.dir, fmt.Sprintf("kcat-ca-%d.pem", time.Now().UnixNano()))
		if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
			return err
		}
		defer os.Remove(caFile)
		opts = append(opts, "-X", "security.protocol=ssl", "-X", "ssl.ca.location="+caFile, "-X", "ssl.endpoint.identification.algorithm=https")
	}
	out, err := kcat(ctx, nil, append(opts, "-L", "-J")...)
	if err != nil {
		return err
	}
	var meta struct {
		Brokers []struct {
			Name string `json:"name"`
		} `json:"brokers"`
	}
	if err := json.Unmarshal(out, &meta); err != nil {
		return fmt.Errorf("reading kcat -L -J: %w", err)
	}
	var listed []string
	for _, b := range meta.Brokers {
		listed = append(listed, b.Name)
	}
	// kcat (librdkafka) names a broker host:port without the brackets of an IPv6 host.
	unbracketed := make([]string, len(adverts))
	for i, a := range adverts {
		unbracketed[i] = strings.NewReplacer("[", "", "]", "").Replace(a)
	}
	if !slices.Equal(slices.Sorted(slices.Values(listed)), slices.Sorted(slices.Values(unbracketed))) {
		return fmt.Errorf("kcat -L lists brokers %v, want %v", listed, adverts)
	}
	for p := range n {
		msg := fmt.Sprintf("kcat-%d", p)
		if _, err := kcat(ctx, []byte(msg+"\n"), append(opts, "-P", "-t", topic, "-p", fmt.Sprint(p))...); err != nil {
			return fmt.Errorf("producing to partition %d (led by %s): %w", p, adverts[p], err)
		}
		out, err := kcat(ctx, nil, append(opts, "-C", "-t", topic, "-p", fmt.Sprint(p), "-o", "beginning", "-e", "-q")...)
		if err != nil {
			return fmt.Errorf("consuming partition %d (led by %s): %w", p, adverts[p], err)
		}
		if !bytes.Contains(out, []byte(msg)) {
			return fmt.Errorf("partition %d: consumed %q, want %q among it", p, out, msg)
		}
	}
	return nil
}

func kcat(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kcat", args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("kcat %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// resolveEnv is the container's environment as the kubelet would give it (test/tools/resolve-env
// runs the kubelet's own code).
func resolveEnv(pod *corev1.Pod, container string) (map[string]string, error) {
	data, err := json.Marshal(pod)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(env.cp.Bin, "resolve-env"), container)
	cmd.Stdin = bytes.NewReader(data)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("resolving the environment of %s/%s: %w", pod.Name, container, err)
	}
	var vars []struct{ Name, Value string }
	if err := json.Unmarshal(out, &vars); err != nil {
		return nil, err
	}
	resolved := map[string]string{}
	for _, v := range vars {
		resolved[v.Name] = v.Value
	}
	return resolved, nil
}

// kafkaHostPort is the hostPort of the first listener (the Kafka API) of the broker container.
func kafkaHostPort(pod *corev1.Pod) int32 {
	for _, p := range pod.Spec.Containers[0].Ports {
		if p.ContainerPort == 9094 && p.HostPort != 0 {
			return p.HostPort
		}
	}
	return 0
}
