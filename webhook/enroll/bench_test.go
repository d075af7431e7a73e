package enroll_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "code.gitea.io/sdk/gitea"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/webhook/enroll"
	"github.com/openova-io/flux-webhook/webhook/gitea"
)

// BenchmarkEnrollRepositories enrolls N repositories one by one (each a repository scope)
// against the real Gitea, beside the baseline an operator would script: a loop writing
// each repository's secret and variable through the SDK (the two calls nothing can do
// without), with the controller's 4 workers. Then: a hook key rotation (every secret
// rewritten), unbounded and at the service's default rate, and a resync (every scope
// checked). N is FLUX_WEBHOOK_BENCH_REPOS (default 500).
//
//	go test ./webhook/enroll -run '^$' -bench EnrollRepositories -benchtime 1x -timeout 60m
func BenchmarkEnrollRepositories(b *testing.B) {
	if testing.Short() {
		b.Skip("needs the real Gitea")
	}
	n := 500
	if v, err := strconv.Atoi(os.Getenv("FLUX_WEBHOOK_BENCH_REPOS")); err == nil && v > 0 {
		n = v
	}
	ctx := context.Background()
	admin, err := giteaSrv.Client(ctx)
	if err != nil {
		b.Fatal(err)
	}
	org := "bench-" + suffix()
	if _, _, err := admin.CreateOrg(sdk.CreateOrgOption{Name: org, Visibility: sdk.VisibleTypePrivate}); err != nil {
		b.Fatal(err)
	}
	// Repositories of an organization: the enrollment token's user owns them, as on a
	// sovereign.
	start := time.Now()
	names := make([]string, n)
	parallel(n, func(i int) error {
		names[i] = fmt.Sprintf("repo-%04d", i)
		_, _, err := admin.CreateOrgRepo(org, sdk.CreateRepoOption{Name: names[i], Private: true})
		return err
	})
	b.Logf("%d repositories created in %s", n, time.Since(start).Round(time.Millisecond))

	tok, err := giteaSrv.CreateToken(ctx, "bench-"+suffix(), "write:organization", "write:repository")
	if err != nil {
		b.Fatal(err)
	}
	keys := &credentials.Keyring{}
	_ = keys.Set(credentials.HookKey, randomKey())
	_ = keys.Set(credentials.EnrollToken, tok)
	forge := &counting{Forge: &gitea.Enrollment{URL: giteaSrv.URL, HTTP: &http.Client{Timeout: 30 * time.Second}, Keys: keys}}

	for b.Loop() {
		// The baseline: a script's loop over the repositories, two calls each; run before
		// and after the controller's first enrollment (what each finds: nothing written).
		raw, err := giteaSrv.Client(ctx)
		if err != nil {
			b.Fatal(err)
		}
		script := func() time.Duration {
			start := time.Now()
			parallel(n, func(i int) error {
				s, _ := credentials.RepositoryScope(org + "/" + names[i])
				if _, err := raw.CreateRepoActionSecret(org, names[i], enroll.DefaultSecretName, sdk.CreateOrUpdateSecretOption{Data: credentials.DeriveToken(keys.Current(credentials.HookKey), s)}); err != nil {
					return err
				}
				_, err := raw.CreateRepoActionVariable(org, names[i], enroll.DefaultVariableName, url)
				return err
			})
			return time.Since(start)
		}
		clean := func() { // untimed: back to nothing written
			parallel(n, func(i int) error {
				if _, err := raw.DeleteRepoActionSecret(org, names[i], enroll.DefaultSecretName); err != nil {
					return err
				}
				_, err := raw.DeleteRepoActionVariable(org, names[i], enroll.DefaultVariableName)
				return err
			})
		}
		rawTook := script()
		clean()

		ns := "bench-" + suffix()
		if err := kube.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			b.Fatal(err)
		}
		var scopes []credentials.Scope
		for _, name := range names {
			s, _ := credentials.RepositoryScope(org + "/" + name)
			scopes = append(scopes, s)
		}
		clk := &clock{t: time.Now()}
		store := &enroll.Store{Client: kube.Client, Reader: kube.Client, Namespace: ns}
		c := &enroll.Controller{
			Enroller:       &enroll.Enroller{Forge: forge, Keys: keys, Settings: enroll.Settings{SecretName: enroll.DefaultSecretName, VariableName: enroll.DefaultVariableName, URL: url}},
			Store:          store,
			Static:         scopes,
			CallsPerSecond: -1,
			Log:            logr.Discard(),
			Now:            clk.now,
		}
		pass := func(what string) (time.Duration, float64) {
			forge.take()
			start := time.Now()
			c.Pass(ctx)
			took := time.Since(start)
			calls := forge.take()
			rec, err := store.Load(ctx)
			if err != nil {
				b.Fatal(err)
			}
			for _, s := range rec.Scopes {
				if s.Error != "" || s.KeyGeneration != credentials.Fingerprint(keys.Current(credentials.HookKey)) {
					b.Fatalf("%s: %s: %+v", what, s.Scope, s)
				}
			}
			b.Logf("%-34s %5d repositories in %8s: %4.1f ms and %.2f Gitea calls a repository", what, n, took.Round(time.Millisecond),
				float64(took.Microseconds())/1000/float64(n), float64(calls)/float64(n))
			return took, float64(calls) / float64(n)
		}
		first, firstCalls := pass("first enrollment (unbounded)")
		clean()
		rawTook = (rawTook + script()) / 2 // the same values flux-webhook wrote
		b.Logf("%-34s %5d repositories in %8s: %4.1f ms and 2.00 Gitea calls a repository (mean of two runs; ratio to flux-webhook: %.2f)", "baseline: a script's loop", n,
			rawTook.Round(time.Millisecond), float64(rawTook.Microseconds())/1000/float64(n), float64(rawTook)/float64(first))
		_ = keys.Set(credentials.HookKey, randomKey())
		clk.add(time.Second)
		rotation, rotationCalls := pass("rotation (unbounded)")
		clk.add(enroll.DefaultResync + time.Second)
		resync, resyncCalls := pass("resync (unbounded)")
		// The same rotation at the service's own rate: the next leader, say, taking over the
		// record.
		c = &enroll.Controller{Enroller: &enroll.Enroller{Forge: forge, Keys: keys, Settings: c.Enroller.Settings},
			Store: store, Static: scopes, Log: logr.Discard(), Now: clk.now}
		_ = keys.Set(credentials.HookKey, randomKey())
		clk.add(time.Second)
		rotationLimited, _ := pass("rotation (10 calls/s, the default)")
		cm := &corev1.ConfigMap{}
		if err := kube.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: enroll.RecordName}, cm); err != nil {
			b.Fatal(err)
		}
		b.Logf("record: %d bytes for %d scopes", len(cm.Data[enroll.RecordKey]), n)
		b.ReportMetric(first.Seconds(), "first-s")
		b.ReportMetric(firstCalls, "first-calls/repo")
		b.ReportMetric(rawTook.Seconds(), "script-s")
		b.ReportMetric(rotation.Seconds(), "rotation-s")
		b.ReportMetric(rotationCalls, "rotation-calls/repo")
		b.ReportMetric(rotationLimited.Seconds(), "rotation-10qps-s")
		b.ReportMetric(resync.Seconds(), "resync-s")
		b.ReportMetric(resyncCalls, "resync-calls/repo")
		b.ReportMetric(float64(len(cm.Data[enroll.RecordKey]))/float64(n), "record-B/repo")
	}
}

// parallel runs f for 0..n-1 on 4 goroutines, failing on the first error.
func parallel(n int, f func(i int) error) {
	var wg sync.WaitGroup
	next := make(chan int)
	var mu sync.Mutex
	var first error
	for range 4 {
		wg.Go(func() {
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("%d: %w", i, err)
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		panic(strings.TrimSpace(first.Error()))
	}
}
