package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The secret sweep: for the whole end-to-end suite, every place a secret could surface is
// searched for the hook token, the platform token and the Gitea API token the service holds:
// the service's log, its /metrics, every Kubernetes Event in every namespace, the Flux objects
// and job ConfigMaps it writes, and every answer the tests got (recorded by recorder).

// maxRecorded bounds what the recorder keeps; the suite's answers are a few MiB.
const maxRecorded = 256 << 20

// recorder is an http.RoundTripper that keeps a copy of every response's headers and body as
// the caller reads it.
type recorder struct {
	base http.RoundTripper
	*answers
}

// answers is what recorders sharing it have kept.
type answers struct {
	mu        sync.Mutex
	list      []*recorded
	kept      int
	truncated bool
}

type recorded struct {
	what string // method and URL
	mu   sync.Mutex
	buf  bytes.Buffer
}

func newRecorder(base http.RoundTripper) *recorder { return &recorder{base: base, answers: &answers{}} }

// Wrap returns a transport over base that records into the same answers.
func (r *recorder) Wrap(base http.RoundTripper) http.RoundTripper {
	return &recorder{base: base, answers: r.answers}
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.base.RoundTrip(req)
	if err != nil || !r.records(req) {
		return resp, err
	}
	rec := &recorded{what: req.Method + " " + req.URL.Redacted()}
	var hdr bytes.Buffer
	_ = resp.Header.Write(&hdr)
	rec.write(r.answers, hdr.Bytes())
	r.add(rec)
	resp.Body = &teeBody{ReadCloser: resp.Body, rec: rec, r: r.answers}
	return resp, nil
}

// records reports whether a request's answer is kept: all but those of the Gitea API that
// hand back the credentials the tests gave it, a token created for them or a webhook's
// settings (its Authorization header). What flux-webhook posts to Gitea (statuses, comments)
// is kept, as the tests read it back.
func (r *recorder) records(req *http.Request) bool {
	p := req.URL.Path
	switch {
	case strings.HasPrefix(p, "/api/v1/users/") && strings.HasSuffix(p, "/tokens"):
		return false
	case strings.HasPrefix(p, "/api/v1/repos/") && strings.Contains(p, "/hooks"):
		return false
	}
	return true
}

func (rec *recorded) write(r *answers, p []byte) {
	r.mu.Lock()
	if r.kept+len(p) > maxRecorded {
		r.truncated = true
		r.mu.Unlock()
		return
	}
	r.kept += len(p)
	r.mu.Unlock()
	rec.mu.Lock()
	rec.buf.Write(p)
	rec.mu.Unlock()
}

// Add records an answer that did not come through an http.Client (curl's output).
func (r *answers) Add(what string, b []byte) {
	rec := &recorded{what: what}
	rec.write(r, b)
	r.add(rec)
}

func (r *answers) add(rec *recorded) {
	r.mu.Lock()
	r.list = append(r.list, rec)
	r.mu.Unlock()
}

type teeBody struct {
	io.ReadCloser
	rec *recorded
	r   *answers
}

func (t *teeBody) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	t.rec.write(t.r, p[:n])
	return n, err
}

func (r *answers) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.list)
}

// find returns the answers that contain any of secrets, by what was asked.
func (r *answers) find(secrets map[string]string) []string {
	r.mu.Lock()
	answers := append([]*recorded(nil), r.list...)
	r.mu.Unlock()
	var out []string
	for _, a := range answers {
		a.mu.Lock()
		for name, s := range secrets {
			if bytes.Contains(a.buf.Bytes(), []byte(s)) {
				out = append(out, fmt.Sprintf("%s in the answer to %s", name, a.what))
			}
		}
		a.mu.Unlock()
	}
	return out
}

// secrets returns every secret value the suite used, by name: the constants, the tokens
// rotated in, and the Secrets' values now.
func secrets(ctx context.Context) map[string]string {
	out := map[string]string{
		"the first hook key":   firstHookKey,
		"the current hook key": e2e.hookKey,
		"the webhook key":      e2e.webhookKey,
		"the platform token":   platformToken,
		"the Gitea token":      e2e.giteaToken,
	}
	derived.Lock()
	for tok, name := range derived.tokens {
		out[name+" ("+tok[len(tok)-8:]+")"] = tok
	}
	derived.Unlock()
	for name, secret := range map[string]string{"hook key": hookKeySecret, "webhook key": webhookKeySecret, "record key": recordKeySecret, "platform": platformSecret, "Gitea": giteaSecret, "enrollment": enrollSecret} {
		s := &corev1.Secret{}
		if err := e2e.kube.Client.Get(ctx, client.ObjectKey{Namespace: fluxNS, Name: secret}, s); err == nil {
			if v := strings.TrimSpace(string(s.Data["token"])); v != "" {
				out["the "+name+" token now in "+secret] = v
			}
		}
	}
	// One name per value; a short value would match by chance, and none is that short.
	byValue := map[string]string{}
	for name, v := range out {
		if prev, ok := byValue[v]; len(v) >= 8 && (!ok || len(name) < len(prev)) {
			byValue[v] = name
		}
	}
	out = map[string]string{}
	for v, name := range byValue {
		out[name] = v
	}
	return out
}

// sweepSecrets searches every place a secret could surface.
func sweepSecrets(ctx context.Context) error {
	secrets := secrets(ctx)
	var found []string
	check := func(where string, b []byte) {
		for name, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				found = append(found, name+" in "+where)
			}
		}
	}

	logs, _ := filepath.Glob(filepath.Join(e2e.dir, "flux-webhook*.log"))
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			return err
		}
		check(filepath.Base(l), b)
	}
	if len(logs) == 0 {
		return errors.New("no service log to search")
	}

	resp, err := (&http.Client{}).Get(e2e.metrics)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte("flux_webhook_")) {
		return fmt.Errorf("metrics: %d, %d bytes without flux-webhook's metrics", resp.StatusCode, len(b))
	}
	check("/metrics", b)

	// Events in every namespace, both APIs' views, and what the service writes on objects.
	for _, list := range []client.ObjectList{&eventsv1.EventList{}, &corev1.EventList{}, &corev1.ConfigMapList{},
		&sourcev1.GitRepositoryList{}, &sourcev1.HelmChartList{}, &kustomizev1.KustomizationList{}, &helmv2.HelmReleaseList{}} {
		if err := e2e.kube.Client.List(ctx, list); err != nil {
			return fmt.Errorf("list %T: %w", list, err)
		}
		items, _ := meta.ExtractList(list)
		for _, it := range items {
			o := it.(client.Object)
			b, _ := json.Marshal(o)
			check(fmt.Sprintf("%T %s/%s", o, o.GetNamespace(), o.GetName()), b)
		}
	}

	found = append(found, e2e.answers.find(secrets)...)
	if e2e.answers.truncated {
		found = append(found, fmt.Sprintf("answers over %d MiB were not all recorded", maxRecorded>>20))
	}
	if len(found) > 0 {
		return errors.New(strings.Join(found, "; "))
	}
	return nil
}
