// Command brokerport is the webhook server and its offline tools. This file parses flags and
// wires packages together; what brokerport does lives in patches/ and webhook/.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/brokerport/brokerport/certs"
	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/webhook"
	"github.com/brokerport/brokerport/webhook/controller"
	"github.com/brokerport/brokerport/webhook/gate"
	"github.com/brokerport/brokerport/webhook/matchconditions"
	"github.com/brokerport/brokerport/webhook/probe"
	"github.com/brokerport/brokerport/webhook/render"
)

const usage = `brokerport exposes every Kafka-API broker of a labeled StatefulSet on its own node.

Usage:
  brokerport serve  [flags]                run the admission webhook and the companion controller
  brokerport render -f FILE [--nodes FILE] show what the webhook would do to a manifest, offline
  brokerport addresses STS [-n NAMESPACE]  print a StatefulSet's published broker addresses
  brokerport check STS [-n NS] [--from-here] check every broker answers where it is published
  brokerport wait-address [--file FILE]    (init container) wait until the broker's host is set

Run "brokerport COMMAND -h" for a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "serve":
		err = serve(args)
	case "render":
		err = renderCmd(args)
	case "addresses":
		err = addresses(args)
	case "check":
		err = check(args)
	case "wait-address":
		err = waitAddress(args)
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "brokerport: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "brokerport %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// optionFlags registers the settings shared by serve and render.
func optionFlags(fs *flag.FlagSet) func() (patches.Options, error) {
	portRange := fs.String("port-range", patches.DefaultPortRange.String(), "ports brokerport assigns blocks from (the API server's NodePort static band by default)")
	addressTypes := fs.String("address-types", "ExternalDNS,ExternalIP,InternalDNS,InternalIP,Hostname", "node address preference for StatefulSets that set none")
	return func() (patches.Options, error) {
		opts := patches.DefaultOptions()
		r, err := patches.ParsePortRange(*portRange)
		if err != nil {
			return opts, fmt.Errorf("--port-range: %w", err)
		}
		opts.PortRange = r
		cfg, errs := patches.ParseConfig(map[string]string{patches.AnnotationAddressTypes: *addressTypes}, nil, opts)
		if len(errs) > 0 {
			return opts, fmt.Errorf("--address-types: %s", errs[0].Detail)
		}
		opts.AddressTypes = cfg.AddressTypes
		return opts, nil
	}
}

// gateResources checks the gate's quantities before patches.GateResources parses them.
func gateResources(cpu, memory string) (corev1.ResourceRequirements, error) {
	if _, err := resource.ParseQuantity(cpu); err != nil {
		return corev1.ResourceRequirements{}, fmt.Errorf("--gate-cpu %q: %w", cpu, err)
	}
	if _, err := resource.ParseQuantity(memory); err != nil {
		return corev1.ResourceRequirements{}, fmt.Errorf("--gate-memory %q: %w", memory, err)
	}
	return patches.GateResources(cpu, memory), nil
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	certDir := fs.String("cert-dir", "/tmp/k8s-webhook-server/serving-certs", "directory holding tls.crt and tls.key (reloaded when they change)")
	port := fs.Int("port", 9443, "webhook listener port")
	metricsAddr := fs.String("metrics-bind-address", ":8443", "Prometheus metrics address (0 to disable)")
	metricsSecure := fs.Bool("metrics-secure", true, "serve metrics over HTTPS (self-signed) to callers the API server authenticates (TokenReview) and authorizes to get /metrics (SubjectAccessReview; ClusterRole brokerport-metrics-reader); false: plain HTTP, open to anyone who reaches the port")
	probeAddr := fs.String("health-probe-bind-address", ":8081", "/healthz and /readyz address")
	gateImage := fs.String("gate-image", "", "image of the init container that holds a broker back until its host is set (brokerport's own image); empty: no gate")
	gateCPU := fs.String("gate-cpu", patches.DefaultGateCPU, "cpu request and limit of the gate init container")
	gateMemory := fs.String("gate-memory", patches.DefaultGateMemory, "memory request and limit of the gate init container")
	bindingConditions := fs.Bool("binding-match-conditions", true, "keep the binding webhook's matchConditions equal to the opted-in StatefulSets, so that the API server calls brokerport for brokers' bindings only")
	leaderElect := fs.Bool("leader-elect", true, "run the companion controller only in the elected replica")
	namespace := fs.String("namespace", os.Getenv("POD_NAMESPACE"), "brokerport's own namespace: the leader election Lease and the self-managed certificate Secret (default: $POD_NAMESPACE)")
	selfManagedCerts := fs.Bool("self-managed-certs", false, "issue, share (Secret --cert-secret), write (--cert-dir), inject (--webhook-config) and renew the webhook's certificates, for clusters without cert-manager")
	certSecret := fs.String("cert-secret", "brokerport-webhook-tls", "Secret holding the self-managed certificates")
	webhookConfig := fs.String("webhook-config", "brokerport", "MutatingWebhookConfiguration whose caBundle the self-managed CA is written to")
	certHosts := fs.String("cert-hosts", "", "comma-separated DNS names and IPs of the self-managed serving certificate (default: the brokerport-webhook Service's names in --namespace)")
	certLifetime := fs.Duration("cert-lifetime", 0, "lifetime of the self-managed CA and serving certificate, renewed at 2/3 of it; for tests and short-lived clusters (default: CA 10 years, serving certificate 1 year)")
	certGrace := fs.Duration("cert-grace", certs.Options{}.Defaults().Grace, "how long the caBundle carries a new self-managed CA before a certificate it signed is served; shorter only for tests and short-lived clusters, and less than a third of --cert-lifetime")
	probePeriod := fs.Duration("probe-period", probe.DefaultPeriod, "how often the elected replica dials every broker address it computed (jittered ±10%); 0 turns the probe off")
	probeConcurrency := fs.Int("probe-concurrency", probe.DefaultConcurrency, "brokers probed at once (each broker gets one connection at a time)")
	probeHostTemplates := fs.Bool("probe-host-templates", false, "also dial, from inside the cluster, broker hosts made by a StatefulSet's brokerport.io/host-template (its author's choice, so off by default: such brokers are published and said not probed)")
	var tlsAllowedHosts []string
	fs.Func(strings.TrimPrefix(patches.FlagTLSAllowedHosts, "--"), `per cert-manager issuer, the hosts a StatefulSet's brokerport.io/host-template may give that brokerport asks that issuer (brokerport.io/tls-issuer) to certify; a host from a node's addresses or from brokerport's load balancer needs no entry. ISSUER=ENTRY,ENTRY;ISSUER=...: ISSUER is ClusterIssuer/<name> or Issuer/<namespace>/<name>, ENTRY a DNS suffix starting with "." (.kafka.example.com allows b0.kafka.example.com, not kafka.example.com) or a CIDR (10.0.0.0/8, 2001:db8::/32, 203.0.113.7/32); repeatable, each issuer once, e.g. --tls-allowed-hosts='ClusterIssuer/brokers-ca=.kafka.example.com,10.0.0.0/8;Issuer/team-a/team-ca=.team-a.example.com' (default: none; a host template's host gets no certificate)`, func(v string) error {
		tlsAllowedHosts = append(tlsAllowedHosts, v)
		return nil
	})
	options := optionFlags(fs)
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	opts, err := options()
	if err != nil {
		return err
	}
	certificateHosts, err := patches.ParseCertificateHosts(strings.Join(tlsAllowedHosts, ";"))
	if err != nil {
		return fmt.Errorf("%s: %w", patches.FlagTLSAllowedHosts, err)
	}
	if *certLifetime != 0 && (*certLifetime < 0 || *certGrace >= *certLifetime/3) {
		return fmt.Errorf("--cert-grace %s must be less than a third of --cert-lifetime %s: a CA must be published for the grace period before the previous one expires", *certGrace, *certLifetime)
	}
	opts.GateImage = *gateImage
	if opts.GateResources, err = gateResources(*gateCPU, *gateMemory); err != nil {
		return err
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	scheme := webhook.Scheme()
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                  scheme,
		Cache:                   webhook.CacheOptions(),
		Metrics:                 metricsOptions(*metricsAddr, *metricsSecure),
		HealthProbeBindAddress:  *probeAddr,
		LeaderElection:          *leaderElect,
		LeaderElectionID:        "brokerport-controller",
		LeaderElectionNamespace: *namespace,
		// The process exits right after the manager stops, so handing the lease over at once is
		// safe, and the next replica's controller starts without waiting for it to expire.
		LeaderElectionReleaseOnCancel: true,
		WebhookServer: ctrlwebhook.NewServer(ctrlwebhook.Options{
			Port: *port, CertDir: *certDir, TLSOpts: webhook.TLSOptions(),
		}),
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	ctx := ctrl.SetupSignalHandler()
	if *selfManagedCerts {
		hosts := []string{"brokerport-webhook." + *namespace + ".svc", "brokerport-webhook." + *namespace + ".svc.cluster.local"}
		if *certHosts != "" {
			hosts = strings.Split(*certHosts, ",")
		}
		direct, err := client.New(mgr.GetConfig(), client.Options{Scheme: scheme})
		if err != nil {
			return err
		}
		certManager := certs.NewManager(direct, certs.Options{
			Namespace: *namespace, SecretName: *certSecret, WebhookConfig: *webhookConfig, Hosts: hosts, CertDir: *certDir,
			CALifetime: *certLifetime, Lifetime: *certLifetime, Grace: *certGrace,
		})
		// The webhook server needs its files before it starts; renewals run beside it.
		if _, err := certManager.Ensure(ctx); err != nil {
			return fmt.Errorf("self-managed certificates: %w", err)
		}
		if err := mgr.Add(certManager); err != nil {
			return err
		}
	}
	// The controller writes, and brokerport says ready, only once the API server enforces its
	// policies on its own identity (checked with dry-run writes, direct to the API server).
	gateClient, err := client.New(mgr.GetConfig(), client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	gate := &webhook.PolicyGate{Client: gateClient}
	if err := mgr.Add(gate); err != nil {
		return err
	}
	// Start the informers with the manager, so that readiness can wait for them.
	if err := startInformers(ctx, mgr); err != nil {
		return err
	}
	clusters := webhook.NewClusters()
	stsInformer, err := mgr.GetCache().GetInformer(ctx, &appsv1.StatefulSet{})
	if err != nil {
		return fmt.Errorf("starting the StatefulSet informer: %w", err)
	}
	if _, err := stsInformer.AddEventHandler(clusters.EventHandler()); err != nil {
		return fmt.Errorf("watching StatefulSets: %w", err)
	}
	snapshot := webhook.ReaderSnapshot{Reader: mgr.GetCache(), Live: mgr.GetAPIReader(), Options: opts}
	recorder := mgr.GetEventRecorder("brokerport")
	statefulSets := webhook.Register(mgr.GetWebhookServer(), snapshot, recorder, opts)
	if _, err := stsInformer.AddEventHandler(statefulSets.EventHandler()); err != nil {
		return fmt.Errorf("watching StatefulSets: %w", err)
	}
	mgr.GetWebhookServer().Register(webhook.PathBindings, webhook.CountedWebhook("bindings",
		webhook.NewBindingHandler(clusters, mgr.GetCache(), mgr.GetAPIReader(), snapshot, recorder, opts)))

	prober := &probe.Prober{Reader: mgr.GetCache(), Events: recorder, Options: opts, Period: *probePeriod, Concurrency: *probeConcurrency, HostTemplates: *probeHostTemplates}
	if err := mgr.Add(prober); err != nil {
		return fmt.Errorf("setting up the probe: %w", err)
	}
	reconciler := &controller.Reconciler{Client: mgr.GetClient(), API: mgr.GetAPIReader(), Events: recorder, Options: opts, MayWrite: gate.InForce, CertificateHosts: certificateHosts}
	if *probePeriod > 0 {
		reconciler.Reachability, reconciler.Targets, reconciler.ProbeChanges = prober, prober, prober.Changes()
	}
	if err := reconciler.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the controller: %w", err)
	}
	blocks := &controller.PortBlocksWriter{Cache: mgr.GetCache(), API: mgr.GetAPIReader(), Client: mgr.GetClient(), Namespace: *namespace, Options: opts, MayWrite: gate.InForce}
	if err := blocks.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the port blocks writer: %w", err)
	}
	if *bindingConditions {
		if err := matchconditions.Setup(mgr, matchconditions.Options{WebhookConfig: *webhookConfig}); err != nil {
			return fmt.Errorf("setting up the matchConditions controller: %w", err)
		}
	}

	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("policies", func(*http.Request) error { return gate.Ready() }); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("caches", func(req *http.Request) error {
		waitCtx, cancel := context.WithTimeout(req.Context(), time.Second)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(waitCtx) {
			return errors.New("informer caches have not synced yet")
		}
		return nil
	}); err != nil {
		return err
	}
	return mgr.Start(ctx)
}

// metricsOptions serves metrics over HTTPS behind the API server's authentication and
// authorization unless secure is false.
func metricsOptions(addr string, secure bool) metricsserver.Options {
	opts := metricsserver.Options{BindAddress: addr}
	if secure {
		opts.SecureServing = true
		opts.FilterProvider = filters.WithAuthenticationAndAuthorization
		opts.TLSOpts = webhook.TLSOptions()
	}
	return opts
}

func startInformers(ctx context.Context, mgr ctrl.Manager) error {
	for _, obj := range webhook.CachedTypes() {
		if _, err := mgr.GetCache().GetInformer(ctx, obj); err != nil {
			return fmt.Errorf("starting the %T informer: %w", obj, err)
		}
	}
	return nil
}

func renderCmd(args []string) error {
	fs := flag.NewFlagSet("render", flag.ExitOnError)
	file := fs.String("f", "", "manifest to render (multi-document YAML, e.g. helm template output; - for stdin)")
	nodesFile := fs.String("nodes", "", "Node objects to bind brokers to (default: node-0…node-N with ExternalIPs 203.0.113.1…, zones zone-a/b/c)")
	gateImage := fs.String("gate-image", "", "render the gate init container with this image, as serve --gate-image does (the install manifests set it; the loadbalancer strategy and tls-issuer need it)")
	options := optionFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *file == "" {
		return errors.New("-f FILE is required")
	}
	opts, err := options()
	if err != nil {
		return err
	}
	opts.GateImage = *gateImage
	objects, err := readObjects(*file)
	if err != nil {
		return err
	}
	var nodes []*corev1.Node
	if *nodesFile != "" {
		raw, err := readObjects(*nodesFile)
		if err != nil {
			return err
		}
		if nodes, err = render.DecodeNodes(raw); err != nil {
			return fmt.Errorf("--nodes %s: %w", *nodesFile, err)
		}
	} else {
		nodes = render.DefaultNodes(render.MostReplicas(objects))
	}
	res, err := render.Render(context.Background(), objects, nodes, opts)
	if err != nil {
		return err
	}
	for _, note := range res.Notes {
		fmt.Fprintln(os.Stderr, "note:", note)
	}
	return res.Write(os.Stdout)
}

func addresses(args []string) error {
	fs := flag.NewFlagSet("addresses", flag.ExitOnError)
	namespace := fs.String("n", "", "namespace of the StatefulSet (default: the kubeconfig's)")
	if err := fs.Parse(reorderFlags(args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: brokerport addresses STATEFULSET [-n NAMESPACE]")
	}
	sts := fs.Arg(0)
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(clientcmd.NewDefaultClientConfigLoadingRules(), &clientcmd.ConfigOverrides{})
	if *namespace == "" {
		ns, _, err := loader.Namespace()
		if err != nil {
			return fmt.Errorf("reading the kubeconfig's namespace: %w", err)
		}
		*namespace = ns
	}
	restConfig, err := loader.ClientConfig()
	if err != nil {
		return fmt.Errorf("reading the kubeconfig: %w", err)
	}
	c, err := client.New(restConfig, client.Options{Scheme: webhook.Scheme()})
	if err != nil {
		return err
	}
	cm := &corev1.ConfigMap{}
	key := client.ObjectKey{Namespace: *namespace, Name: controller.ConfigMapName(sts)}
	if err := c.Get(context.Background(), key, cm); err != nil {
		return fmt.Errorf("reading ConfigMap %s (is StatefulSet %s/%s labeled %s=%s?): %w", key, *namespace, sts, patches.LabelExpose, patches.ExposeValue, err)
	}
	fmt.Print(controller.Describe(cm))
	return nil
}

// reorderFlags lets flags follow the positional argument (`addresses redpanda -n kafka`).
func reorderFlags(args []string) []string {
	var flags, rest []string
	for i := 0; i < len(args); i++ {
		if strings.HasPrefix(args[i], "-") {
			flags = append(flags, args[i])
			if !strings.Contains(args[i], "=") && i+1 < len(args) {
				flags = append(flags, args[i+1])
				i++
			}
			continue
		}
		rest = append(rest, args[i])
	}
	return append(flags, rest...)
}

func waitAddress(args []string) error {
	fs := flag.NewFlagSet("wait-address", flag.ExitOnError)
	file := fs.String("file", patches.GateHostFile, "downward-API file holding the pod's brokerport.io/host annotation")
	tlsDir := fs.String("tls-dir", "", "directory of the broker's mounted certificate Secret: wait until its tls.crt names the host too")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return gate.Wait(ctx, *file, *tlsDir, os.Stdout, time.Second, 10*time.Second)
}

func readObjects(path string) ([][]byte, error) {
	f := os.Stdin
	if path != "-" {
		var err error
		if f, err = os.Open(path); err != nil {
			return nil, err
		}
		defer f.Close()
	}
	objects, err := render.ReadObjects(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", strings.TrimSpace(path), err)
	}
	return objects, nil
}
