package patches

import (
	"fmt"
	"path"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// The Redpanda chart (and the Redpanda Operator, which renders it) does not take its advertised
// addresses from the environment: its configurator init container runs configurator.sh, which
// writes redpanda.yaml with `rpk redpanda config set`, each external listener advertising
// "<pod name>:<the chart's NodePort>" (31092, 30082, ...). Flavor "redpanda" adds one init
// container right after the configurator, with the configurator's image and its redpanda.yaml
// volume, that sets each of brokerport's listeners' entries again, to the broker's node address
// and external port. The chart's script is left as it is.
//
// The chart names the container port of external listener <name> of the Kafka API
// "kafka-<name>" and of the HTTP proxy "http-<name>" (the name cut to 8 characters), and the
// configurator writes external listener k (in name order) at index k of
// redpanda.advertised_kafka_api and pandaproxy.advertised_pandaproxy_api, after the internal
// listener at 0. Admin and Schema Registry listeners advertise nothing: brokerport exposes them
// and there is nothing to rewrite.

// RedpandaAdvertiser is the name of the init container flavor "redpanda" adds.
const RedpandaAdvertiser = "brokerport-advertise"

// redpandaAPIs are the chart's port name prefixes of the APIs that advertise an address, and the
// redpanda.yaml key of their advertised listeners.
var redpandaAPIs = []struct{ prefix, key string }{
	{"kafka-", "redpanda.advertised_kafka_api"},
	{"http-", "pandaproxy.advertised_pandaproxy_api"},
}

// redpandaConfigDir is where the chart's configurator writes redpanda.yaml.
const redpandaConfigDir = "/etc/redpanda"

// RedpandaEntry is one advertised listener flavor "redpanda" sets.
type RedpandaEntry struct {
	Key      string // e.g. redpanda.advertised_kafka_api[1]
	Name     string // the chart's external listener name
	Listener Listener
}

// RedpandaEntries maps brokerport's listeners onto the chart's advertised listener entries, from
// the broker container's port names. The first listener must be a Kafka API one.
func RedpandaEntries(c *corev1.Container, cfg Config) ([]RedpandaEntry, *field.Error) {
	var out []RedpandaEntry
	for l, listener := range cfg.Listeners {
		p := tcpPortIndex(c.Ports, listener.ContainerPort)
		if p < 0 {
			if l == 0 {
				return nil, field.Invalid(field.NewPath("metadata", "annotations").Key(AnnotationListeners), listener.Name,
					fmt.Sprintf("flavor %q: container %q declares no containerPort %d; name the chart's external Kafka port (kafka-<listener>, 9094 by default)", FlavorRedpanda, c.Name, listener.ContainerPort))
			}
			continue
		}
		portName := c.Ports[p].Name
		api := slices.IndexFunc(redpandaAPIs, func(a struct{ prefix, key string }) bool { return strings.HasPrefix(portName, a.prefix) })
		if l == 0 && api != 0 {
			return nil, field.Invalid(field.NewPath("metadata", "annotations").Key(AnnotationListeners), listener.Name,
				fmt.Sprintf("flavor %q: the first listener must be an external Kafka API listener of the chart (a port named kafka-<listener>), and containerPort %d is %q", FlavorRedpanda, listener.ContainerPort, portName))
		}
		if api < 0 {
			continue // admin, schema registry: nothing advertised
		}
		var names []string
		for _, q := range c.Ports {
			if n, ok := strings.CutPrefix(q.Name, redpandaAPIs[api].prefix); ok {
				names = append(names, n)
			}
		}
		slices.Sort(names)
		name := strings.TrimPrefix(portName, redpandaAPIs[api].prefix)
		out = append(out, RedpandaEntry{
			Key:      fmt.Sprintf("%s[%d]", redpandaAPIs[api].key, slices.Index(names, name)+1),
			Name:     name,
			Listener: listener,
		})
	}
	return out, nil
}

// RedpandaScript is what the advertiser runs: one `rpk redpanda config set` per entry, with the
// host and port from brokerport's variables. Redpanda keeps an advertised address as host and
// port apart, so the host goes in without brackets, IPv6 or not.
func RedpandaScript(configFile string, entries []RedpandaEntry) string {
	lines := []string{"set -e"}
	for _, e := range entries {
		lines = append(lines, fmt.Sprintf(`rpk redpanda config --config %q set %s "{\"address\":\"${%sHOST}\",\"name\":\"%s\",\"port\":${%s}}"`,
			configFile, e.Key, EnvPrefix, e.Name, portVar(e.Listener)))
	}
	return strings.Join(lines, "\n")
}

// advertiseRedpanda puts the advertiser right after the chart's configurator: the last init
// container that mounts /etc/redpanda.
func advertiseRedpanda(pod *corev1.Pod, ci int, cfg Config) *field.Error {
	entries, err := RedpandaEntries(&pod.Spec.Containers[ci], cfg)
	if err != nil {
		return err
	}
	pod.Spec.InitContainers = slices.DeleteFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == RedpandaAdvertiser })
	configurator, mount := -1, corev1.VolumeMount{}
	for i, c := range pod.Spec.InitContainers {
		for _, m := range c.VolumeMounts {
			if path.Clean(m.MountPath) == redpandaConfigDir && !m.ReadOnly {
				configurator, mount = i, m
			}
		}
	}
	if configurator < 0 {
		return field.Required(field.NewPath("spec", "initContainers"),
			fmt.Sprintf("flavor %q completes the Redpanda chart's configurator, and no init container mounts %s writable; remove %s or use the chart", FlavorRedpanda, redpandaConfigDir, AnnotationFlavor))
	}
	from := pod.Spec.InitContainers[configurator]
	advertiser := corev1.Container{
		Name:            RedpandaAdvertiser,
		Image:           from.Image,
		ImagePullPolicy: from.ImagePullPolicy,
		Command:         []string{"/bin/bash", "-c", RedpandaScript(path.Join(redpandaConfigDir, "redpanda.yaml"), entries)},
		VolumeMounts:    []corev1.VolumeMount{{Name: mount.Name, MountPath: redpandaConfigDir}},
		SecurityContext: from.SecurityContext.DeepCopy(),
		// The configurator's own requests and limits, whatever the chart's values make them: rpk
		// needs what it needs there.
		Resources: *from.Resources.DeepCopy(),
	}
	pod.Spec.InitContainers = slices.Insert(pod.Spec.InitContainers, configurator+1, advertiser)
	return nil
}
