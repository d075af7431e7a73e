package flux

import (
	"strings"

	"github.com/Masterminds/semver/v3"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
)

const (
	branchPrefix = "refs/heads/"
	tagPrefix    = "refs/tags/"

	// fluxDefaultBranch is the branch source-controller checks out when a GitRepository
	// names no reference at all (GitRepositoryRef's documented default).
	fluxDefaultBranch = "master"
)

// RefMatches reports whether a push to the full Git reference pushed (e.g.
// "refs/heads/main") can change what a GitRepository with reference ref fetches. It follows
// source-controller's precedence: commit, then name, then semver, then tag, then branch.
//   - a pinned commit never moves: no push matches it;
//   - name matches the full reference;
//   - semver matches any pushed tag that satisfies the range (a tag that is not a version,
//     or a range that does not parse, matches: a spare reconcile is harmless, a missed
//     one is not);
//   - tag matches that tag, branch that branch, and no reference Flux's default branch.
func RefMatches(ref *sourcev1.GitRepositoryRef, pushed string) bool {
	if ref == nil {
		ref = &sourcev1.GitRepositoryRef{}
	}
	switch {
	case ref.Commit != "":
		return false
	case ref.Name != "":
		return ref.Name == pushed
	case ref.SemVer != "":
		tag, ok := strings.CutPrefix(pushed, tagPrefix)
		if !ok {
			return false
		}
		return semverAllows(ref.SemVer, tag)
	case ref.Tag != "":
		return pushed == tagPrefix+ref.Tag
	case ref.Branch != "":
		return pushed == branchPrefix+ref.Branch
	default:
		return pushed == branchPrefix+fluxDefaultBranch
	}
}

func semverAllows(constraint, tag string) bool {
	c, err := semver.NewConstraint(constraint)
	if err != nil {
		return true
	}
	v, err := semver.NewVersion(tag)
	if err != nil {
		return true // a Git tag that is no version: reconciling costs less than missing it
	}
	return c.Check(v)
}

// semverSelects reports whether a registry tag is one a semver constraint can select:
// source-controller lists an OCI repository's tags and skips those that are no version,
// so a push of "latest" never changes what a range picks.
func semverSelects(constraint, tag string) bool {
	if _, err := semver.NewVersion(tag); err != nil {
		return false
	}
	return semverAllows(constraint, tag)
}
