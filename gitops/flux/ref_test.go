package flux

import (
	"testing"

	sourcev1 "github.com/fluxcd/source-controller/api/v1"
)

func TestRefMatches(t *testing.T) {
	tests := []struct {
		name   string
		ref    *sourcev1.GitRepositoryRef
		pushed string
		want   bool
	}{
		{"no ref is master", nil, "refs/heads/master", true},
		{"no ref is not main", nil, "refs/heads/main", false},
		{"empty ref is master", &sourcev1.GitRepositoryRef{}, "refs/heads/master", true},
		{"branch", &sourcev1.GitRepositoryRef{Branch: "main"}, "refs/heads/main", true},
		{"other branch", &sourcev1.GitRepositoryRef{Branch: "main"}, "refs/heads/dev", false},
		{"branch is not a tag", &sourcev1.GitRepositoryRef{Branch: "main"}, "refs/tags/main", false},
		{"branch with slash", &sourcev1.GitRepositoryRef{Branch: "release/1.x"}, "refs/heads/release/1.x", true},
		{"tag", &sourcev1.GitRepositoryRef{Tag: "v1.0.0"}, "refs/tags/v1.0.0", true},
		{"other tag", &sourcev1.GitRepositoryRef{Tag: "v1.0.0"}, "refs/tags/v1.0.1", false},
		{"tag over branch", &sourcev1.GitRepositoryRef{Branch: "main", Tag: "v1"}, "refs/heads/main", false},
		{"semver in range", &sourcev1.GitRepositoryRef{SemVer: ">=1.0.0 <2.0.0"}, "refs/tags/v1.4.2", true},
		{"semver out of range", &sourcev1.GitRepositoryRef{SemVer: ">=1.0.0 <2.0.0"}, "refs/tags/v2.0.0", false},
		{"semver ignores branches", &sourcev1.GitRepositoryRef{SemVer: "*"}, "refs/heads/main", false},
		{"semver non-version tag", &sourcev1.GitRepositoryRef{SemVer: "1.x"}, "refs/tags/latest", true},
		{"semver over tag", &sourcev1.GitRepositoryRef{SemVer: "1.x", Tag: "v9"}, "refs/tags/v9", false},
		{"name", &sourcev1.GitRepositoryRef{Name: "refs/heads/main"}, "refs/heads/main", true},
		{"name is exact", &sourcev1.GitRepositoryRef{Name: "refs/heads/main"}, "refs/heads/main2", false},
		{"name over branch", &sourcev1.GitRepositoryRef{Name: "refs/tags/v1", Branch: "main"}, "refs/heads/main", false},
		{"commit never moves", &sourcev1.GitRepositoryRef{Commit: "0123456789012345678901234567890123456789", Branch: "main"}, "refs/heads/main", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RefMatches(tt.ref, tt.pushed); got != tt.want {
				t.Fatalf("RefMatches(%+v, %q) = %v, want %v", tt.ref, tt.pushed, got, tt.want)
			}
		})
	}
}
