package patches

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
)

// TLS for the external listener: brokerport knows the address each broker advertises (its node's
// at binding, or its load balancer's), so it can have cert-manager issue each broker a
// certificate that names that address, and clients can verify the broker's hostname. The
// Certificate is the controller's (one per broker, SANs from the broker's current host and its
// in-cluster names); the pod mutation mounts its Secret, known by the pod's ordinal; the gate
// holds the broker back until the certificate names the host it advertises.

// IssuerRef names the cert-manager Issuer (in the StatefulSet's namespace) or ClusterIssuer.
type IssuerRef struct {
	Kind string // "Issuer" or "ClusterIssuer"
	Name string
}

func (r IssuerRef) String() string { return r.Kind + "/" + r.Name }

// parseIssuer reads brokerport.io/tls-issuer: "<name>" (an Issuer), "Issuer/<name>" or
// "ClusterIssuer/<name>".
func parseIssuer(v string) (*IssuerRef, error) {
	kind, name, ok := strings.Cut(v, "/")
	if !ok {
		kind, name = cmapi.IssuerKind, v
	}
	if kind != cmapi.IssuerKind && kind != cmapi.ClusterIssuerKind {
		return nil, fmt.Errorf(`kind %q: accepted "<issuer>", "Issuer/<issuer>" or "ClusterIssuer/<issuer>"`, clipPart(kind))
	}
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return nil, fmt.Errorf("%q is not the name of a cert-manager %s (a DNS subdomain)", clipPart(name), kind)
	}
	return &IssuerRef{Kind: kind, Name: name}, nil
}

// TLS paths in the broker's containers and the gate.
const (
	tlsVolume = "brokerport-tls"
	// TLSDir is where a broker's certificate Secret is mounted: tls.crt, tls.key, ca.crt and
	// tls-combined.pem (key and chain in one file, as Kafka's PEM keystore reads it). Not under
	// the gate's read-only /etc/brokerport, where the runtime could not make its mount point.
	TLSDir = "/etc/brokerport-tls"
	// tlsCombined is the Secret key of cert-manager's CombinedPEM output format.
	tlsCombined = "tls-combined.pem"
)

// TLSSecretName is the name of broker ordinal's certificate Secret, and of its Certificate.
func TLSSecretName(cluster string, ordinal int) string {
	return BrokerServiceName(cluster, ordinal) + "-tls"
}

// BrokerCertificate is broker ordinal's cert-manager Certificate: its SANs are host (the address
// it advertises: an IP address or a DNS name) and its names inside the cluster (through the
// StatefulSet's governing Service), so that one certificate serves every listener.
func BrokerCertificate(sts *appsv1.StatefulSet, cfg Config, ordinal int, host string) *cmapi.Certificate {
	name := TLSSecretName(sts.Name, ordinal)
	labels := map[string]string{LabelCluster: sts.Name, LabelManagedBy: ManagedByValue}
	cert := &cmapi.Certificate{
		TypeMeta: metav1.TypeMeta{APIVersion: cmapi.SchemeGroupVersion.String(), Kind: cmapi.CertificateKind},
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: sts.Namespace, Labels: labels,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(sts, appsv1.SchemeGroupVersion.WithKind("StatefulSet"))},
		},
		Spec: cmapi.CertificateSpec{
			SecretName:     name,
			SecretTemplate: &cmapi.CertificateSecretTemplate{Labels: labels},
			IssuerRef:      cmmeta.IssuerReference{Group: "cert-manager.io", Kind: cfg.TLSIssuer.Kind, Name: cfg.TLSIssuer.Name},
			// PKCS#8: Kafka's PEM keystore reads no other encoding. A new key on every issue, so
			// that a broker that moves does not keep the key of its last address.
			PrivateKey: &cmapi.CertificatePrivateKey{
				Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256, Encoding: cmapi.PKCS8,
				RotationPolicy: cmapi.RotationPolicyAlways,
			},
			Usages:                  []cmapi.KeyUsage{cmapi.UsageServerAuth, cmapi.UsageDigitalSignature, cmapi.UsageKeyEncipherment},
			AdditionalOutputFormats: []cmapi.CertificateAdditionalOutputFormat{{Type: cmapi.CertificateOutputFormatCombinedPEM}},
		},
	}
	if ip := net.ParseIP(host); ip != nil {
		cert.Spec.IPAddresses = []string{ip.String()}
	} else if host != "" {
		cert.Spec.DNSNames = []string{host}
	}
	pod := fmt.Sprintf("%s-%d", sts.Name, ordinal)
	if svc := sts.Spec.ServiceName; svc != "" {
		// Only the names that end in the cluster's own domain: the short forms <pod>.<service>
		// and <pod>.<service>.<namespace> are names the tenant chose (a StatefulSet "paypal"
		// with serviceName "com" would have "paypal-0.com" certified).
		for _, suffix := range []string{"." + sts.Namespace + ".svc", "." + sts.Namespace + ".svc.cluster.local"} {
			if n := pod + "." + svc + suffix; !slices.Contains(cert.Spec.DNSNames, n) {
				cert.Spec.DNSNames = append(cert.Spec.DNSNames, n)
			}
		}
	}
	return cert
}

// CertificateNames tells whether a Certificate's spec names host, and whether it is issued for
// that spec (Ready, and of the spec's generation).
func CertificateNames(cert *cmapi.Certificate, host string) (named, issued bool) {
	ip := net.ParseIP(host)
	named = (ip != nil && slices.ContainsFunc(cert.Spec.IPAddresses, func(a string) bool { return ip.Equal(net.ParseIP(a)) })) ||
		(ip == nil && host != "" && slices.Contains(cert.Spec.DNSNames, host))
	for _, c := range cert.Status.Conditions {
		if c.Type == cmapi.CertificateConditionReady {
			issued = c.Status == cmmeta.ConditionTrue && c.ObservedGeneration == cert.Generation
		}
	}
	return named, issued
}

// mountTLS mounts broker ordinal's certificate Secret in the broker container and its init
// containers (a configurator may copy it) and tells them where: BROKERPORT_TLS_DIR. The volume is
// optional: the Secret comes after the pod (its SANs need the pod's host), and the gate, not the
// kubelet, is what waits for it, saying why.
func mountTLS(pod *corev1.Pod, broker Broker) {
	volume := corev1.Volume{Name: tlsVolume, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName: TLSSecretName(broker.Cluster, broker.Ordinal), Optional: ptr.To(true),
	}}}
	if i := slices.IndexFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == tlsVolume }); i >= 0 {
		pod.Spec.Volumes[i] = volume
	} else {
		pod.Spec.Volumes = append(pod.Spec.Volumes, volume)
	}
	mount := corev1.VolumeMount{Name: tlsVolume, MountPath: TLSDir, ReadOnly: true}
	for _, list := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for i := range list {
			c := &list[i]
			if j := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == tlsVolume }); j >= 0 {
				c.VolumeMounts[j] = mount
			} else if c.Name == GateContainer || slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == tlsDirVar }) {
				c.VolumeMounts = append(c.VolumeMounts, mount)
			}
		}
	}
}

// tlsDirVar tells the broker where its certificate is.
const tlsDirVar = EnvPrefix + "TLS_DIR"

// kafkaTLSEnv are the flavor's settings of the external listener's keystore: Kafka's PEM
// keystore, read from the combined key-and-chain file (listener.name.<listener>.ssl.keystore.*).
func kafkaTLSEnv(cfg Config) []corev1.EnvVar {
	// The images turn "_" into "." and "__" into "_": EXTERNAL_TLS is listener.name.external_tls.
	prefix := cfg.Flavor.envPrefix() + "LISTENER_NAME_" + strings.ReplaceAll(cfg.ListenerName, "_", "__") + "_SSL_KEYSTORE_"
	return []corev1.EnvVar{
		{Name: prefix + "TYPE", Value: "PEM"},
		{Name: prefix + "LOCATION", Value: TLSDir + "/" + tlsCombined},
	}
}

// setEnv sets each variable in the container, refusing one the user set to something else.
func setEnv(c *corev1.Container, vars []corev1.EnvVar, envPath *field.Path) *field.Error {
	for _, v := range vars {
		i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == v.Name })
		switch {
		case i < 0:
			c.Env = append(c.Env, v)
		case c.Env[i].Value != v.Value || c.Env[i].ValueFrom != nil:
			return field.Invalid(envPath.Index(i), v.Name, fmt.Sprintf("with %s brokerport sets %s=%s (the certificate it mounts); remove it from the container", AnnotationTLSIssuer, v.Name, v.Value))
		}
	}
	return nil
}

// needsGate refuses a configuration whose brokers must wait for something (their load
// balancer's address, their certificate) when there is no gate to make them wait.
func needsGate(cfg Config, opts Options) *field.Error {
	if opts.GateImage != "" {
		return nil
	}
	annotations := field.NewPath("metadata", "annotations")
	switch {
	case cfg.LoadBalanced():
		return field.Invalid(annotations.Key(AnnotationStrategy), string(StrategyLoadBalancer), "the broker must wait for its load balancer's address, which needs brokerport's gate: run brokerport serve with --gate-image (the install manifests do)")
	case cfg.TLSIssuer != nil:
		return field.Invalid(annotations.Key(AnnotationTLSIssuer), cfg.TLSIssuer.String(), "the broker must wait for a certificate that names its address, which needs brokerport's gate: run brokerport serve with --gate-image (the install manifests do)")
	}
	return nil
}

// Which hosts a certificate may name. brokerport asks an issuer, with its own identity, for a
// certificate whose key lands in the tenant's Secret: a name in it must be one brokerport derived,
// not one a tenant wrote. A node's address (by the address-types preference) and the ingress of
// brokerport's own LoadBalancer Service are derived; what a host template gives is the tenant's
// text, certified only where an admin allowed it for that issuer (serve --tls-allowed-hosts). The
// in-cluster names BrokerCertificate adds are derived from the StatefulSet's own pod and
// governing Service in its namespace.

// FlagTLSAllowedHosts is the serve flag that allows, per issuer, the hosts of a host template.
const FlagTLSAllowedHosts = "--tls-allowed-hosts"

// HostSource is where a broker's advertised host came from.
type HostSource uint8

const (
	// HostSourceUnknown: the facts changed while they were read (the node's addresses, between
	// two reads of the cache); nothing is decided on it.
	HostSourceUnknown HostSource = iota
	// HostFromNodeAddress: the node's first address of the preferred types (no host template, or
	// the template could not give this node a host).
	HostFromNodeAddress
	// HostFromLoadBalancer: the ingress of the broker's own LoadBalancer Service.
	HostFromLoadBalancer
	// HostFromTemplate: brokerport.io/host-template, the StatefulSet's text.
	HostFromTemplate
)

func (s HostSource) String() string {
	switch s {
	case HostFromNodeAddress:
		return "a node address"
	case HostFromLoadBalancer:
		return "the load balancer's ingress"
	case HostFromTemplate:
		return AnnotationHostTemplate
	}
	return "unknown"
}

// AdvertisedHostSource tells where host, what ObserveBroker gave a broker bound to node, came
// from, deciding as ObserveBroker does. The node is read only with a host template: a host is the
// template's unless the template could not give this node one (SelectAddress's fallback).
func AdvertisedHostSource(cfg Config, node *corev1.Node, host string) HostSource {
	switch {
	case cfg.LoadBalanced():
		return HostFromLoadBalancer
	case cfg.HostTemplate == nil:
		return HostFromNodeAddress
	case node == nil:
		return HostSourceUnknown
	}
	addr, err := SelectAddress(node, cfg)
	switch {
	case err != nil || addr.Host != host:
		return HostSourceUnknown
	case addr.Fallback != "":
		return HostFromNodeAddress
	}
	return HostFromTemplate
}

// AllowedIssuer is an issuer of --tls-allowed-hosts: a ClusterIssuer (Namespace ""), or the
// Issuer of one namespace (an Issuer of that name in another namespace is another issuer).
type AllowedIssuer struct {
	Kind, Namespace, Name string
}

func (a AllowedIssuer) String() string {
	if a.Kind == cmapi.IssuerKind {
		return a.Kind + "/" + a.Namespace + "/" + a.Name
	}
	return a.Kind + "/" + a.Name
}

// AllowedHosts are the hosts of a host template an admin allows an issuer to certify.
type AllowedHosts struct {
	// Suffixes, lower case and each starting with ".", allow the DNS names under them.
	Suffixes []string
	// Prefixes allow the IP addresses in them.
	Prefixes []netip.Prefix
}

// CertificateHosts is serve --tls-allowed-hosts: per issuer, the hosts of a host template
// brokerport may ask it to certify. Empty (the default): none.
type CertificateHosts map[AllowedIssuer]AllowedHosts

// certificateHostsSyntax is what a parse error offers.
const certificateHostsSyntax = `ISSUER=ENTRY,ENTRY;ISSUER=...: ISSUER is ClusterIssuer/<name> or Issuer/<namespace>/<name>, ENTRY a DNS suffix starting with "." or a CIDR, e.g. ClusterIssuer/brokers-ca=.kafka.example.com,10.0.0.0/8`

// ParseCertificateHosts reads --tls-allowed-hosts, e.g.
// "ClusterIssuer/brokers-ca=.kafka.example.com,10.0.0.0/8;Issuer/team-a/team-ca=.team-a.example.com".
// Spaces around entries are ignored; an empty group (a trailing ";") is skipped. An error names
// the bad entry.
func ParseCertificateHosts(v string) (CertificateHosts, error) {
	allow := CertificateHosts{}
	for _, group := range strings.Split(v, ";") {
		if group = strings.TrimSpace(group); group == "" {
			continue
		}
		key, list, ok := strings.Cut(group, "=")
		if !ok {
			return nil, fmt.Errorf("%q: no \"=\"; want %s", clip(group, maxEchoed), certificateHostsSyntax)
		}
		issuer, err := parseAllowedIssuer(strings.TrimSpace(key))
		if err != nil {
			return nil, err
		}
		if _, dup := allow[issuer]; dup {
			return nil, fmt.Errorf("%s is given twice: list all its hosts in one entry", issuer)
		}
		var hosts AllowedHosts
		for _, entry := range strings.Split(list, ",") {
			if entry = strings.TrimSpace(entry); entry == "" {
				continue
			}
			if err := hosts.add(entry); err != nil {
				return nil, fmt.Errorf("%s: %q: %w", issuer, clip(entry, maxEchoed), err)
			}
		}
		if len(hosts.Suffixes)+len(hosts.Prefixes) == 0 {
			return nil, fmt.Errorf("%s allows no host; want %s", issuer, certificateHostsSyntax)
		}
		allow[issuer] = hosts
	}
	return allow, nil
}

func parseAllowedIssuer(s string) (AllowedIssuer, error) {
	parts := strings.Split(s, "/")
	var a AllowedIssuer
	switch {
	case len(parts) == 2 && parts[0] == cmapi.ClusterIssuerKind:
		a = AllowedIssuer{Kind: parts[0], Name: parts[1]}
	case len(parts) == 3 && parts[0] == cmapi.IssuerKind:
		a = AllowedIssuer{Kind: parts[0], Namespace: parts[1], Name: parts[2]}
		if msgs := validation.IsDNS1123Label(a.Namespace); len(msgs) > 0 {
			return a, fmt.Errorf("%q: %q is not a namespace name", clip(s, maxEchoed), clipPart(a.Namespace))
		}
	case len(parts) == 2 && parts[0] == cmapi.IssuerKind:
		return a, fmt.Errorf("%q: an Issuer is namespaced: write Issuer/<namespace>/%s", clip(s, maxEchoed), clipPart(parts[1]))
	default:
		return a, fmt.Errorf("%q is not an issuer: write ClusterIssuer/<name> or Issuer/<namespace>/<name>", clip(s, maxEchoed))
	}
	if msgs := validation.IsDNS1123Subdomain(a.Name); len(msgs) > 0 {
		return a, fmt.Errorf("%q: %q is not the name of a cert-manager %s (a DNS subdomain)", clip(s, maxEchoed), clipPart(a.Name), a.Kind)
	}
	return a, nil
}

// add reads one entry: a DNS suffix (".kafka.example.com") or a CIDR ("10.0.0.0/8").
func (h *AllowedHosts) add(entry string) error {
	if strings.Contains(entry, "/") {
		p, err := netip.ParsePrefix(entry)
		switch {
		case err != nil:
			return errors.New("not a CIDR (e.g. 10.0.0.0/8, 2001:db8::/32)")
		case p != p.Masked():
			return fmt.Errorf("has bits set past its prefix length: %s?", p.Masked())
		}
		h.Prefixes = append(h.Prefixes, p)
		return nil
	}
	suffix, ok := strings.CutPrefix(entry, ".")
	if addr, err := netip.ParseAddr(entry); err == nil {
		return fmt.Errorf("one IP address is written as a CIDR: %s", netip.PrefixFrom(addr.WithZone(""), addr.BitLen()))
	} else if !ok {
		return fmt.Errorf(`neither a DNS suffix nor a CIDR: a suffix starts with "." (".%s" allows the names under it)`, clipPart(strings.TrimPrefix(entry, "*.")))
	}
	if _, err := netip.ParseAddr(suffix); err == nil || checkHost(suffix) != nil {
		return errors.New(`not a DNS suffix (".", then a DNS name: letters, digits, '-' and '.')`)
	}
	h.Suffixes = append(h.Suffixes, "."+strings.ToLower(suffix))
	return nil
}

// holds tells whether the entries allow host: an IP address in one of the prefixes (an
// IPv4-mapped IPv6 address as the IPv4 address a certificate names), a DNS name under one of the
// suffixes (in any case).
func (h AllowedHosts) holds(host string) bool {
	if ip := net.ParseIP(host); ip != nil {
		addr, _ := netip.AddrFromSlice(ip)
		return slices.ContainsFunc(h.Prefixes, func(p netip.Prefix) bool { return p.Contains(addr.Unmap()) })
	}
	host = strings.ToLower(host)
	return slices.ContainsFunc(h.Suffixes, func(s string) bool { return len(host) > len(s) && strings.HasSuffix(host, s) })
}

// CertificateHostAllowed decides whether brokerport may ask issuer (brokerport.io/tls-issuer of a
// StatefulSet in namespace) for a certificate naming host, which came from source: a host
// brokerport derived always, a host template's only when allow holds it for that issuer. The
// error says why not, naming the host, the issuer and the flag that would allow it.
func CertificateHostAllowed(namespace string, issuer IssuerRef, host string, source HostSource, allow CertificateHosts) error {
	switch source {
	case HostFromNodeAddress, HostFromLoadBalancer:
		return nil
	case HostFromTemplate:
	default:
		return fmt.Errorf("where host %s comes from is not known yet (its node changed as it was read)", host)
	}
	key := AllowedIssuer{Kind: issuer.Kind, Name: issuer.Name}
	if issuer.Kind == cmapi.IssuerKind {
		key.Namespace = namespace
	}
	if allow[key].holds(host) {
		return nil
	}
	return fmt.Errorf("%s gives host %s, which brokerport asks %s to certify only if %s allows it, and no DNS suffix or CIDR of %s there holds it, so no Certificate names it",
		AnnotationHostTemplate, host, issuer, FlagTLSAllowedHosts, key)
}
