package controller

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/brokerport/brokerport/patches"
)

// PortBlocksConfigMap is the ConfigMap, in brokerport's namespace, that lists every port block
// assigned: the parameters of the ValidatingAdmissionPolicy brokerport-port-band
// (manifests/base/policy.yaml), which refuses a Service taking a nodePort of one of these blocks
// and leaves the rest of the band to whoever picks a free port of it (the Redpanda chart's
// defaults 30081 and 30082, say).
const PortBlocksConfigMap = "brokerport-port-blocks"

// PortBlocks is the content of PortBlocksConfigMap: "<namespace>.<statefulset>" → "<first>-<last>"
// for every opted-in StatefulSet that holds a block (a namespace has no dot, so the key reads
// back; the policy needs only the values).
func PortBlocks(sets []appsv1.StatefulSet, opts patches.Options) map[string]string {
	out := map[string]string{}
	for i := range sets {
		sts := &sets[i]
		if !patches.IsExposed(sts.Labels) {
			continue
		}
		if cfg, errs := patches.ParseConfig(sts.Annotations, nil, opts); len(errs) == 0 && cfg.HoldsBlock() {
			b := cfg.Block()
			out[sts.Namespace+"."+sts.Name] = strconv.Itoa(int(b.First)) + "-" + strconv.Itoa(int(b.Last))
		}
	}
	return out
}

// PortBlocksWriter keeps PortBlocksConfigMap equal to the blocks of the opted-in StatefulSets the
// cache shows. It runs in the elected replica only: one writer. A block is guarded from when the
// informer shows its StatefulSet (milliseconds after its admission); a Service that takes one of
// its ports before that is what the controller reports as a squatter, as before the policy.
type PortBlocksWriter struct {
	Cache     client.Reader // opted-in StatefulSets
	API       client.Reader // the ConfigMap is read directly: the cache holds no ConfigMap of brokerport-system
	Client    client.Client
	Namespace string // brokerport's namespace
	Options   patches.Options
	// MayWrite, as the Reconciler's, holds the writer until brokerport's policies are in force.
	MayWrite func() bool
}

// portBlocksResync looks again at the ConfigMap, which nothing watches: one an admin deleted or
// edited is written again within a minute.
var portBlocksResync = reconcile.Result{RequeueAfter: time.Minute}

var portBlocksRequest = reconcile.Request{NamespacedName: types.NamespacedName{Name: PortBlocksConfigMap}}

// SetupWithManager writes the blocks at start and whenever an opted-in StatefulSet changes.
func (w *PortBlocksWriter) SetupWithManager(mgr manager.Manager) error {
	enqueue := func(q workqueue.TypedRateLimitingInterface[reconcile.Request]) { q.Add(portBlocksRequest) }
	onChange := handler.TypedFuncs[*appsv1.StatefulSet, reconcile.Request]{
		CreateFunc: func(_ context.Context, _ event.TypedCreateEvent[*appsv1.StatefulSet], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(q)
		},
		UpdateFunc: func(_ context.Context, e event.TypedUpdateEvent[*appsv1.StatefulSet], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if !maps.Equal(e.ObjectOld.Annotations, e.ObjectNew.Annotations) || !maps.Equal(e.ObjectOld.Labels, e.ObjectNew.Labels) {
				enqueue(q)
			}
		},
		DeleteFunc: func(_ context.Context, _ event.TypedDeleteEvent[*appsv1.StatefulSet], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(q)
		},
	}
	return builder.ControllerManagedBy(mgr).
		Named("portblocks").
		WatchesRawSource(source.Kind(mgr.GetCache(), &appsv1.StatefulSet{}, onChange)).
		WatchesRawSource(source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
			enqueue(q)
			return nil
		})).
		Complete(w)
}

func (w *PortBlocksWriter) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	if w.MayWrite != nil && !w.MayWrite() {
		return reconcile.Result{RequeueAfter: time.Second}, nil
	}
	var list appsv1.StatefulSetList
	if err := w.Cache.List(ctx, &list, client.MatchingLabels{patches.LabelExpose: patches.ExposeValue}); err != nil {
		return reconcile.Result{}, fmt.Errorf("listing opted-in StatefulSets: %w", err)
	}
	data := PortBlocks(list.Items, w.Options)
	key := client.ObjectKey{Namespace: w.Namespace, Name: PortBlocksConfigMap}
	current := &corev1.ConfigMap{}
	switch err := w.API.Get(ctx, key, current); {
	case apierrors.IsNotFound(err):
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace, Labels: map[string]string{patches.LabelManagedBy: patches.ManagedByValue}},
			Data:       data,
		}
		if err := w.Client.Create(ctx, cm); err != nil {
			return reconcile.Result{}, fmt.Errorf("creating ConfigMap %s: %w", key, err)
		}
	case err != nil:
		return reconcile.Result{}, fmt.Errorf("getting ConfigMap %s: %w", key, err)
	case maps.Equal(current.Data, data):
		return portBlocksResync, nil
	default:
		current.Data = data
		if err := w.Client.Update(ctx, current); err != nil {
			return reconcile.Result{}, fmt.Errorf("updating ConfigMap %s: %w", key, err)
		}
	}
	logf.FromContext(ctx).Info("wrote the assigned port blocks", "configmap", key, "blocks", len(data))
	return portBlocksResync, nil
}
