package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/brokerport/brokerport/certs"
	"github.com/brokerport/brokerport/patches"
)

const secretValue = "s3cr3t-do-not-log"

// brokerPodJSON is a broker pod with extra JSON spliced into its first container.
func brokerPodJSON(name, annotations, container string) string {
	return fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":%q,"labels":{"brokerport.io/expose":"true","brokerport.io/cluster":"kafka"},
"ownerReferences":[{"apiVersion":"apps/v1","kind":"StatefulSet","name":"kafka","uid":"kafka-uid","controller":true}],
"annotations":{"brokerport.io/port-base":"30000"%s}},"spec":{"containers":[{"name":"kafka","image":"k","env":[{"name":"PASSWORD","value":%q}]%s}]}}`,
		name, annotations, secretValue, container)
}

// The bad-input catalog: every request is refused with a message naming the field (or, for
// what cannot be decoded, a 400), never a panic, never a silent change.
func TestBadInputCatalog(t *testing.T) {
	var logs bytes.Buffer
	ctx := logf.IntoContext(context.Background(), funcr.New(func(prefix, args string) { logs.WriteString(prefix + args + "\n") }, funcr.Options{Verbosity: 10}))
	scheme := Scheme()
	other := `{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"other","namespace":"kafka","labels":{"brokerport.io/expose":"true"},"annotations":{"brokerport.io/port-base":"30000"}}}`
	reader := fake.NewClientBuilder().WithScheme(scheme).Build()
	var otherSTS = mustDecodeSTS(t, other)
	require.NoError(t, reader.Create(context.Background(), otherSTS))
	// The broker pods' StatefulSet.
	require.NoError(t, reader.Create(context.Background(), mustDecodeSTS(t, `{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"kafka","namespace":"kafka","uid":"kafka-uid","labels":{"brokerport.io/expose":"true"}}}`)))
	opts := patches.DefaultOptions()
	snapshot := ReaderSnapshot{Reader: reader, Options: opts}
	pods := NewPodHandler(snapshot, opts)
	sets := NewStatefulSetHandler(snapshot, opts)
	services := NewServiceHandler(snapshot, opts)
	bindings := NewBindingHandler(NewClusters(), reader, reader, snapshot, events.NewFakeRecorder(10), opts)

	huge := strings.Repeat("x", 3<<20-4096)
	tests := map[string]struct {
		handler admission.Handler
		op      admissionv1.Operation
		body    string
		code    int32
		want    string // in the message
		bound   string // also in the message: the bound a tenant-sized input is past
	}{
		// Tenant-sized inputs (issue 27, item 5): each bounded whatever the strategy, the denial
		// naming the annotation or field and the bound.
		"250 KiB of listeners (21,402)":            {handler: sets, body: stsJSON("kafka", `"brokerport.io/listeners":"`+manyListeners(21402)+`"`, 1), code: 422, want: "metadata.annotations[brokerport.io/listeners]", bound: "bytes; at most 1024"},
		"17 listeners":                             {handler: sets, body: stsJSON("kafka", `"brokerport.io/listeners":"`+manyListeners(17)+`"`, 1), code: 422, want: "metadata.annotations[brokerport.io/listeners]", bound: "names 17 listeners; at most 16"},
		"17 listeners, loadbalancer":               {handler: sets, body: stsJSON("kafka", `"brokerport.io/strategy":"loadbalancer","brokerport.io/listeners":"`+manyListeners(17)+`"`, 1), code: 422, want: "metadata.annotations[brokerport.io/listeners]", bound: "at most 16"},
		"loadbalancer, 1000 brokers × 3 listeners": {handler: sets, body: stsJSON("kafka", `"brokerport.io/strategy":"loadbalancer","brokerport.io/listeners":"kafka=9094,http=8083,admin=9644"`, 1000), code: 422, want: "spec.replicas", bound: "3000 load-balancer ports; brokerport.io/strategy=loadbalancer allows at most 256"},
		"host template of 2 KiB":                   {handler: sets, body: stsJSON("kafka", `"brokerport.io/host-template":"`+strings.Repeat("{{.Node}}", 228)+`"`, 1), code: 422, want: "metadata.annotations[brokerport.io/host-template]", bound: "at most 1024"},
		"service annotations of 8 KiB":             {handler: sets, body: stsJSON("kafka", `"brokerport.io/strategy":"loadbalancer","brokerport.io/service-annotations":"{\"a\":\"`+strings.Repeat("x", 8<<10)+`\"}"`, 1), code: 422, want: "metadata.annotations[brokerport.io/service-annotations]", bound: "at most 4096"},
		"listeners past the bound on a pod":        {handler: pods, body: brokerPodJSON("kafka-0", `,"brokerport.io/listeners":"`+manyListeners(17)+`"`, ""), code: 422, want: "metadata.annotations[brokerport.io/listeners]", bound: "at most 16"},

		"malformed JSON":                        {handler: pods, body: `{"kind":"Pod",`, code: 400, want: "decoding Pod"},
		"wrong kind":                            {handler: pods, body: `{"apiVersion":"v1","kind":"Service","metadata":{"name":"x"}}`, code: 400, want: "decoding Pod"},
		"a list where an object is":             {handler: sets, body: `{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":[]}`, code: 400, want: "decoding StatefulSet"},
		"duplicate listener names":              {handler: sets, body: stsJSON("kafka", `"brokerport.io/listeners":"kafka=9094,kafka=9095"`, 3), code: 422, want: "metadata.annotations[brokerport.io/listeners]"},
		"port-base out of range":                {handler: sets, body: stsJSON("kafka", `"brokerport.io/port-base":"40000"`, 3), code: 422, want: "metadata.annotations[brokerport.io/port-base]"},
		"port-base overlapping":                 {handler: sets, body: stsJSON("kafka", `"brokerport.io/port-base":"30004"`, 3), code: 422, want: "held by StatefulSet kafka/other"},
		"scale past max-brokers":                {handler: sets, body: stsJSON("kafka", `"brokerport.io/max-brokers":"2"`, 3), code: 422, want: "spec.replicas"},
		"name not a label value":                {handler: sets, body: stsJSON(strings.Repeat("k", 64), "", 1), code: 422, want: "metadata.name"},
		"generateName only":                     {handler: sets, body: stsJSON("", "", 1), code: 422, want: "metadata.name"},
		"odd pod name":                          {handler: pods, body: brokerPodJSON("kafka-0x", "", ""), code: 422, want: "metadata.name"},
		"ordinal past max-brokers":              {handler: pods, body: brokerPodJSON("kafka-8", "", ""), code: 422, want: "metadata.name"},
		"own hostPort on a listener":            {handler: pods, body: brokerPodJSON("kafka-0", "", `,"ports":[{"containerPort":9094,"hostPort":1234}]`), code: 422, want: "spec.containers[0].ports[0].hostPort"},
		"hostPort of another listener's port":   {handler: pods, body: brokerPodJSON("kafka-1", "", `,"ports":[{"containerPort":8080,"hostPort":30001}]`), code: 422, want: "spec.containers[0].ports[0].hostPort"},
		"listener port named like another port": {handler: pods, body: brokerPodJSON("kafka-0", `,"brokerport.io/listeners":"http=8083"`, `,"ports":[{"name":"http","containerPort":8082}]`), code: 422, want: "spec.containers[0].ports[0].name"},
		"container that does not exist":         {handler: pods, body: brokerPodJSON("kafka-0", `,"brokerport.io/container":"nope"`, ""), code: 422, want: "metadata.annotations[brokerport.io/container]"},
		"advertise env from a secret":           {handler: pods, body: brokerPodJSON("kafka-0", `,"brokerport.io/advertise-env":"ADV"`, `,"env":[{"name":"ADV","valueFrom":{"secretKeyRef":{"name":"s","key":"k"}}}]`), code: 422, want: "spec.containers[0].env[0].valueFrom"},
		"service port of no listener":           {handler: services, body: `{"apiVersion":"v1","kind":"Service","metadata":{"name":"s","labels":{"brokerport.io/expose":"true","brokerport.io/cluster":"other"}},"spec":{"selector":{"statefulset.kubernetes.io/pod-name":"other-0"},"ports":[{"name":"web","port":80}]}}`, code: 422, want: "spec.ports[0].name"},
		"service selecting no broker":           {handler: services, body: `{"apiVersion":"v1","kind":"Service","metadata":{"name":"s","labels":{"brokerport.io/expose":"true","brokerport.io/cluster":"other"}},"spec":{"selector":{"app":"x"}}}`, code: 422, want: "spec.selector[statefulset.kubernetes.io/pod-name]"},
		"near the 3 MiB limit":                  {handler: pods, body: brokerPodJSON("kafka-0", `,"brokerport.io/listeners":"`+huge+`"`, ""), code: 422, want: "metadata.annotations[brokerport.io/listeners]"},
		"a binding that is not a Binding":       {handler: bindings, body: `not json`, code: 200, want: "not a brokerport broker"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			op := tc.op
			if op == "" {
				op = admissionv1.Create
			}
			start := time.Now()
			resp := tc.handler.Handle(ctx, admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
				Operation: op, Namespace: "kafka", Name: "x", Object: runtime.RawExtension{Raw: []byte(tc.body)},
			}})
			assert.Less(t, time.Since(start), 10*time.Second, "a guard against a hang, not a performance figure")
			require.NotNil(t, resp.Result)
			assert.Equal(t, tc.code, resp.Result.Code, resp.Result.Message)
			assert.Equal(t, tc.code == 200, resp.Allowed)
			assert.Empty(t, resp.Patches, "a refused request changes nothing")
			assert.Contains(t, resp.Result.Message, tc.want)
			assert.Contains(t, resp.Result.Message, tc.bound)
			assert.NotContains(t, resp.Result.Message, secretValue, "an answer repeats the object's data")
		})
	}
	assert.NotContains(t, logs.String(), secretValue, "the logs hold the object's data")
}

// manyListeners is a brokerport.io/listeners value of n distinct, valid listeners
// ("l0=1,l1=2,..."): 21,402 of them make the 250 KiB annotation once admitted.
func manyListeners(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "l%d=%d", i, i+1)
	}
	return b.String()
}

func stsJSON(name, annotations string, replicas int) string {
	if annotations != "" {
		annotations = "," + annotations
	}
	return fmt.Sprintf(`{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":%q,"labels":{"brokerport.io/expose":"true"},"annotations":{"x":"y"%s}},
"spec":{"replicas":%d,"template":{"metadata":{"labels":{"app":"k"}},"spec":{"containers":[{"name":"k","image":"k","env":[{"name":"PASSWORD","value":%q}]}]}}}}`, name, annotations, replicas, secretValue)
}

// Request bodies are capped (controller-runtime's limit, 7 MiB): a larger one is refused
// before it is read whole.
func TestRequestBodiesAreCapped(t *testing.T) {
	h, err := admission.StandaloneWebhook(&admission.Webhook{Handler: NewPodHandler(ReaderSnapshot{}, patches.DefaultOptions())}, admission.StandaloneOptions{})
	require.NoError(t, err)
	body := `{"request":{"uid":"1","object":{"x":"` + strings.Repeat("x", 8<<20) + `"}}}`
	req := httptest.NewRequest(http.MethodPost, "/mutate-pods", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	assert.Contains(t, rec.Body.String(), "request entity is too large")
}

// The webhook listener speaks TLS 1.2 or later with forward-secret AEAD suites, and HTTP/1.1
// only (HTTP/2 off since CVE-2023-44487).
func TestTLSFloor(t *testing.T) {
	dir := t.TempDir()
	ca, err := certs.WriteSelfSigned(dir, []string{"127.0.0.1"}, time.Hour)
	require.NoError(t, err)
	port := freeTCPPort(t)
	server := ctrlwebhook.NewServer(ctrlwebhook.Options{Host: "127.0.0.1", Port: port, CertDir: dir, TLSOpts: TLSOptions()})
	server.Register("/ok", &admission.Webhook{Handler: admission.HandlerFunc(func(context.Context, admission.Request) admission.Response { return admission.Allowed("") })})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = server.Start(ctx) }()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	dial := func(cfg *tls.Config) (*tls.Conn, error) {
		cfg.RootCAs, cfg.ServerName = pool, "127.0.0.1"
		var conn *tls.Conn
		var err error
		for range 500 { // up to 10 s for the server to listen
			if conn, err = tls.Dial("tcp", addr, cfg); err == nil || !strings.Contains(err.Error(), "connection refused") {
				return conn, err
			}
			time.Sleep(20 * time.Millisecond)
		}
		return conn, err
	}

	conn, err := dial(&tls.Config{NextProtos: []string{"h2", "http/1.1"}})
	require.NoError(t, err)
	assert.Equal(t, "http/1.1", conn.ConnectionState().NegotiatedProtocol, "HTTP/2 is off")
	conn.Close()

	_, err = dial(&tls.Config{MaxVersion: tls.VersionTLS11})
	assert.Error(t, err, "TLS 1.1 is refused")

	_, err = dial(&tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_128_GCM_SHA256}})
	assert.Error(t, err, "CBC and non-forward-secret suites are refused")

	conn, err = dial(&tls.Config{MaxVersion: tls.VersionTLS12})
	require.NoError(t, err, "TLS 1.2 with a modern suite is accepted")
	assert.Equal(t, uint16(tls.VersionTLS12), conn.ConnectionState().Version)
	conn.Close()
}

func freeTCPPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func mustDecodeSTS(t *testing.T, raw string) *appsv1.StatefulSet {
	sts := &appsv1.StatefulSet{}
	require.NoError(t, json.Unmarshal([]byte(raw), sts))
	return sts
}
