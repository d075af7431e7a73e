package cluster

import (
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"

	"sigs.k8s.io/controller-runtime/pkg/client"
)

// What cached objects share is kept once: the strings thousands of Flux objects of a region
// repeat (their namespaces, labels, the source they build from, Flux's condition reasons
// and messages, the revision a push made them apply, requestedAt). Bounded, whatever the
// objects hold: strings of at most maxInternedBytes, two generations of at most
// maxInterned each (a string not seen for two generations is dropped from the table, not
// from the objects that hold it).
const (
	maxInternedBytes = 128
	maxInterned      = 4096
)

// shared is the table of every cluster's caches: the objects of a region's clusters share
// most of these strings too.
var shared = &interner{cur: map[string]string{}, curMaps: map[string]map[string]string{}}

type interner struct {
	mu        sync.Mutex
	cur, prev map[string]string
	// curMaps and prevMaps hold label sets by their canonical form (labelKey): the Flux
	// objects of one namespace, applied by one parent Kustomization, carry the same.
	curMaps, prevMaps map[string]map[string]string
}

func (in *interner) intern(s string) string {
	if s == "" || len(s) > maxInternedBytes {
		return s
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if v, ok := in.cur[s]; ok {
		return v
	}
	if v, ok := in.prev[s]; ok {
		in.cur[s] = v
		return v
	}
	if len(in.cur) >= maxInterned {
		in.prev, in.cur = in.cur, make(map[string]string, maxInterned)
	}
	in.cur[s] = s
	return s
}

// share replaces the strings of o that objects repeat by the table's copy: its namespace,
// labels, the annotation keys and requestedAt, its kind and API version, and every string of
// its spec and status; not
// its name, UID, resource version or request record, which are its own.
func (in *interner) share(o client.Object) {
	o.SetNamespace(in.intern(o.GetNamespace()))
	if l := o.GetLabels(); len(l) > 0 {
		o.SetLabels(in.labels(l))
	}
	if a := o.GetAnnotations(); len(a) > 0 {
		m := make(map[string]string, len(a))
		for k, v := range a {
			if len(v) <= maxRequestedAtBytes {
				v = in.intern(v)
			}
			m[in.intern(k)] = v
		}
		o.SetAnnotations(m)
	}
	v := reflect.ValueOf(o)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return
	}
	for _, field := range []string{"TypeMeta", "Spec", "Status"} {
		if f := v.Elem().FieldByName(field); f.IsValid() {
			in.walk(f)
		}
	}
}

// labels returns the table's copy of a label set: objects share it, as the cache's objects
// are never changed in place (readers get copies).
func (in *interner) labels(l map[string]string) map[string]string {
	key := labelKey(l)
	if len(key) > maxInternedLabels {
		return in.internMap(l)
	}
	in.mu.Lock()
	m, ok := in.curMaps[key]
	if !ok {
		if m, ok = in.prevMaps[key]; ok {
			in.curMaps[key] = m
		}
	}
	in.mu.Unlock()
	if ok {
		return m
	}
	m = in.internMap(l)
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.curMaps) >= maxInterned {
		in.prevMaps, in.curMaps = in.curMaps, make(map[string]map[string]string, maxInterned)
	}
	in.curMaps[key] = m
	return m
}

// maxInternedLabels bounds the label sets the table keeps (their canonical form): a
// handful of labels; a larger set is its object's own.
const maxInternedLabels = 1024

// labelKey is the canonical form of a label set: its pairs in key order.
func labelKey(l map[string]string) string {
	keys := slices.Sorted(maps.Keys(l))
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(l[k])
		b.WriteByte(0)
	}
	return b.String()
}

func (in *interner) internMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[in.intern(k)] = in.intern(v)
	}
	return out
}

// walk interns every settable string under v, and every map of strings to strings.
func (in *interner) walk(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			in.walk(v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if f := v.Field(i); f.CanSet() {
				in.walk(f)
			}
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return // raw bytes (a HelmRelease's values): not strings objects share
		}
		for i := range v.Len() {
			in.walk(v.Index(i))
		}
	case reflect.Map:
		if v.Type().Key().Kind() == reflect.String && v.Type().Elem().Kind() == reflect.String && v.CanSet() && !v.IsNil() {
			m := reflect.MakeMapWithSize(v.Type(), v.Len())
			for it := v.MapRange(); it.Next(); {
				m.SetMapIndex(reflect.ValueOf(in.intern(it.Key().String())).Convert(v.Type().Key()),
					reflect.ValueOf(in.intern(it.Value().String())).Convert(v.Type().Elem()))
			}
			v.Set(m)
		}
	case reflect.String:
		if v.CanSet() {
			v.SetString(in.intern(v.String()))
		}
	}
}
