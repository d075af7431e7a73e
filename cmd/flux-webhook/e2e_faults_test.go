package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openova-io/flux-webhook/internal/testenv"
)

// acceptWhileFluxPaused pushes a commit and has it accepted (202) while Flux's controllers
// are frozen, so Flux's answer comes only after the fault the test injects; the pending
// statuses are posted first.
func acceptWhileFluxPaused(t *testing.T, a *app, value string) string {
	t.Helper()
	sha := a.commit(t, "deploy/configmap.yaml", configMap(a.name, value), value)
	e2e.flux.Pause()
	t.Cleanup(e2e.flux.Resume)
	resp, body := hookPost(t, a.pushEvent(sha), a.token())
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("push: %d %v", resp.StatusCode, body)
	}
	a.waitPending(t, sha)
	return sha
}

// faultModes runs a fault test with statuses per object and per cluster: exactly one final
// status per context in both.
// Whatever a mode's test did, the shared service runs again after it: a failure that left
// it killed fails that test, not every later one.
func faultModes(t *testing.T, name string, test func(t *testing.T, a *app)) {
	t.Run("per-object", func(t *testing.T) {
		t.Cleanup(func() { restartServiceAfter(t) })
		test(t, newApp(t, name+"-"+randomSuffix(), "main"))
	})
	t.Run("per-cluster", func(t *testing.T) {
		t.Cleanup(func() { restartServiceAfter(t) })
		test(t, newClusterApp(t, name+"-c-"+randomSuffix()))
	})
}

// restartService starts the shared service again after a test killed it (a kubelet would).
func restartService(t *testing.T) {
	t.Helper()
	if err := restartIfExited(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// restartServiceAfter is restartService for a cleanup, when the test's context is done.
func restartServiceAfter(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := restartIfExited(ctx); err != nil {
		t.Error(err)
	}
}

func restartIfExited(ctx context.Context) error {
	if exited, _ := e2e.service.Exited(); !exited {
		return nil
	}
	return e2e.service.Restart(ctx, e2e.ready)
}

// kill -9 between the 202 and Flux's answer: the next process finds the pending request in
// the API and posts the final status, exactly once.
func TestKillBetweenAcceptAndAnswer(t *testing.T) {
	integration(t)
	faultModes(t, "kill", func(t *testing.T, a *app) {
		sha := acceptWhileFluxPaused(t, a, "survives-kill")
		e2e.service.Kill()
		e2e.flux.Resume() // Flux answers while nobody listens
		time.Sleep(2 * time.Second)
		start := time.Now()
		restartService(t)
		a.waitAllFinal(t, sha, "success")
		t.Logf("final statuses %s after the restart (lease takeover included)", time.Since(start).Round(100*time.Millisecond))
	})
}

// kill -9 right after the 202, before the leader's worker requested anything: the push
// record survives, and the next process requests and reports it, exactly once.
func TestKillRightAfterAccept(t *testing.T) {
	integration(t)
	faultModes(t, "kill-accepted", func(t *testing.T, a *app) {
		sha := a.commit(t, "deploy/configmap.yaml", configMap(a.name, "survives-early-kill"), "survives-early-kill")
		resp, body := hookPost(t, a.pushEvent(sha), a.token())
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("push: %d %v", resp.StatusCode, body)
		}
		e2e.service.Kill()
		restartService(t)
		a.waitAllFinal(t, sha, "success")
	})
}

// Two replicas: the leader is killed; the other takes the lease and finishes its report.
func TestLeaderKilled(t *testing.T) {
	integration(t)
	faultModes(t, "leader", testLeaderKilled)
}

func testLeaderKilled(t *testing.T, a *app) {
	ports, err := testenv.FreePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := e2e.proxy.KubeconfigVia(t.Context(), e2e.kube.Kubeconfig, t.TempDir(), "kubeconfig")
	if err != nil {
		t.Fatal(err)
	}
	replica := testenv.NewService(t, "replica", e2e.bin, fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[2]),
		serviceArgs(kubeconfig, ports)...)
	// Which of the two leads (after its latest start) decides which one is killed.
	leads := func(log string) bool {
		b, _ := os.ReadFile(log)
		if i := bytes.LastIndex(b, []byte(`"msg":"starting"`)); i >= 0 {
			b = b[i:]
		}
		return bytes.Contains(b, []byte(`"msg":"elected leader`))
	}
	var leader, follower *testenv.Service
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("service leads: %v, replica leads: %v", leads(e2e.service.Log), leads(replica.Log))
		}
	})
	waitFor(t, 30*time.Second, "one leader of two replicas", func() bool {
		switch a, b := leads(e2e.service.Log), leads(replica.Log); {
		case a && !b:
			leader, follower = e2e.service, replica
		case b && !a:
			leader, follower = replica, e2e.service
		default:
			return false
		}
		return true
	})
	sha := acceptWhileFluxPaused(t, a, "survives-leader")
	leader.Kill()
	e2e.flux.Resume()
	start := time.Now()
	a.waitAllFinal(t, sha, "success")
	t.Logf("the follower took over and reported in %s", time.Since(start).Round(100*time.Millisecond))
	if !leads(follower.Log) {
		t.Fatal("the follower never acquired the lease")
	}
	restartService(t)
	replica.Stop() // if it leads, it releases the lease: the shared service leads again at once
}

// Gitea stopped for 60 s while Flux answers: the final status is retried with backoff and
// posted once Gitea is back, exactly once. (source-controller fetches from Gitea too, so it
// fetches first; kustomize-controller, frozen until Gitea is down, then applies from
// source-controller's storage.)
func TestGiteaDownForAMinute(t *testing.T) {
	integration(t)
	a := newApp(t, "gitea-down-"+randomSuffix(), "main")
	sha := a.commit(t, "deploy/configmap.yaml", configMap(a.name, "survives-gitea"), "survives-gitea")
	e2e.flux.PauseApply()
	t.Cleanup(e2e.flux.Resume)
	if resp, body := hookPost(t, a.pushEvent(sha), a.token()); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("push: %d %v", resp.StatusCode, body)
	}
	a.waitFinal(t, sha, "GitRepository", "success")
	waitFor(t, time.Minute, "pending Kustomization", func() bool {
		states, _ := a.states(t, sha, a.context("Kustomization"))
		return slices.Equal(states, []string{"pending"})
	})
	e2e.gitea.Kill()
	e2e.flux.Resume()
	time.Sleep(60 * time.Second)
	if err := e2e.gitea.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	a.waitFinal(t, sha, "Kustomization", "success")
	t.Logf("status posted %s after Gitea came back", time.Since(start).Round(100*time.Millisecond))
}

// The API server cut off from flux-webhook during a push, for longer than the leader's
// renew deadline: the leader gives up its lease and exits (controller-runtime's rule against
// two leaders); started again, it finds the pending request and reports it.
func TestAPIServerLostDuringPush(t *testing.T) {
	integration(t)
	faultModes(t, "api-lost", func(t *testing.T, a *app) {
		sha := acceptWhileFluxPaused(t, a, "survives-api")
		e2e.proxy.Cut()
		e2e.flux.Resume() // Flux (not behind the proxy) answers meanwhile
		time.Sleep(10 * time.Second)
		if err := e2e.proxy.Restore(); err != nil {
			t.Fatal(err)
		}
		exited, err := e2e.service.Exited()
		t.Logf("after 10 s without the API server the service exited: %v (%v)", exited, err)
		restartService(t)
		a.waitAllFinal(t, sha, "success")
	})
}

// loadRequests is the size of the load test: bounded, loopback only.
const loadRequests = 1000

// 1,000 hook requests in bursts — every commit of a series delivered many times over, in
// random order and concurrently, as Actions steps, native webhooks and redeliveries would —
// get no 5xx, and every commit ends with exactly one final status per Flux object.
func TestLoad(t *testing.T) {
	integration(t)
	faultModes(t, "load", testLoad)
}

func testLoad(t *testing.T, a *app) {
	const commits = 40
	var shas []string
	for i := range commits {
		shas = append(shas, a.commit(t, "deploy/configmap.yaml", configMap(a.name, fmt.Sprint(i)), fmt.Sprint(i)))
	}
	type result struct {
		code int
		took time.Duration
	}
	results := make([]result, loadRequests)
	order := make([]int, loadRequests)
	for i := range order {
		order[i] = i % commits
	}
	for i := range order { // a fixed shuffle: deliveries arrive out of order
		j := (i*7919 + 13) % loadRequests
		order[i], order[j] = order[j], order[i]
	}
	const burst = 100
	start := time.Now()
	for b := 0; b < loadRequests; b += burst {
		var wg sync.WaitGroup
		for i := b; i < b+burst; i++ {
			wg.Go(func() {
				t0 := time.Now()
				n := order[i]
				before := strings.Repeat("0", 40)
				if n > 0 {
					before = shas[n-1]
				}
				resp, _ := hookPost(t, a.pushEventFrom(before, shas[n]), a.token())
				results[i] = result{resp.StatusCode, time.Since(t0)}
			})
		}
		wg.Wait()
	}
	elapsed := time.Since(start)
	codes := map[int]int{}
	var lat []time.Duration
	for _, r := range results {
		codes[r.code]++
		lat = append(lat, r.took)
	}
	slices.Sort(lat)
	t.Logf("%d requests in bursts of %d: %s, codes %v, latency p50 %s p99 %s max %s", loadRequests, burst,
		elapsed.Round(time.Millisecond), codes, lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1])
	for code, n := range codes {
		if code >= 500 {
			t.Fatalf("%d answers %d", n, code)
		}
	}
	// Every commit, every object: one final status, and nothing after it.
	var found int
	contexts := []string{a.context("GitRepository"), a.context("Kustomization")}
	if a.perCluster {
		contexts = []string{clusterContext}
	}
	for _, sha := range shas {
		for _, kind := range contexts {
			waitFor(t, resultWindow, "final status of "+sha[:7]+" "+kind, func() bool {
				states, _ := a.states(t, sha, kind)
				return len(states) > 0 && states[len(states)-1] != "pending"
			})
			states, last := a.states(t, sha, kind)
			finals := 0
			for _, s := range states {
				if s != "pending" {
					finals++
				}
			}
			if finals != 1 || slices.Index(states, "pending") > 0 {
				t.Fatalf("%s %s: states %v (%s), want one final after at most one pending", sha[:7], kind, states, last.Description)
			}
			found++
		}
	}
	t.Logf("final statuses expected %d, found %d", len(contexts)*commits, found)
}
