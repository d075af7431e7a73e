package flux

import "testing"

func TestRevisionCommit(t *testing.T) {
	const sha = "0123456789abcdef0123456789abcdef01234567"
	const oldSHA = "fedcba9876543210fedcba9876543210fedcba98"
	for _, tt := range []struct {
		rev  string
		want bool
	}{
		{"main@sha1:" + sha, true},
		{"refs/heads/main@sha1:" + sha, true},
		{"v1.0.0@sha1:" + sha, true},
		{"sha1:" + sha, true},
		{"main/" + sha, true},
		{sha, true},
		{"main@sha1:" + oldSHA, false},
		{"main@sha1:x" + sha, false},
		{"", false},
	} {
		if got := revisionCommit(tt.rev) == sha; got != tt.want {
			t.Errorf("revisionCommit(%q) = %q", tt.rev, revisionCommit(tt.rev))
		}
	}
}
