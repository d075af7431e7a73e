package cluster

// The bounds of what a cache keeps of an object, for the tests of package cluster_test.
const (
	MaxRequestedAtBytes  = maxRequestedAtBytes
	MaxLabelBytes        = maxLabelBytes
	MaxCachedObjectBytes = maxCachedObjectBytes
)
