package patches

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func TestParseConfigDefaults(t *testing.T) {
	cfg, errs := ParseConfig(nil, field.NewPath("metadata", "annotations"), DefaultOptions())
	require.Empty(t, errs)
	assert.Equal(t, []Listener{{Name: "kafka", ContainerPort: 9094}}, cfg.Listeners)
	assert.Equal(t, int32(8), cfg.MaxBrokers)
	assert.Equal(t, int32(0), cfg.PortBase)
	assert.Equal(t, DefaultAddressTypes, cfg.AddressTypes)
	assert.Equal(t, "EXTERNAL", cfg.ListenerName)
	assert.Equal(t, "", cfg.AdvertiseEnv)
}

func TestParseConfigValid(t *testing.T) {
	cfg, errs := ParseConfig(map[string]string{
		AnnotationListeners:    "kafka=9094, http=8083,schema-registry=8084",
		AnnotationPortBase:     "30010",
		AnnotationMaxBrokers:   "3",
		AnnotationAddressTypes: "InternalIP,ExternalIP",
		AnnotationFlavor:       "bitnami",
		AnnotationContainer:    "kafka",
	}, field.NewPath("metadata", "annotations"), DefaultOptions())
	require.Empty(t, errs)
	assert.Equal(t, []Listener{{"kafka", 9094}, {"http", 8083}, {"schema-registry", 8084}}, cfg.Listeners)
	assert.Equal(t, "SCHEMA_REGISTRY", cfg.Listeners[2].EnvName())
	assert.Equal(t, PortRange{First: 30010, Last: 30018}, cfg.Block())
	assert.Equal(t, []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeExternalIP}, cfg.AddressTypes)
	assert.Equal(t, "KAFKA_CFG_ADVERTISED_LISTENERS", cfg.AdvertiseEnv, "the flavor chooses the advertise variable")
}

// Each invalid value is refused naming its annotation, saying what is wrong and what is accepted.
func TestParseConfigInvalid(t *testing.T) {
	tests := map[string]struct {
		key, value string
		extra      map[string]string
		want       string
	}{
		"listener without port":      {key: AnnotationListeners, value: "kafka", want: `"kafka" has no '='`},
		"listener port not a number": {key: AnnotationListeners, value: "kafka=x", want: `containerPort "x" is not a port number`},
		"listener name too long":     {key: AnnotationListeners, value: "schema-registry-x=8084", want: "is not a valid port name"},
		"listeners share a port":     {key: AnnotationListeners, value: "kafka=9094,http=9094", want: `listeners "kafka" and "http" share containerPort 9094`},
		"listeners empty":            {key: AnnotationListeners, value: "", want: `"" has no '='; want name=containerPort pairs`},
		"port base zero":             {key: AnnotationPortBase, value: "0", want: "must be a port number from 1 to 65535"},
		"port base block past 65535": {key: AnnotationPortBase, value: "65530", want: "a block of 8 ports"},
		"max brokers negative":       {key: AnnotationMaxBrokers, value: "-1", want: "from 1 to 1000"},
		"address type unknown":       {key: AnnotationAddressTypes, value: "ExternalIP,Public", want: `"Public" is not a node address type; accepted`},
		"address type twice":         {key: AnnotationAddressTypes, value: "ExternalIP,ExternalIP", want: "listed twice"},
		"host template syntax":       {key: AnnotationHostTemplate, value: "{{.Node", want: "{{ without }}"},
		"host template function":     {key: AnnotationHostTemplate, value: "{{lower .Node}}.example.com", want: `"{{lower .Node}}" is not a field`},
		"host template bad host":     {key: AnnotationHostTemplate, value: "{{.Node}}..example.com", want: "an empty label"},
		"advertise env reserved":     {key: AnnotationAdvertiseEnv, value: "BROKERPORT_X", want: "not brokerport's own"},
		"advertise env vs flavor":    {key: AnnotationAdvertiseEnv, value: "LISTENERS_ADV", extra: map[string]string{AnnotationFlavor: "kafka"}, want: "make it KAFKA_ADVERTISED_LISTENERS"},
		"container not a name":       {key: AnnotationContainer, value: "-x", want: "DNS-1123 label"},
		"flavor unknown":             {key: AnnotationFlavor, value: "strimzi", want: `accepted values: "kafka"`},
		"listener name lower case":   {key: AnnotationListenerName, value: "external", want: "upper-case letters"},
		"security protocol unknown":  {key: AnnotationSecurityProtocol, value: "TLS", want: "accepted values: PLAINTEXT, SSL"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			annotations := map[string]string{tc.key: tc.value}
			for k, v := range tc.extra {
				annotations[k] = v
			}
			_, errs := ParseConfig(annotations, field.NewPath("metadata", "annotations"), DefaultOptions())
			require.Len(t, errs, 1)
			assert.Equal(t, "metadata.annotations["+tc.key+"]", errs[0].Field)
			assert.Contains(t, errs[0].Error(), tc.want)
		})
	}
}

// No annotation value, however large, makes a denial long: each error repeats at most the start
// of the value (the webhook answers within the API server's limits, and `render` prints it).
func TestParseConfigHugeValuesGiveShortErrors(t *testing.T) {
	const size = 3 << 20
	tests := map[string]map[string]string{
		// "1{1{...": invalid for every annotation (no '=', not a number, not an env var name, ...).
		"every annotation invalid": {},
		// A valid, huge advertise-env refused because of the flavor: the value is repeated.
		"advertise-env against the flavor": {AnnotationAdvertiseEnv: strings.Repeat("X", size), AnnotationFlavor: "kafka"},
		// Listeners whose parts the detail repeats as well.
		"huge listener name":  {AnnotationListeners: strings.Repeat("k", size) + "=9094"},
		"huge listener port":  {AnnotationListeners: "kafka=" + strings.Repeat("9", size)},
		"huge address type":   {AnnotationAddressTypes: "ExternalIP," + strings.Repeat("\x00", size/4)},
		"huge host template":  {AnnotationHostTemplate: "{{" + strings.Repeat("range 3000000", size/13) + "}}"},
		"host template bomb":  {AnnotationHostTemplate: "{{range 3000000}}abcdefghij{{end}}"},
		"escaped bytes count": {AnnotationContainer: strings.Repeat("\x00", size)},
	}
	for _, key := range configAnnotations {
		tests["every annotation invalid"][key] = strings.Repeat("1{", size/2)
	}
	for name, annotations := range tests {
		t.Run(name, func(t *testing.T) {
			_, errs := ParseConfig(annotations, field.NewPath("metadata", "annotations"), DefaultOptions())
			require.NotEmpty(t, errs)
			if name == "every annotation invalid" {
				assert.Len(t, errs, len(configAnnotations), "each annotation is reported")
			}
			for _, e := range errs {
				assert.Less(t, len(e.Error()), 300, "%s", e.Error())
			}
			assert.Less(t, len(errs.ToAggregate().Error()), 300*len(errs))
		})
	}
}

func TestClipPart(t *testing.T) {
	assert.Equal(t, "Kafka_External", clipPart("Kafka_External"), "a usual size in full")
	assert.Equal(t, strings.Repeat("k", 32), clipPart(strings.Repeat("k", 32)))
	assert.Equal(t, "kkkkkkkkkkkk… (33 bytes)", clipPart(strings.Repeat("k", 33)))
}
