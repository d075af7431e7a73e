package jobs

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/openova-io/flux-webhook/api"
)

// A platform selector as the API decodes it (known fields only) and the domain validates
// it: what is accepted names only DNS labels and known kinds, and is its own canonical form.
func FuzzSelector(f *testing.F) {
	for _, s := range []string{
		`{"region":"eu-central","labelSelector":"tier=platform"}`,
		`{"clusters":["b","a","a"],"namespaces":["flux-system"],"kinds":["kustomization","HelmRelease"],"withSource":false}`,
		`{"all":true}`, `{}`, `{"kinds":["Secret"]}`, `{"region":"../x"}`, `{"labelSelector":"a in (b,c),!d"}`,
		`{"labelSelector":"!!"}`, `{"clusters":[""]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var sel api.Selector
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if dec.Decode(&sel) != nil {
			return
		}
		if _, err := dec.Token(); err != io.EOF {
			return
		}
		out, err := normalize(sel)
		if err != nil {
			if !errors.Is(err, ErrBadSelector) && !errors.Is(err, ErrEmptySelector) {
				t.Fatalf("%s: error %v of no known kind", body, err)
			}
			return
		}
		for _, n := range slices.Concat(out.Clusters, out.Namespaces, []string{out.Region}) {
			if n != "" && len(validation.IsDNS1123Label(n)) > 0 {
				t.Fatalf("%s: accepted name %q", body, n)
			}
		}
		for _, k := range out.Kinds {
			if !slices.Contains(targetKinds(), k) {
				t.Fatalf("%s: accepted kind %q", body, k)
			}
		}
		again, err := normalize(out)
		if err != nil || !reflect.DeepEqual(again, out) || digest(again) != digest(out) {
			t.Fatalf("%s: normalized %+v is not canonical: %+v, %v", body, out, again, err)
		}
	})
}
