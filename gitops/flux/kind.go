// Package flux is flux-webhook's model of the Flux kinds it requests and reports on. One
// adapter per kind (a file of its own) says how to make and list its objects, which URL a
// source fetches and which push changes what it fetches, what an object builds from, and
// how Flux says, in its status, that it has reached a revision. Everything else —
// matching, indexing, requesting, observing — works through the registry, for every kind
// alike. Adding a kind is one file here, its RBAC, and a row in the README.
package flux

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/fluxcd/pkg/apis/meta"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ErrUnknownKind: a kind no adapter knows.
var ErrUnknownKind = errors.New("unknown Flux kind")

// Kind is what flux-webhook knows of one Flux kind.
type Kind interface {
	// Name is the kind, e.g. "GitRepository".
	Name() string
	// Resource is the API resource its objects are served as.
	Resource() schema.GroupVersionResource
	// Stage orders requests: an object is requested after what it builds from.
	Stage() int
	// Target reports whether its objects are requested and reported on; a kind that is
	// only a way to reach others (an OCI HelmRepository, which Flux does not reconcile) is
	// not.
	Target() bool
	New() client.Object
	NewList() client.ObjectList
	Suspended(o client.Object) bool
	// Status reads the part of an object's status every kind has.
	Status(o client.Object) Status
	// URLs returns the normalized URLs a source fetches from (NormalizeURL), nil for an
	// object that builds from another.
	URLs(o client.Object) []string
	// Sources returns what an object builds from, in its cluster.
	Sources(o client.Object) []Ref
	// Origin returns the URL of the Git repository a source's content comes from, as its
	// spec or status records it ("" for an object building from another: its source's).
	Origin(o client.Object) string
	// Follows reports whether a push changes what o fetches or builds: for a source, from
	// its own URL; for an object building from via, through via.
	Follows(o client.Object, p Pushed, via client.Object) bool
	// Judge says what Flux's status says of o for a request waiting for w, given the
	// objects o builds from (by Ref, as the cache has them).
	Judge(o client.Object, w Want, sources map[Ref]client.Object) Judgement
	// Slim drops, in place, the fields flux-webhook never reads (a Kustomization's
	// inventory, a HelmRelease's values and history: often most of an object), before a
	// cache keeps it.
	Slim(o client.Object)
}

// Ref names an object of a kind in a cluster.
type Ref struct{ Kind, Namespace, Name string }

func (r Ref) String() string { return r.Kind + "/" + r.Namespace + "/" + r.Name }

// RefOf returns the Ref of a typed object of a known kind.
func RefOf(o client.Object) Ref {
	return Ref{Kind: KindOf(o), Namespace: o.GetNamespace(), Name: o.GetName()}
}

// Pushed is what changed at the forge: a Git reference of a repository, or a tag of an OCI
// repository (an artifact or a chart pushed to the forge's registry).
type Pushed struct {
	// URLs are the repository's URLs, normalized (NormalizeURL), through every alias.
	URLs []string
	// Ref is the full Git reference of a Git push, e.g. "refs/heads/main".
	Ref string
	// Tag is the tag (or chart version) of an OCI push; Name the OCI repository's last path
	// segment (a chart's name).
	Tag, Name string
}

// OCI reports whether p is a push to a registry.
func (p Pushed) OCI() bool { return p.Tag != "" }

// Want is what a request waits for.
type Want struct {
	// Commit is the pushed Git commit; "" when unknown (an OCI artifact that records none),
	// and for a platform reconcile, which waits for whatever Flux settles on.
	Commit string
	// Version is the tag an OCI push made (a chart's version), "" for a Git push.
	Version string
	// Handled reports whether an object's status shows it handled the request (or a later
	// one); a kind whose status cannot tell otherwise relies on it.
	Handled func(Status) bool
}

// Any reports whether w waits for whatever Flux settles on.
func (w Want) Any() bool { return w.Commit == "" && w.Version == "" }

// is reports whether a revision Flux reached (its commit, its version) is the one w waits
// for.
func (w Want) is(commit, version string) bool {
	switch {
	case w.Commit != "":
		return commit == w.Commit
	case w.Version != "":
		return version == w.Version
	}
	return true
}

// Verdict is how far Flux is with a request, by its status.
type Verdict int

const (
	// Pending: nothing yet, or nothing that says anything of this request.
	Pending Verdict = iota
	// Reached: Flux reached what the request waits for, and says it is Ready.
	Reached
	// Failed: Flux tried what the request waits for, and says it failed.
	Failed
	// Elsewhere: Flux handled the request and settled on another revision (a semver range
	// chose another tag, the reference moved on).
	Elsewhere
	// Suspended: Flux is told to leave the object alone.
	Suspended
)

// Judgement is a kind's reading of one object's status for one request.
type Judgement struct {
	Verdict Verdict
	// Action is what reaching a revision means for the kind ("fetched", "pulled",
	// "packaged chart", "applied", "released chart"); Revision what it reached, in Flux's
	// words.
	Action, Revision string
	// Message is Flux's own message, for Failed; Stage, when set, names the step that failed
	// ("fetch").
	Message, Stage string
	// Via, when set, is the chain of objects o builds from (nearest first) whose judgement
	// this is.
	Via []Ref
}

// Status is the part of a Flux object's status every kind has.
type Status struct {
	Generation, ObservedGeneration int64
	Conditions                     []metav1.Condition
	// LastHandled is status.lastHandledReconcileAt.
	LastHandled string
	// Requested is the reconcile.fluxcd.io/requestedAt annotation.
	Requested string
}

// StatusOf reads the common status of an object of a known kind (zero for any other).
func StatusOf(o client.Object) Status {
	if k := kindOfObject(o); k != nil {
		return k.Status(o)
	}
	return Status{}
}

// status builds a Status from an object and the fields every Flux status has.
func status(o client.Object, observed int64, conds []metav1.Condition, handled string) Status {
	return Status{Generation: o.GetGeneration(), ObservedGeneration: observed, Conditions: conds, LastHandled: handled,
		Requested: o.GetAnnotations()[meta.ReconcileRequestAnnotation]}
}

// Condition returns a condition of the status, nil when absent.
func (s Status) Condition(t string) *metav1.Condition {
	return apimeta.FindStatusCondition(s.Conditions, t)
}

// kinds is the registry, in request order.
var kinds = []Kind{gitRepository{}, ociRepository{}, helmRepository{}, helmChart{}, kustomization{}, helmRelease{}, canary{}}

// byType finds the kind of a typed object.
var byType = map[reflect.Type]Kind{}

func init() {
	slices.SortStableFunc(kinds, func(a, b Kind) int { return a.Stage() - b.Stage() })
	for _, k := range kinds {
		byType[reflect.TypeOf(k.New())] = k
	}
}

// Kinds returns every kind, a source before what builds from it.
func Kinds() []Kind { return slices.Clone(kinds) }

// Lookup returns the kind of a name, case-insensitively; ErrUnknownKind when none.
func Lookup(name string) (Kind, error) {
	for _, k := range kinds {
		if strings.EqualFold(k.Name(), name) {
			return k, nil
		}
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownKind, name)
}

// KindOf returns the kind name of a typed object of a known kind, "" for any other.
func KindOf(o client.Object) string {
	if k := kindOfObject(o); k != nil {
		return k.Name()
	}
	return ""
}

// KindFor returns the kind of a typed object; ErrUnknownKind for any other.
func KindFor(o client.Object) (Kind, error) {
	if k := kindOfObject(o); k != nil {
		return k, nil
	}
	return nil, fmt.Errorf("%w %T", ErrUnknownKind, o)
}

func kindOfObject(o client.Object) Kind {
	if m, ok := o.(*metav1.PartialObjectMetadata); ok {
		k, _ := Lookup(m.GetObjectKind().GroupVersionKind().Kind)
		return k
	}
	return byType[reflect.TypeOf(o)]
}

// lastApplied is kubectl's copy of an object's whole spec, kept by kubectl apply: flux-webhook
// reads none of it.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// CacheTransform is the transform of every cache of Flux objects: managed fields and
// kubectl's last-applied copy dropped from every object, and what each kind's Slim drops.
// It keeps the cache at a few KiB per object whatever their inventories and values.
func CacheTransform(in any) (any, error) {
	o, ok := in.(client.Object)
	if !ok {
		return in, nil
	}
	o.SetManagedFields(nil)
	if a := o.GetAnnotations(); a[lastApplied] != "" {
		delete(a, lastApplied)
		o.SetAnnotations(a)
	}
	if k := kindOfObject(o); k != nil {
		k.Slim(o)
	}
	// Of the conditions, only those Judge reads (Flux's kinds all set them this way).
	if c, ok := o.(interface {
		GetConditions() []metav1.Condition
		SetConditions([]metav1.Condition)
	}); ok {
		c.SetConditions(slices.DeleteFunc(c.GetConditions(), func(c metav1.Condition) bool {
			return !slices.Contains(judgedConditions, c.Type)
		}))
	}
	return o, nil
}

// NewScheme returns a scheme with the Kubernetes built-ins and every kind of the registry.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	for _, k := range kinds {
		gv := k.Resource().GroupVersion()
		s.AddKnownTypes(gv, k.New(), k.NewList())
		metav1.AddToGroupVersion(s, gv)
	}
	return s
}

// SharedScheme returns one scheme, built once, for every registered cluster: a scheme is
// only read once built, and one of its own (the Kubernetes types' tables) cost each
// registered cluster about 180 KiB (a heap profile of the binary with 50 clusters).
var SharedScheme = sync.OnceValue(NewScheme)

// Items returns the objects of a list of a known kind.
func Items(list client.ObjectList) []client.Object {
	objs, _ := apimeta.ExtractList(list)
	out := make([]client.Object, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(client.Object))
	}
	return out
}

// normalized returns the normalized form of a URL, none when it names no repository.
func normalized(raw string) []string {
	n, err := NormalizeURL(raw)
	if err != nil {
		return nil
	}
	return []string{n}
}
