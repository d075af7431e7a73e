package cluster

import (
	"runtime/debug"
	"sync"
	"time"
)

// A cache's list decodes every object whole (a Kustomization with its inventory and
// history: 10-20 KiB) before the transform keeps what flux-webhook reads (about 1.5 KiB):
// with the garbage collector's default target the heap grows, while caches list, to twice
// what they keep and more, and the process keeps that memory. While any cache lists (a
// cluster's first sync, a kind picked up later), the collector's target is lowered; once none
// does, it is set back and the memory the lists took is returned to the OS. Nothing changes
// between lists: pushes and Flux's updates run at the default (or GOGC's) target.
const (
	// listingGCPercent is the collector's target while caches list: a collection once the
	// heap has grown by a quarter over what is live.
	listingGCPercent = 25
	// maxListing bounds how long one cluster's list holds the target down: a cluster whose
	// API server stops answering mid-list lets go of it.
	maxListing = 2 * time.Minute
)

// listing counts the caches listing now.
var listing struct {
	mu   sync.Mutex
	n    int
	prev int // the target before the first list
}

// beginListing lowers the collector's target, unless a lower one is set (GOGC), for the
// time a cache lists, and returns what ends it (once, at most maxListing later).
func beginListing() (end func()) {
	listing.mu.Lock()
	if listing.n == 0 {
		listing.prev = debug.SetGCPercent(listingGCPercent)
		if listing.prev < listingGCPercent {
			debug.SetGCPercent(listing.prev) // GOGC asked for less, or off: kept
		}
	}
	listing.n++
	listing.mu.Unlock()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			listing.mu.Lock()
			listing.n--
			last := listing.n == 0
			if last {
				debug.SetGCPercent(listing.prev)
			}
			listing.mu.Unlock()
			if last {
				debug.FreeOSMemory()
			}
		})
	}
	t := time.AfterFunc(maxListing, stop)
	return func() {
		t.Stop()
		stop()
	}
}
