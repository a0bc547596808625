package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/patches"
	"github.com/brokerport/brokerport/webhook"
	"github.com/brokerport/brokerport/webhook/controller"
	"github.com/brokerport/brokerport/webhook/probe"
)

// check prints, per broker and listener, whether the broker answers at its published address
// and what it advertises; it fails (exit status 1) on any address that does not answer or a
// broker that advertises something else, so that it can gate a pipeline.
func check(args []string) error {
	fs := flag.NewFlagSet("check", flag.ExitOnError)
	namespace := fs.String("n", "", "namespace of the StatefulSet (default: the kubeconfig's)")
	fromHere := fs.Bool("from-here", false, "dial every published address from this machine, where the clients are (default: show what brokerport's in-cluster probe last saw, from the ConfigMap)")
	timeout := fs.Duration("timeout", 5*time.Second, "time allowed to each address (--from-here)")
	if err := fs.Parse(reorderFlags(boolFlagsFirst(args, "from-here"))); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: brokerport check STATEFULSET [-n NAMESPACE] [--from-here]")
	}
	sts := fs.Arg(0)
	c, ns, err := kubeClient(*namespace)
	if err != nil {
		return err
	}
	ctx := context.Background()
	cm := &corev1.ConfigMap{}
	key := client.ObjectKey{Namespace: ns, Name: controller.ConfigMapName(sts)}
	if err := c.Get(ctx, key, cm); err != nil {
		return fmt.Errorf("reading ConfigMap %s (is StatefulSet %s/%s labeled %s=%s?): %w", key, ns, sts, patches.LabelExpose, patches.ExposeValue, err)
	}
	if !*fromHere {
		return printProbed(os.Stdout, cm.Data)
	}
	// The Kafka listener's security protocol decides how much of it can be checked; a user who
	// may not read the StatefulSet gets the PLAINTEXT check.
	protocol := patches.DefaultSecurityProtocol
	set := &appsv1.StatefulSet{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: sts}, set); err == nil {
		if cfg, errs := patches.ParseConfig(set.Annotations, nil, patches.DefaultOptions()); len(errs) == 0 {
			protocol = cfg.SecurityProtocol
		}
	}
	rows, err := checkFromHere(ctx, cm.Data, protocol, *timeout, (&net.Dialer{}).DialContext)
	printRows(os.Stdout, rows)
	return err
}

// boolFlagsFirst moves the named boolean flags to the front, written NAME=true, so that
// reorderFlags does not take the argument after them for their value.
func boolFlagsFirst(args []string, names ...string) []string {
	var bools, rest []string
	for _, a := range args {
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && slices.Contains(names, name) {
			if !hasValue {
				a += "=true"
			}
			bools = append(bools, a)
			continue
		}
		rest = append(rest, a)
	}
	return append(bools, rest...)
}

func kubeClient(namespace string) (client.Client, string, error) {
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(clientcmd.NewDefaultClientConfigLoadingRules(), &clientcmd.ConfigOverrides{})
	if namespace == "" {
		ns, _, err := loader.Namespace()
		if err != nil {
			return nil, "", fmt.Errorf("reading the kubeconfig's namespace: %w", err)
		}
		namespace = ns
	}
	restConfig, err := loader.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("reading the kubeconfig: %w", err)
	}
	c, err := client.New(restConfig, client.Options{Scheme: webhook.Scheme()})
	return c, namespace, err
}

// checkRow is one line of the table.
type checkRow struct {
	Broker, Listener, Node, Address, Reachable, Advertised string
	Latency                                                time.Duration
	Failed                                                 bool
	Problem                                                string // for the error: "rp-1 kafka unreachable: ..."
}

// checkFromHere dials every published address with dial, asks the Kafka listener (PLAINTEXT:
// ApiVersions and Metadata) what the broker advertises, and bootstraps a Kafka client from
// bootstrap.servers to name the brokers' node IDs and find advertised brokers brokerport did not
// publish. The error lists the failures.
func checkFromHere(ctx context.Context, data map[string]string, protocol string, timeout time.Duration, dial probe.DialFunc) ([]checkRow, error) {
	pub := probe.ParsePublished(data)
	if len(pub.Brokers) == 0 {
		return nil, errors.New("no broker address is published yet (see the ConfigMap's status key)")
	}
	nodes, bootstrapErr := bootstrapNodes(ctx, data["bootstrap.servers"], timeout)
	var rows []checkRow
	for _, b := range pub.Brokers {
		for i, l := range pub.Listeners {
			addr := b.Addresses[l]
			if addr == "" {
				continue
			}
			mode := probe.TCP
			if i == 0 {
				mode = probe.ModeOf(0, protocol)
			}
			actx, cancel := context.WithTimeout(ctx, timeout)
			obs := probe.Observe(actx, dial, addr, mode)
			cancel()
			v := probe.Judge(addr, mode, obs, pub.All(l))
			row := checkRow{Broker: b.Pod, Listener: l, Node: "-", Address: addr, Reachable: "yes", Latency: obs.Latency,
				Advertised: "(not checked: " + mode.String() + ")"}
			if id, ok := nodes[addr]; ok && i == 0 {
				row.Node = strconv.Itoa(int(id))
			}
			switch v.State {
			case probe.Unreachable:
				row.Reachable, row.Advertised, row.Failed = "no: "+v.Reason, "-", true
			case probe.Mismatch:
				row.Advertised, row.Failed = v.Advertises+" (MISMATCH)", true
				if id, ok := nodes[v.Advertises]; ok {
					row.Node = strconv.Itoa(int(id))
				}
			default:
				if mode == probe.KafkaMetadata {
					row.Advertised = addr
				}
			}
			if row.Failed {
				row.Problem = fmt.Sprintf("%s %s at %s %s", b.Pod, l, addr, v)
			}
			rows = append(rows, row)
		}
	}
	// Brokers the cluster advertises that brokerport did not publish: clients are sent there too.
	published := pub.All(pub.Kafka())
	for addr, id := range nodes {
		if !slices.Contains(published, addr) {
			rows = append(rows, checkRow{Broker: "?", Listener: pub.Kafka(), Node: strconv.Itoa(int(id)), Address: "-", Reachable: "-",
				Advertised: addr + " (NOT PUBLISHED)", Failed: true,
				Problem: fmt.Sprintf("node %d advertises %s, which brokerport did not publish", id, addr)})
		}
	}
	var problems []string
	for _, r := range rows {
		if r.Failed {
			problems = append(problems, r.Problem)
		}
	}
	if bootstrapErr != nil {
		problems = append(problems, "bootstrapping a Kafka client from bootstrap.servers: "+bootstrapErr.Error())
	}
	if len(problems) > 0 {
		return rows, fmt.Errorf("%d problem(s): %s", len(problems), strings.Join(problems, "; "))
	}
	return rows, nil
}

// bootstrapNodes asks a Kafka client seeded with bootstrap.servers for the cluster's brokers:
// advertised address → node ID.
func bootstrapNodes(ctx context.Context, bootstrap string, timeout time.Duration) (map[string]int32, error) {
	if bootstrap == "" {
		return nil, errors.New("bootstrap.servers is empty")
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(bootstrap, ",")...), kgo.DialTimeout(timeout), kgo.RequestRetries(1))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*timeout)
	defer cancel()
	req := kmsg.NewPtrMetadataRequest()
	req.Topics = []kmsg.MetadataRequestTopic{}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, err
	}
	nodes := map[string]int32{}
	for _, b := range resp.Brokers {
		nodes[net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))] = b.NodeID
	}
	return nodes, nil
}

func printRows(w io.Writer, rows []checkRow) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BROKER\tLISTENER\tNODE\tADDRESS\tREACHABLE\tADVERTISED\tLATENCY")
	for _, r := range rows {
		latency := "-"
		if r.Latency > 0 {
			latency = r.Latency.Round(100 * time.Microsecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Broker, r.Listener, r.Node, r.Address, r.Reachable, r.Advertised, latency)
	}
	tw.Flush()
}

// printProbed shows the in-cluster probe's last verdicts (the ConfigMap's <listener>.reachability
// keys) and fails on any that is not "reachable".
func printProbed(w io.Writer, data map[string]string) error {
	pub := probe.ParsePublished(data)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BROKER\tLISTENER\tADDRESS\tPROBE (from brokerport's elected replica)")
	var problems []string
	seen := 0
	for _, l := range pub.Listeners {
		verdicts := map[string]string{}
		for _, line := range strings.Split(data[l+probe.ReachabilitySuffix], "\n") {
			if pod, verdict, ok := strings.Cut(line, " "); ok {
				verdicts[pod] = verdict
			}
		}
		for _, b := range pub.Brokers {
			if b.Addresses[l] == "" {
				continue
			}
			verdict, ok := verdicts[b.Pod]
			if !ok {
				verdict = "not probed yet"
			} else {
				seen++
			}
			if verdict != "reachable" {
				problems = append(problems, fmt.Sprintf("%s %s at %s %s", b.Pod, l, b.Addresses[l], verdict))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", b.Pod, l, b.Addresses[l], verdict)
		}
	}
	tw.Flush()
	switch {
	case len(pub.Brokers) == 0:
		return errors.New("no broker address is published yet (see the ConfigMap's status key)")
	case seen == 0:
		return errors.New("the ConfigMap has no reachability keys: brokerport's probe is off (--probe-period=0) or has not run yet; --from-here dials from this machine")
	case len(problems) > 0:
		return fmt.Errorf("%d problem(s): %s", len(problems), strings.Join(problems, "; "))
	}
	return nil
}
