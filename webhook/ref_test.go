package webhook_test

import (
	"strings"
	"testing"

	"github.com/openova-io/flux-webhook/webhook"
)

// Git's check-ref-format rules, as ValidRef applies them to a reference a payload or an
// artifact's revision names.
func TestValidRef(t *testing.T) {
	atLimit := "refs/heads/" + strings.Repeat("a", webhook.MaxRefLength-len("refs/heads/"))
	for _, tc := range []struct {
		ref  string
		want bool
	}{
		{"refs/heads/main", true},
		{"refs/tags/v1.2.3", true},
		{"refs/heads/feature/x-1_2", true},
		{"refs/heads/ünïcode", true},
		{atLimit, true},        // exactly MaxRefLength bytes
		{atLimit + "a", false}, // one over
		{"main", false},        // not a full reference
		{"refs/heads/", false}, // ends with a slash
		{"refs/heads/a.", false},
		{"refs/heads/a..b", false},
		{"refs/heads/a@{1}", false},
		{"refs/heads/a.lock", false},
		{"refs/heads/x.lock/y", false}, // a component ending in .lock
		{"refs/heads/.hidden", false},  // a component starting with a dot
		{"refs/heads/a//b", false},
		{"refs/heads/a b", false},
		{"refs/heads/a\nb", false},
		{"refs/heads/a\x7fb", false},
		{"refs/heads/a~1", false},
		{"refs/heads/a^", false},
		{"refs/heads/a:b", false},
		{"refs/heads/a?", false},
		{"refs/heads/a*", false},
		{"refs/heads/a[b", false},
		{`refs/heads/a\b`, false},
		{"refs/heads/a\u202eb", false}, // bidirectional override
		{"refs/heads/a\u200bb", false}, // zero-width space
		{"refs/heads/a\xffb", false},   // not UTF-8
	} {
		if got := webhook.ValidRef(tc.ref); got != tc.want {
			t.Errorf("ValidRef(%q) = %v, want %v", tc.ref, got, tc.want)
		}
	}
}

func TestValidRefName(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"main", true},
		{"v1.2.3", true},
		{"refs/heads/main", true},
		{strings.Repeat("a", webhook.MaxRefLength-len("refs/heads/")), true},
		{strings.Repeat("a", webhook.MaxRefLength-len("refs/heads/")+1), false}, // its full reference is too long
		{"", false},
		{"a..b", false},
		{"x.lock", false},
		{"refs/heads/a..b", false},
	} {
		if got := webhook.ValidRefName(tc.name); got != tc.want {
			t.Errorf("ValidRefName(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}
