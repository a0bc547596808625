// Package webhook is brokerport's admission plumbing: one admission.Handler per resource, each
// deciding whether to act, asking patches/ for the mutation, and answering with a JSON patch.
package webhook

import (
	"context"
	"fmt"
	"maps"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/brokerport/brokerport/patches"
)

// Snapshot is what the handlers know of the cluster. ReaderSnapshot reads it from informer
// caches in production and from fixed objects in tests and `render`.
type Snapshot interface {
	// PortsInUse are the ports held by everything except StatefulSet namespace/name: the blocks
	// of the other opted-in StatefulSets, every Service nodePort but its own brokers', and the
	// hostPorts of the other StatefulSets' brokers (a broker that has not rolled off a block its
	// StatefulSet gave back, switching to the loadbalancer strategy, still listens there).
	PortsInUse(ctx context.Context, namespace, name string) (patches.PortSet, error)
	// ExposedStatefulSet is the opted-in StatefulSet namespace/name, or nil.
	ExposedStatefulSet(ctx context.Context, namespace, name string) (*appsv1.StatefulSet, error)
	// LiveStatefulSet reads StatefulSet namespace/name from the API server, opted in or not, for
	// the rare question the cache cannot answer; nil when it does not exist.
	LiveStatefulSet(ctx context.Context, namespace, name string) (*appsv1.StatefulSet, error)
	// Service is Service namespace/name, or nil when there is none.
	Service(ctx context.Context, namespace, name string) (*corev1.Service, error)
	// Node is the node called name, or nil when it is not known.
	Node(ctx context.Context, name string) (*corev1.Node, error)
	// Namespace is the namespace called name (its labels and annotations), or nil when it is not
	// known.
	Namespace(ctx context.Context, name string) (*corev1.Namespace, error)
}

// ReaderSnapshot is a Snapshot over a client.Reader: the manager's cache in production (reads are
// in memory, no API call), a fake client over fixed objects elsewhere. Lists select by label
// themselves, so they give the same answer whether or not the cache is label-filtered.
type ReaderSnapshot struct {
	Reader client.Reader
	// Live reads from the API server (nil: Reader is read instead).
	Live    client.Reader
	Options patches.Options
	// Blocks caches the blocks the listed StatefulSets hold (nil: each is parsed on every
	// PortsInUse). NewStatefulSetHandler gives a ReaderSnapshot without one a cache of its own.
	Blocks *BlockCache
}

var _ Snapshot = ReaderSnapshot{}

// PortsInUse reads the caches without copying what they hold (UnsafeDisableDeepCopy): it only
// reads, and a copy of every broker pod and Service per StatefulSet admission is what an
// admission should not pay for other tenants' objects.
func (s ReaderSnapshot) PortsInUse(ctx context.Context, namespace, name string) (patches.PortSet, error) {
	var reservations []patches.Reservation

	var sets appsv1.StatefulSetList
	if err := s.Reader.List(ctx, &sets, client.MatchingLabels{patches.LabelExpose: patches.ExposeValue}, client.UnsafeDisableDeepCopy); err != nil {
		return patches.PortSet{}, fmt.Errorf("listing opted-in StatefulSets: %w", err)
	}
	reservations = s.Blocks.reservations(sets.Items, types.NamespacedName{Namespace: namespace, Name: name}, reservations)

	var pods corev1.PodList
	if err := s.Reader.List(ctx, &pods, client.MatchingLabels{patches.LabelExpose: patches.ExposeValue}, client.UnsafeDisableDeepCopy); err != nil {
		return patches.PortSet{}, fmt.Errorf("listing brokers: %w", err)
	}
	for _, pod := range pods.Items {
		if pod.Namespace == namespace && pod.Labels[patches.LabelCluster] == name {
			continue
		}
		for _, c := range pod.Spec.Containers {
			for _, p := range c.Ports {
				if p.HostPort != 0 {
					reservations = append(reservations, patches.Reservation{
						PortRange: patches.PortRange{First: p.HostPort, Last: p.HostPort},
						Owner:     fmt.Sprintf("broker %s/%s (hostPort)", pod.Namespace, pod.Name),
					})
				}
			}
		}
	}

	var services corev1.ServiceList
	if err := s.Reader.List(ctx, &services, client.UnsafeDisableDeepCopy); err != nil {
		return patches.PortSet{}, fmt.Errorf("listing Services: %w", err)
	}
	for _, svc := range services.Items {
		if svc.Namespace == namespace && svc.Labels[patches.LabelCluster] == name {
			continue
		}
		for _, p := range svc.Spec.Ports {
			if p.NodePort != 0 {
				reservations = append(reservations, patches.Reservation{
					PortRange: patches.PortRange{First: p.NodePort, Last: p.NodePort},
					Owner:     fmt.Sprintf("Service %s/%s (nodePort of port %q)", svc.Namespace, svc.Name, p.Name),
				})
			}
		}
	}
	return patches.NewPortSet(reservations...), nil
}

// BlockCache keeps, per opted-in StatefulSet, the port block its configuration holds, so that an
// admission parses only the StatefulSets written since the one before, never every tenant's
// again. An entry is for one version of the object (its UID and resourceVersion: the API server
// gives every write a new one); an object without a resourceVersion (built by a test) is parsed
// each time. The block does not depend on brokerport's options (they give defaults that no block
// reads), so one cache serves every caller. Safe for concurrent use; a nil *BlockCache parses
// every time.
type BlockCache struct {
	mu      sync.Mutex
	entries map[types.NamespacedName]cachedBlock
	// listed counts the reservations calls, to tell entries of StatefulSets no longer listed.
	listed uint64
}

type cachedBlock struct {
	uid             types.UID
	resourceVersion string
	block           patches.PortRange
	holds           bool
	owner           string // "StatefulSet namespace/name", made once
	listed          uint64 // the reservations call that last saw it
}

// NewBlockCache returns an empty cache.
func NewBlockCache() *BlockCache {
	return &BlockCache{entries: map[types.NamespacedName]cachedBlock{}}
}

// Block is the block sts holds: none when its configuration does not parse (it was refused when
// it was labeled, so it holds no block brokerport could honour) or takes no block.
func (c *BlockCache) Block(sts *appsv1.StatefulSet) (patches.PortRange, bool) {
	if c == nil {
		return parseBlock(sts)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.lookup(sts)
	return e.block, e.holds
}

// reservations appends the blocks of the listed StatefulSets but skip's, and forgets the entries
// of StatefulSets no longer listed once they are as many as those listed.
func (c *BlockCache) reservations(sets []appsv1.StatefulSet, skip types.NamespacedName, out []patches.Reservation) []patches.Reservation {
	if c != nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.listed++
	}
	for i := range sets {
		sts := &sets[i]
		if sts.Namespace == skip.Namespace && sts.Name == skip.Name {
			continue
		}
		var e cachedBlock
		if c == nil {
			e.block, e.holds = parseBlock(sts)
		} else {
			e = c.lookup(sts)
		}
		if e.holds {
			if e.owner == "" {
				e.owner = blockOwner(sts)
			}
			out = append(out, patches.Reservation{PortRange: e.block, Owner: e.owner})
		}
	}
	if c != nil && len(c.entries) > 2*len(sets)+16 {
		maps.DeleteFunc(c.entries, func(_ types.NamespacedName, e cachedBlock) bool { return e.listed != c.listed })
	}
	return out
}

// lookup gives sts's entry, parsing it on a miss, and marks it seen by the current
// reservations call. Called with c.mu held.
func (c *BlockCache) lookup(sts *appsv1.StatefulSet) cachedBlock {
	if sts.ResourceVersion == "" {
		block, holds := parseBlock(sts)
		return cachedBlock{block: block, holds: holds}
	}
	key := types.NamespacedName{Namespace: sts.Namespace, Name: sts.Name}
	e, ok := c.entries[key]
	switch {
	case !ok || e.resourceVersion != sts.ResourceVersion || e.uid != sts.UID:
		e = cachedBlock{uid: sts.UID, resourceVersion: sts.ResourceVersion}
		if e.block, e.holds = parseBlock(sts); e.holds {
			e.owner = blockOwner(sts)
		}
	case e.listed == c.listed:
		return e
	}
	e.listed = c.listed
	c.entries[key] = e
	return e
}

func blockOwner(sts *appsv1.StatefulSet) string {
	return fmt.Sprintf("StatefulSet %s/%s", sts.Namespace, sts.Name)
}

func parseBlock(sts *appsv1.StatefulSet) (patches.PortRange, bool) {
	cfg, errs := patches.ParseConfig(sts.Annotations, nil, patches.Options{})
	if len(errs) > 0 || !cfg.HoldsBlock() {
		return patches.PortRange{}, false
	}
	return cfg.Block(), true
}

func (s ReaderSnapshot) ExposedStatefulSet(ctx context.Context, namespace, name string) (*appsv1.StatefulSet, error) {
	sts := &appsv1.StatefulSet{}
	err := s.Reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, sts)
	if apierrors.IsNotFound(err) || (err == nil && !patches.IsExposed(sts.Labels)) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("getting StatefulSet %s/%s: %w", namespace, name, err)
	}
	return sts, nil
}

func (s ReaderSnapshot) LiveStatefulSet(ctx context.Context, namespace, name string) (*appsv1.StatefulSet, error) {
	reader := s.Live
	if reader == nil {
		reader = s.Reader
	}
	sts := &appsv1.StatefulSet{}
	err := reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, sts)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("getting StatefulSet %s/%s: %w", namespace, name, err)
	}
	return sts, nil
}

func (s ReaderSnapshot) Service(ctx context.Context, namespace, name string) (*corev1.Service, error) {
	svc := &corev1.Service{}
	err := s.Reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, svc)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("getting Service %s/%s: %w", namespace, name, err)
	}
	return svc, nil
}

func (s ReaderSnapshot) Node(ctx context.Context, name string) (*corev1.Node, error) {
	node := &corev1.Node{}
	err := s.Reader.Get(ctx, client.ObjectKey{Name: name}, node)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("getting Node %s: %w", name, err)
	}
	return node, nil
}

func (s ReaderSnapshot) Namespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	ns := &corev1.Namespace{}
	err := s.Reader.Get(ctx, client.ObjectKey{Name: name}, ns)
	if apierrors.IsNotFound(err) && s.Live != nil {
		// Created in the same apply as the StatefulSet: not in the cache yet.
		err = s.Live.Get(ctx, client.ObjectKey{Name: name}, ns)
	}
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("getting Namespace %s: %w", name, err)
	}
	return ns, nil
}
