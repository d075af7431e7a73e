package cluster

// The bounds of what a cache keeps of an object, for the tests of package cluster_test.
const (
	MaxRequestedAtBytes  = maxRequestedAtBytes
	MaxLabelBytes        = maxLabelBytes
	MaxCachedObjectBytes = maxCachedObjectBytes
)

// The Event writer's bounds and drop counter.
var (
	MaxClusterEvents = maxClusterEvents
	MaxEventNote     = maxEventNote
	EventsDropped    = eventsDropped
)
