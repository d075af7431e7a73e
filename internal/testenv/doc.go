// Package testenv starts the real parts the integration tests and the demo run against:
// a Kubernetes API server with etcd (controller-runtime envtest), a Gitea server on
// loopback, a Gitea Actions runner in host mode, Flux's source-controller and
// kustomize-controller as local processes, kube-controller-manager, kube-scheduler and kwok
// simulating a node (Workloads: Deployments roll out, their pods become Ready or not as kwok
// stages say, no container ever runs and no pod IP is ever reached), and Flagger with a
// Prometheus query API the test answers. It also writes Flux status the way Flux's
// controllers do, for tests that run without them.
//
// The binaries are built once from the Go module proxy by hack/testbin.sh (`make testbin`)
// into a cache outside the tree; this package only reads their paths from the environment
// (see [Paths]) and never downloads anything.
//
// Every part comes in two forms: StartX(ctx, ...) returns the running part and an error,
// for TestMain and programs, and must be stopped with Stop; NewX(t, ...) calls t.Fatal on
// error, registers Stop with t.Cleanup and prints the tail of the part's log when the test
// failed. Processes run in their own process group and are stopped with SIGTERM, then
// SIGKILL after a few seconds; their output is kept in log files in the part's directory.
package testenv
