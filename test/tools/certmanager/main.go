// Command certmanager is cert-manager's controller cut down to what the end-to-end suite needs:
// Certificates issued by SelfSigned and CA Issuers and ClusterIssuers. cert-manager's own binary
// (module github.com/cert-manager/cert-manager/cmd/controller) is not served by the Go module
// proxy, but its main module holds every controller, so this main wires them as
// cmd/controller/app (Run and buildControllerContextFactory, v1.21) does, without leader
// election, metrics, ACME, Vault, Venafi, the ingress and Gateway shims or the webhook (the API
// server validates the CRDs by their schemas).
//
// It serves GET /readyz on --readyz-address: 200 once every informer has synced and the
// controllers are running.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cert-manager/cert-manager/pkg/controller"
	"github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	crca "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	crselfsigned "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	"github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	"github.com/cert-manager/cert-manager/pkg/controller/issuers"
	logf "github.com/cert-manager/cert-manager/pkg/logs"
	"golang.org/x/sync/errgroup"

	// The issuer implementations the issuers and clusterissuers controllers set up.
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

// enabled are the controllers run: the whole Certificate life cycle, the approver (a
// CertificateRequest is signed only once approved), the SelfSigned and CA signers, and the
// controllers that set Issuers and ClusterIssuers Ready.
var enabled = []string{
	trigger.ControllerName, keymanager.ControllerName, requestmanager.ControllerName,
	issuing.ControllerName, readiness.ControllerName, revisionmanager.ControllerName,
	approver.ControllerName, crselfsigned.CRControllerName, crca.CRControllerName,
	issuers.ControllerName, clusterissuers.ControllerName,
}

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "path to a kubeconfig")
	clusterResourceNamespace := flag.String("cluster-resource-namespace", "kube-system", "namespace of the Secrets that ClusterIssuers refer to")
	readyzAddress := flag.String("readyz-address", "127.0.0.1:9403", "address of the /readyz endpoint")
	workers := flag.Int("workers", 5, "workers per controller")
	flag.Parse()

	logf.InitLogs()
	defer logf.FlushLogs()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = logf.NewContext(ctx, logf.Log, "controller")

	if err := run(ctx, *kubeconfig, *clusterResourceNamespace, *readyzAddress, *workers); err != nil {
		logf.Log.Error(err, "cert-manager controller failed")
		logf.FlushLogs()
		os.Exit(1)
	}
}

func run(ctx context.Context, kubeconfig, clusterResourceNamespace, readyzAddress string, workers int) error {
	log := logf.FromContext(ctx)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The values of cert-manager's configuration defaults (internal/apis/config/controller/v1alpha1).
	factory, err := controller.NewContextFactory(ctx, controller.ContextOptions{
		Kubeconfig:         kubeconfig,
		KubernetesAPIQPS:   20,
		KubernetesAPIBurst: 50,
		IssuerOptions:      controller.IssuerOptions{ClusterResourceNamespace: clusterResourceNamespace},
		CertificateOptions: controller.CertificateOptions{
			CopiedAnnotationPrefixes:                 []string{"*", "-kubectl.kubernetes.io/", "-fluxcd.io/", "-argocd.argoproj.io/"},
			CertificateRequestMinimumBackoffDuration: time.Hour,
			CertificateRequestMaximumBackoffDuration: 32 * time.Hour,
		},
	})
	if err != nil {
		return fmt.Errorf("building the controller context: %w", err)
	}
	base, err := factory.Build()
	if err != nil {
		return fmt.Errorf("building the controller context: %w", err)
	}

	var ready atomic.Bool
	listener, err := (&net.ListenConfig{}).Listen(ctx, "tcp", readyzAddress)
	if err != nil {
		return fmt.Errorf("listening on --readyz-address %s: %w", readyzAddress, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "informers not synced", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := server.Serve(listener); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		return server.Close()
	})

	known := controller.Known()
	for _, name := range enabled {
		construct, ok := known[name]
		if !ok {
			return fmt.Errorf("controller %q is not registered", name)
		}
		c, err := construct(factory)
		if err != nil {
			return fmt.Errorf("constructing controller %s: %w", name, err)
		}
		g.Go(func() error {
			log.Info("starting controller", "controller", name)
			return c.Run(workers, ctx)
		})
	}

	// Started after the controllers were constructed, since constructing them is what registers
	// their informers with the factories.
	base.SharedInformerFactory.Start(ctx.Done())
	base.KubeSharedInformerFactory.Start(ctx.Done())
	base.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())
	g.Go(func() error {
		for informer, synced := range base.SharedInformerFactory.WaitForCacheSync(ctx.Done()) {
			if !synced {
				return fmt.Errorf("cert-manager informer %v did not sync", informer)
			}
		}
		for informer, synced := range base.KubeSharedInformerFactory.WaitForCacheSync(ctx.Done()) {
			if !synced {
				return fmt.Errorf("Kubernetes informer %s did not sync", informer)
			}
		}
		ready.Store(true)
		log.Info("informers synced; ready", "controllers", enabled)
		return nil
	})
	return g.Wait()
}
