// Package version holds the build's version, stamped at link time:
//
//	-ldflags "-X github.com/openova-io/flux-webhook/internal/version.Version=v1.2.3
//	          -X github.com/openova-io/flux-webhook/internal/version.Commit=<sha>"
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

var (
	Version = "dev"
	Commit  = ""
)

// String returns "<version> (commit <commit>, <go version>)". Without a stamped commit it
// uses the VCS revision the go command recorded, if any.
func String() string {
	commit := Commit
	if commit == "" {
		if info, ok := debug.ReadBuildInfo(); ok {
			for _, s := range info.Settings {
				if s.Key == "vcs.revision" {
					commit = s.Value
				}
			}
		}
	}
	if commit == "" {
		commit = "unknown"
	}
	return fmt.Sprintf("%s (commit %s, %s)", Version, commit, runtime.Version())
}
