package api

import "time"

// Selector chooses the Flux objects a platform reconcile asks to reconcile.
type Selector struct {
	// Region selects the clusters of a region (the local cluster's is --region).
	Region string `json:"region,omitempty"`
	// Clusters selects clusters by name.
	Clusters []string `json:"clusters,omitempty"`
	// Namespaces restricts to these namespaces.
	Namespaces []string `json:"namespaces,omitempty"`
	// Kinds restricts to these kinds (a Flux kind flux-webhook knows; case-insensitive).
	// Default: Kustomization and HelmRelease.
	Kinds []string `json:"kinds,omitempty"`
	// LabelSelector restricts to objects with matching labels.
	LabelSelector string `json:"labelSelector,omitempty"`
	// WithSource also reconciles, first, the sources the selected objects build from.
	// Default true.
	WithSource *bool `json:"withSource,omitempty"`
	// All must be set for a selector that narrows nothing.
	All bool `json:"all,omitempty"`
}

// Job is one platform reconcile.
type Job struct {
	ID       string    `json:"id"`
	Selector Selector  `json:"selector"`
	Token    string    `json:"token"`
	Created  time.Time `json:"created"`
	Deadline time.Time `json:"deadline"`
	// Requested is set once the leader has requested every target (until then the job is
	// queued, its targets not listed yet).
	Requested bool     `json:"requested"`
	Targets   []Target `json:"targets"`
	// Skipped holds the objects selected but not requested: suspended, or not patched.
	Skipped []Outcome `json:"skipped,omitempty"`
	// Unreachable lists selected clusters that could not be asked.
	Unreachable []ClusterError `json:"unreachable,omitempty"`
}

// Progress is where one target of a job stands.
type Progress struct {
	Target
	// State is pending, or the final success, failure or error.
	State       string `json:"state"`
	Description string `json:"description,omitempty"`
}

// JobStatus is a job and its progress.
type JobStatus struct {
	Job
	Coalesced bool           `json:"coalesced,omitempty"`
	Progress  []Progress     `json:"progress"`
	Counts    map[string]int `json:"counts"`
	Done      bool           `json:"done"`
}
