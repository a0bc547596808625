package main

import (
	"flag"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/brokerport/brokerport/patches"
)

func TestOptionFlags(t *testing.T) {
	tests := map[string]struct {
		args    []string
		want    patches.Options
		wantErr string
	}{
		"defaults": {want: patches.DefaultOptions()},
		"a wider range and another preference": {
			args: []string{"--port-range=31000-31999", "--address-types=InternalIP,ExternalIP"},
			want: patches.Options{PortRange: patches.PortRange{First: 31000, Last: 31999}, AddressTypes: []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeExternalIP},
				GateResources: patches.GateResources(patches.DefaultGateCPU, patches.DefaultGateMemory)},
		},
		"a range upside down":     {args: []string{"--port-range=30085-30000"}, wantErr: `--port-range: port range "30085-30000": want FIRST-LAST`},
		"an unknown address type": {args: []string{"--address-types=PublicIP"}, wantErr: `--address-types: "PublicIP" is not a node address type`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			options := optionFlags(fs)
			require.NoError(t, fs.Parse(tc.args))
			got, err := options()
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestGateResources(t *testing.T) {
	got, err := gateResources("20m", "64Mi")
	require.NoError(t, err)
	assert.Equal(t, "20m", got.Limits.Cpu().String())
	assert.Equal(t, "64Mi", got.Requests.Memory().String())
	_, err = gateResources("lots", "64Mi")
	assert.ErrorContains(t, err, `--gate-cpu "lots"`)
}

func TestReorderFlagsLetsFlagsFollowTheName(t *testing.T) {
	assert.Equal(t, []string{"-n", "kafka", "redpanda"}, reorderFlags([]string{"redpanda", "-n", "kafka"}))
	assert.Equal(t, []string{"-n=kafka", "redpanda"}, reorderFlags([]string{"redpanda", "-n=kafka"}))
}
