package report

import (
	"errors"
	"time"
)

// Backoff of status posts that failed: doubling from postBackoffMin, capped at
// postBackoffMax, with jitter so that many statuses failing together do not retry together.
// The cap bounds how late a status arrives after Gitea comes back (a retry every 30 s per
// waiting status is cheap for Gitea).
const (
	postBackoffMin = time.Second
	postBackoffMax = 30 * time.Second
)

// Permanent is implemented by errors retrying cannot cure (Gitea answered 4xx).
type Permanent interface{ Permanent() bool }

func permanent(err error) bool {
	var p Permanent
	return errors.As(err, &p) && p.Permanent()
}
