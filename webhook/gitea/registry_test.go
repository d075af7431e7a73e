package gitea_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/internal/testenv"
	"github.com/openova-io/flux-webhook/webhook/gitea"
)

// registryCalls counts the manifest requests flux-webhook makes of the registry, and how
// many were in flight at once.
type registryCalls struct {
	base                http.RoundTripper
	heads, gets         atomic.Int32
	inFlight, maxFlight atomic.Int32
	delay               time.Duration
}

func (c *registryCalls) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.Contains(req.URL.Path, "/manifests/") {
		n := c.inFlight.Add(1)
		defer c.inFlight.Add(-1)
		for m := c.maxFlight.Load(); n > m && !c.maxFlight.CompareAndSwap(m, n); m = c.maxFlight.Load() {
		}
		if req.Method == http.MethodHead {
			c.heads.Add(1)
		} else {
			c.gets.Add(1)
		}
		time.Sleep(c.delay)
	}
	return c.base.RoundTrip(req)
}

// A tag's manifest is read from the real Gitea registry bounded: by digest (a HEAD first),
// cached by digest (the same artifact again costs a HEAD only), never above its size limit
// (an oversized manifest is not read: Unread says so), a few reads at a time whatever the
// number of events.
func TestArtifactReadsBounded(t *testing.T) {
	integration(t)
	ctx := t.Context()
	tok, err := giteaSrv.CreateToken(ctx, "flux-webhook-registry", "read:package", "read:user")
	if err != nil {
		t.Fatal(err)
	}
	calls := &registryCalls{base: http.DefaultTransport}
	g := &gitea.Gitea{URL: giteaSrv.URL, HTTP: &http.Client{Timeout: 30 * time.Second, Transport: calls}, Keys: &credentials.Keyring{}}
	setToken(t, g, tok)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cm.yaml"), []byte("kind: ConfigMap\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	owner := giteaSrv.AdminUser
	push := func(pkg, revision string, annotations map[string]string) {
		t.Helper()
		if _, err := giteaSrv.PushFluxArtifact(ctx, testenv.FluxArtifact{Dir: dir, Repository: owner + "/" + pkg, Tag: "latest",
			Source: "http://example/acme/fleet", Revision: revision, Annotations: annotations}); err != nil {
			t.Fatal(err)
		}
	}
	sha := strings.Repeat("a", 40)
	push("bounded", "main@sha1:"+sha, nil)

	art, err := g.Artifact(ctx, owner+"/bounded", "latest")
	if err != nil || art.Revision != "main@sha1:"+sha || art.Source != "http://example/acme/fleet" || art.Unread != "" {
		t.Fatalf("Artifact = %+v, %v", art, err)
	}
	if h, gets := calls.heads.Load(), calls.gets.Load(); h != 1 || gets != 1 {
		t.Fatalf("first read: %d HEAD, %d GET, want 1 and 1", h, gets)
	}
	// The same manifest again: its digest is known, nothing more is read.
	if art, err = g.Artifact(ctx, owner+"/bounded", "latest"); err != nil || art.Revision != "main@sha1:"+sha {
		t.Fatalf("Artifact again = %+v, %v", art, err)
	}
	if h, gets := calls.heads.Load(), calls.gets.Load(); h != 2 || gets != 1 {
		t.Fatalf("second read: %d HEAD, %d GET in all, want 2 and 1", h, gets)
	}

	// A manifest above the limit (an annotation of 300 KB) is not read.
	push("oversized", "main@sha1:"+sha, map[string]string{"org.example/padding": strings.Repeat("p", 300<<10)})
	gets := calls.gets.Load()
	art, err = g.Artifact(ctx, owner+"/oversized", "latest")
	if err != nil || art.Unread == "" || art.Revision != "" || art.Source != "" {
		t.Fatalf("oversized: %+v, %v", art, err)
	}
	if calls.gets.Load() != gets {
		t.Fatal("an oversized manifest was fetched")
	}
	t.Logf("oversized: %s", art.Unread)

	// Many events at once: a few reads in flight, each answered.
	calls.delay = 100 * time.Millisecond
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			if _, err := g.Artifact(ctx, owner+"/bounded", "latest"); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if m := calls.maxFlight.Load(); m > 4 || m < 2 {
		t.Fatalf("%d manifest requests in flight at most, want 2 to 4 (maxManifestReads)", m)
	}
}
