package patches

import (
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
		"listeners empty":            {key: AnnotationListeners, value: "", want: "want name=containerPort pairs"},
		"port base zero":             {key: AnnotationPortBase, value: "0", want: "must be a port number from 1 to 65535"},
		"port base block past 65535": {key: AnnotationPortBase, value: "65530", want: "a block of 8 ports"},
		"max brokers negative":       {key: AnnotationMaxBrokers, value: "-1", want: "from 1 to 1000"},
		"address type unknown":       {key: AnnotationAddressTypes, value: "ExternalIP,Public", want: `"Public" is not a node address type; accepted`},
		"address type twice":         {key: AnnotationAddressTypes, value: "ExternalIP,ExternalIP", want: "listed twice"},
		"host template syntax":       {key: AnnotationHostTemplate, value: "{{.Node", want: "not a Go template"},
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
