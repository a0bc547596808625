// Package cachedreader is a client.Reader over fixed objects that reads as controller-runtime's
// informer cache does: each object kept as the cache's options keep it (its type's label
// selector and transform), and every read a deep copy of what is kept. Benchmarks and the load
// tool read through it where the webhook reads its caches; a fake client instead encodes and
// decodes whole objects on every read, a cost brokerport does not pay.
package cachedreader

import (
	"context"
	"fmt"
	"reflect"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// Reader holds the objects by type and key.
type Reader struct {
	scheme  *runtime.Scheme
	objects map[reflect.Type]map[client.ObjectKey]client.Object
}

var _ client.Reader = &Reader{}

// New keeps objs as a cache with opts would.
func New(scheme *runtime.Scheme, opts cache.Options, objs ...client.Object) (*Reader, error) {
	r := &Reader{scheme: scheme, objects: map[reflect.Type]map[client.ObjectKey]client.Object{}}
	for _, obj := range objs {
		selector, transform := labels.Everything(), opts.DefaultTransform
		if opts.DefaultLabelSelector != nil {
			selector = opts.DefaultLabelSelector
		}
		for of, by := range opts.ByObject {
			if reflect.TypeOf(of) == reflect.TypeOf(obj) {
				if by.Label != nil {
					selector = by.Label
				}
				if by.Transform != nil {
					transform = by.Transform
				}
			}
		}
		if !selector.Matches(labels.Set(obj.GetLabels())) {
			continue
		}
		kept := obj.DeepCopyObject()
		if transform != nil {
			out, err := transform(kept)
			if err != nil {
				return nil, fmt.Errorf("transforming %T %s: %w", obj, client.ObjectKeyFromObject(obj), err)
			}
			kept = out.(runtime.Object)
		}
		t := reflect.TypeOf(obj)
		if r.objects[t] == nil {
			r.objects[t] = map[client.ObjectKey]client.Object{}
		}
		r.objects[t][client.ObjectKeyFromObject(obj)] = kept.(client.Object)
	}
	return r, nil
}

// Get copies the kept object into out, as the cache reader does.
func (r *Reader) Get(_ context.Context, key client.ObjectKey, out client.Object, _ ...client.GetOption) error {
	obj, ok := r.objects[reflect.TypeOf(out)][key]
	if !ok {
		gvk, err := apiutil.GVKForObject(out, r.scheme)
		if err != nil {
			return err
		}
		return apierrors.NewNotFound(schema.GroupResource{Group: gvk.Group, Resource: gvk.Kind}, key.Name)
	}
	reflect.ValueOf(out).Elem().Set(reflect.ValueOf(obj.DeepCopyObject()).Elem())
	return nil
}

// List copies the kept objects of list's item type that match opts' namespace and labels.
func (r *Reader) List(_ context.Context, list client.ObjectList, opts ...client.ListOption) error {
	o := (&client.ListOptions{}).ApplyOptions(opts)
	items, err := meta.ExtractList(list)
	if err != nil {
		return err
	}
	field, ok := reflect.TypeOf(list).Elem().FieldByName("Items")
	if !ok {
		return fmt.Errorf("%T has no Items", list)
	}
	items = items[:0]
	for key, obj := range r.objects[reflect.PointerTo(field.Type.Elem())] {
		if o.Namespace != "" && key.Namespace != o.Namespace {
			continue
		}
		if o.LabelSelector != nil && !o.LabelSelector.Matches(labels.Set(obj.GetLabels())) {
			continue
		}
		items = append(items, obj.DeepCopyObject())
	}
	return meta.SetList(list, items)
}
