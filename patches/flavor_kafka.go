package patches

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Flavors kafka and bitnami: what Kafka does when the listener security protocol map is not set,
// and brokers whose command script sets the advertised listeners itself.

// kafkaDefaultProtocolMap is listener.security.protocol.map's default: every security protocol
// mapped to the listener of the same name (SocketServerConfigs.LISTENER_SECURITY_PROTOCOL_MAP_DEFAULT,
// built from the SecurityProtocol enum: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL).
var kafkaDefaultProtocolMap = securityProtocols

// effectiveProtocolMap is the map Kafka uses for a broker container that does not set
// <prefix>LISTENER_SECURITY_PROTOCOL_MAP, written out so that brokerport can add its listener to it
// without changing what any other listener means. From Kafka's sources (apache/kafka at
// 1eb7644349cb07139d6a3c1ad1986979647cac99, 2024-10-25, core/src/main/scala/kafka/server/
// KafkaConfig.scala, effectiveListenerSecurityProtocolMap): the default map, and, under KRaft
// (process.roles set) when the map was not given, each controller listener name
// (controller.listener.names) mapped to PLAINTEXT, unless a controller listener name or a listener
// name of `listeners` is SSL, SASL_PLAINTEXT or SASL_SSL (then nothing is added). Once the map is
// written the KRaft addition stops, hence the controller entries here.
//
// The apache/kafka image builds server.properties from the KAFKA_* variables alone when any is set
// (KafkaDockerWrapper.prepareServerConfigs), so the code's default is what applies; Bitnami's
// base file maps CONTROLLER:PLAINTEXT and the four defaults, which this agrees with wherever the
// result is accepted.
//
// When the effective map cannot be known (a variable it depends on is valueFrom or refers to
// another variable) or leaves a listener unmapped (Kafka would refuse to start), the error says
// exactly what to add.
//
// external is brokerport's listener name, already appended to <prefix>LISTENERS: its entry is
// brokerport's to add.
func effectiveProtocolMap(c *corev1.Container, prefix, external string, envPath *field.Path) (string, *field.Error) {
	mapVar := prefix + "LISTENER_SECURITY_PROTOCOL_MAP"
	addIt := func(example string) string {
		return fmt.Sprintf("add %s to container %q with the security protocol of every listener (for example %q); brokerport appends its own entry to it", mapVar, c.Name, example)
	}
	read := func(name string) (string, *field.Error) {
		i := slices.IndexFunc(c.Env, func(v corev1.EnvVar) bool { return v.Name == name })
		if i < 0 {
			return "", nil
		}
		if c.Env[i].ValueFrom != nil || strings.Contains(c.Env[i].Value, "$(") {
			path := envPath.Index(i).Child("value")
			if c.Env[i].ValueFrom != nil {
				path = envPath.Index(i).Child("valueFrom")
			}
			return "", field.Invalid(path, name, fmt.Sprintf("%s is not set, and Kafka's map then depends on %s, which brokerport cannot read here; %s", mapVar, name, addIt("PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT")))
		}
		return c.Env[i].Value, nil
	}
	listeners, err := read(prefix + "LISTENERS")
	if err != nil {
		return "", err
	}
	controllers, err := read(prefix + "CONTROLLER_LISTENER_NAMES")
	if err != nil {
		return "", err
	}
	roles, err := read(prefix + "PROCESS_ROLES")
	if err != nil {
		return "", err
	}

	var listenerNames []string
	for _, l := range splitList(listeners) {
		name, _, _ := strings.Cut(l, "://")
		listenerNames = append(listenerNames, name)
	}
	controllerNames := splitList(controllers)
	isSSLOrSASL := func(name string) bool { return name == "SSL" || name == "SASL_SSL" || name == "SASL_PLAINTEXT" }

	mapped := slices.Clone(kafkaDefaultProtocolMap)
	if strings.TrimSpace(roles) != "" && !slices.ContainsFunc(controllerNames, isSSLOrSASL) && !slices.ContainsFunc(listenerNames, isSSLOrSASL) {
		for _, name := range controllerNames {
			if n := strings.ToUpper(name); !slices.Contains(mapped, n) {
				mapped = append(mapped, n)
			}
		}
	}
	entries := make([]string, len(mapped))
	for i, name := range mapped {
		protocol := "PLAINTEXT"
		if slices.Contains(kafkaDefaultProtocolMap, name) {
			protocol = name
		}
		entries[i] = name + ":" + protocol
	}
	value := strings.Join(entries, ",")

	// Kafka normalises listener names to upper case (ListenerName.normalised).
	var unmapped []string
	for _, name := range append(listenerNames, controllerNames...) {
		if n := strings.ToUpper(name); n != external && !slices.Contains(mapped, n) && !slices.Contains(unmapped, n) {
			unmapped = append(unmapped, n)
		}
	}
	if len(unmapped) > 0 {
		example := value
		for _, n := range unmapped {
			example += "," + n + ":<its security protocol>"
		}
		return "", field.Required(envPath, fmt.Sprintf("%s is not set, and Kafka's map then has no security protocol for listener %s; %s", mapVar, clip(strings.Join(unmapped, ", "), maxEchoed), addIt(clip(example, 4*maxEchoed))))
	}
	return value, nil
}

// splitList splits a comma-separated Kafka list, dropping blanks.
func splitList(list string) []string {
	var out []string
	for _, e := range strings.Split(list, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// scriptAssignment finds "NAME=" in a shell script (export NAME=..., NAME=... cmd).
var scriptAssignment = regexp.MustCompile(`(?:^|[^A-Za-z0-9_])((?:KAFKA_CFG_|KAFKA_)ADVERTISED_LISTENERS)=`)

// scriptSetsAdvertised names the advertised-listeners variable a container's command or args
// set in a script while its env does not define it ("" if none): the container then advertises
// what the script says, which brokerport cannot append to (a published cp-kafka tutorial exports
// KAFKA_ADVERTISED_LISTENERS before /etc/confluent/docker/run).
func scriptSetsAdvertised(c corev1.Container) string {
	for _, s := range append(slices.Clone(c.Command), c.Args...) {
		if m := scriptAssignment.FindStringSubmatch(s); m != nil {
			if !slices.ContainsFunc(c.Env, func(v corev1.EnvVar) bool { return v.Name == m[1] }) {
				return m[1]
			}
		}
	}
	return ""
}

// scriptRecipe says how a script that sets the advertised listeners itself adds brokerport's
// listener (README, "A custom init script").
func scriptRecipe(cfg Config, advertised string) string {
	prefix := strings.TrimSuffix(advertised, "ADVERTISED_LISTENERS")
	name, listener := cfg.ListenerName, cfg.Listeners[0]
	return fmt.Sprintf(`container's script sets %s itself, so brokerport cannot append to it (and %s would refuse the brokers): append ",%s://${%s}" to %s in the script, "%s://:%d" to %sLISTENERS and "%s:%s" to %sLISTENER_SECURITY_PROTOCOL_MAP, with no flavor (README, "A custom init script")`,
		advertised, AnnotationFlavor, name, addressVar(listener), advertised, name, listener.ContainerPort, prefix, name, cfg.SecurityProtocol, prefix)
}
