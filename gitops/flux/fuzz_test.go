package flux

import (
	"strings"
	"testing"

	sourcev1 "github.com/fluxcd/source-controller/api/v1"
)

// RefMatches decides, for a reference pushed by an untrusted sender, which GitRepositories
// reconcile; whatever the inputs, it follows source-controller's precedence.
func FuzzRefMatches(f *testing.F) {
	f.Add("", "", "", "", "main", "refs/heads/main", false)
	f.Add("", "", "", "", "", "refs/heads/master", true)
	f.Add("", "", ">=1.0.0 <2.0.0", "", "", "refs/tags/v1.4.2", false)
	f.Add("", "", "1.x", "v9", "", "refs/tags/latest", false)
	f.Add("", "refs/heads/main", "", "", "main", "refs/heads/main", false)
	f.Add("0123456789012345678901234567890123456789", "", "", "", "main", "refs/heads/main", false)
	f.Add("", "", "", "v1.0.0", "", "refs/tags/v1.0.0", false)
	f.Add("", "", "~1.2.3-rc.1 || ^0.0.1", "", "", "refs/tags/1.2.4-rc.2+build", false)
	f.Fuzz(func(t *testing.T, commit, name, semverRange, tag, branch, pushed string, nilRef bool) {
		ref := &sourcev1.GitRepositoryRef{Commit: commit, Name: name, SemVer: semverRange, Tag: tag, Branch: branch}
		if nilRef {
			ref = nil
			commit, name, semverRange, tag, branch = "", "", "", "", ""
		}
		got := RefMatches(ref, pushed)
		var want, decided bool
		switch {
		case commit != "":
			want, decided = false, true
		case name != "":
			want, decided = name == pushed, true
		case semverRange != "":
			// The range decides among tags only.
			if got && !strings.HasPrefix(pushed, tagPrefix) {
				t.Fatalf("semver %q matched %q, not a tag", semverRange, pushed)
			}
		case tag != "":
			want, decided = pushed == tagPrefix+tag, true
		case branch != "":
			want, decided = pushed == branchPrefix+branch, true
		default:
			want, decided = pushed == branchPrefix+fluxDefaultBranch, true
		}
		if decided && got != want {
			t.Fatalf("RefMatches(%+v, %q) = %v, want %v", ref, pushed, got, want)
		}
	})
}
