// Package probe serves /healthz and /readyz in controller-runtime's format (checks added
// through the manager, "[+]name ok" lines, "?verbose", "?exclude=", "/readyz/<name>"), and
// adds what controller-runtime's probe server cannot: notes, lines of detail about a part
// that does not decide readiness (enrollment names the scopes it cannot write there while
// the service keeps serving /hook).
package probe

import (
	"fmt"
	"maps"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// Limits of the probe server.
const (
	// readHeaderTimeout and idleTimeout: a kubelet's probe sends a few hundred bytes at once.
	readHeaderTimeout = 5 * time.Second
	idleTimeout       = time.Minute
	// shutdownTimeout bounds the wait for a probe in flight when the manager stops.
	shutdownTimeout = 2 * time.Second
)

// Probes holds the checks and notes, and serves them.
type Probes struct {
	mu      sync.RWMutex
	healthz map[string]healthz.Checker
	readyz  map[string]healthz.Checker
	notes   map[string]func() string
}

// Server returns the probe server on addr, a runnable the manager starts with its other
// HTTP servers: before the caches, so that /healthz answers while they sync.
func (s *Probes) Server(addr string) manager.Runnable {
	timeout := shutdownTimeout
	return &manager.Server{
		Name:            "health probes",
		Server:          &http.Server{Addr: addr, Handler: s.Handler(), ReadHeaderTimeout: readHeaderTimeout, IdleTimeout: idleTimeout},
		ShutdownTimeout: &timeout,
	}
}

// AddHealthz adds a liveness check.
func (s *Probes) AddHealthz(name string, c healthz.Checker) error { return s.add(&s.healthz, name, c) }

// AddReadyz adds a readiness check.
func (s *Probes) AddReadyz(name string, c healthz.Checker) error { return s.add(&s.readyz, name, c) }

func (s *Probes) add(m *map[string]healthz.Checker, name string, c healthz.Checker) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if *m == nil {
		*m = map[string]healthz.Checker{}
	}
	if _, dup := (*m)[name]; dup {
		return fmt.Errorf("probe check %q added twice", name)
	}
	(*m)[name] = c
	return nil
}

// AddNote adds a line of readiness detail that never fails readiness: shown as
// "[+]name ok: <note>" with ?verbose, and at /readyz/<name>.
func (s *Probes) AddNote(name string, note func() string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.notes == nil {
		s.notes = map[string]func() string{}
	}
	s.notes[name] = note
}

// Handler returns the probe endpoints.
func (s *Probes) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, ep := range []struct {
		path  string
		ready bool
	}{{"/healthz", false}, {"/readyz", true}} {
		h := http.StripPrefix(ep.path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serve(w, r, ep.ready) }))
		mux.Handle(ep.path, h)
		mux.Handle(ep.path+"/", h)
	}
	return mux
}

// serve answers /healthz or /readyz (r.URL.Path is what follows it).
func (s *Probes) serve(w http.ResponseWriter, r *http.Request, ready bool) {
	s.mu.RLock()
	checks := maps.Clone(s.healthz)
	var notes map[string]func() string
	if ready {
		checks, notes = maps.Clone(s.readyz), maps.Clone(s.notes)
	}
	s.mu.RUnlock()
	name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if name != "" {
		switch c, n := checks[name], notes[name]; {
		case c != nil:
			if err := c(r); err != nil {
				http.Error(w, fmt.Sprintf("internal server error: %v", err), http.StatusInternalServerError)
				return
			}
			fmt.Fprint(w, "ok")
		case n != nil:
			fmt.Fprintf(w, "ok: %s", oneLine(n()))
		default:
			http.NotFound(w, r)
		}
		return
	}
	excluded := map[string]bool{}
	for _, e := range r.URL.Query()["exclude"] {
		excluded[e] = true
	}
	type line struct{ name, text string }
	var lines []line
	failed := false
	for n, c := range checks {
		switch {
		case excluded[n]:
			lines = append(lines, line{n, "[+]" + n + " excluded: ok"})
		case c(r) != nil:
			// As controller-runtime: the reason is at /readyz/<name>, not here.
			lines = append(lines, line{n, "[-]" + n + " failed: reason withheld"})
			failed = true
		default:
			lines = append(lines, line{n, "[+]" + n + " ok"})
		}
	}
	for n, note := range notes {
		lines = append(lines, line{n, "[+]" + n + " ok: " + oneLine(note())})
	}
	slices.SortFunc(lines, func(a, b line) int { return strings.Compare(a.name, b.name) })
	if failed {
		w.WriteHeader(http.StatusInternalServerError)
	}
	_, verbose := r.URL.Query()["verbose"]
	if !failed && !verbose {
		fmt.Fprint(w, "ok")
		return
	}
	for _, l := range lines {
		fmt.Fprintln(w, l.text)
	}
	if failed {
		fmt.Fprintln(w, "healthz check failed")
	} else {
		fmt.Fprintln(w, "healthz check passed")
	}
}

// oneLine keeps a note on one line.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
}

// Manager is a manager whose health and readiness checks are served by Probes instead of
// controller-runtime's own probe server (turned off: HealthProbeBindAddress "0").
type Manager struct {
	manager.Manager
	Probes *Probes
}

// AddHealthzCheck adds a liveness check to Probes.
func (m Manager) AddHealthzCheck(name string, c healthz.Checker) error {
	return m.Probes.AddHealthz(name, c)
}

// AddReadyzCheck adds a readiness check to Probes.
func (m Manager) AddReadyzCheck(name string, c healthz.Checker) error {
	return m.Probes.AddReadyz(name, c)
}
