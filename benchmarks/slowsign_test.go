package benchmarks

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const webhookKey = "bench-webhook-key-0123456789abcdef-01234"

// BenchmarkHookUnderSlowSignedReads measures, over loopback, the real binary answering valid
// pushes (a push that matches nothing, as BenchmarkHookLoopback) with and without an attack
// in the same run: 64 connections from 16 addresses sending /hook requests under a made-up
// webhook signature, each announcing a body of 1 MiB and sending a byte a second (cut by the
// service after 2 s, they connect again at once). The phases alternate in four blocks, so
// that both see the same machine. An op is one push; half carry a Bearer token, half a
// webhook signature. Metrics: p50 and p99 of each kind in each phase, in microseconds, and
// how many of the attack's reads the service held on average during the attack
// (flux_webhook_http_signed_reads_in_flight).
func BenchmarkHookUnderSlowSignedReads(b *testing.B) {
	ctx := b.Context()
	svc := startRegionService(b, "webhook-key", webhookKey)
	hookURL, metricsURL := svc.hookURL, svc.metricsURL
	httpc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2}}
	body, token := noMatchPush(b)
	mac := hmac.New(sha256.New, []byte(webhookKey))
	mac.Write(body)
	signature := hex.EncodeToString(mac.Sum(nil))
	n := 0
	push := func(signed bool) (time.Duration, error) {
		n++
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, hookURL, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Gitea-Event", "push")
		req.Header.Set("X-Gitea-Delivery", fmt.Sprintf("slow-%d-%d", time.Now().UnixNano(), n))
		if signed {
			req.Header.Set("X-Gitea-Signature", signature)
		} else {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		return timed(httpc, req, `"result":"no-match"`)
	}
	for i := range 20 {
		if _, err := push(i%2 == 1); err != nil {
			b.Fatal(err)
		}
	}

	// attack runs the 64 slow senders until stop is closed, and counts their connections.
	var connects atomic.Int64
	attack := func(stop chan struct{}) *sync.WaitGroup {
		var wg sync.WaitGroup
		for i := range 64 {
			from := &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("127.0.95.%d", i/4+1))}
			wg.Go(func() {
				for {
					d := net.Dialer{LocalAddr: from, Timeout: 5 * time.Second}
					c, err := d.Dial("tcp", svc.hookAddr)
					if err != nil {
						select {
						case <-stop:
							return
						case <-time.After(100 * time.Millisecond):
							continue
						}
					}
					connects.Add(1)
					fmt.Fprintf(c, "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Gitea-Signature: %s\r\nContent-Length: %d\r\n\r\n{", strings.Repeat("0", 64), 1<<20)
					cut := make(chan struct{})
					go func() { // the service's answer (408, 503) or its closing
						var buf [512]byte
						for {
							if _, err := c.Read(buf[:]); err != nil {
								close(cut)
								return
							}
						}
					}()
				trickle:
					for {
						select {
						case <-stop:
							c.Close()
							return
						case <-cut:
							break trickle
						case <-time.After(time.Second):
							if _, err := c.Write([]byte(" ")); err != nil {
								break trickle
							}
						}
					}
					c.Close()
				}
			})
		}
		return &wg
	}

	const blocks = 4
	per := max(b.N/(2*blocks), 2)
	lat := map[string][]time.Duration{}
	var held []float64
	b.ResetTimer()
	for range blocks {
		for _, loaded := range []bool{false, true} {
			var stop chan struct{}
			var wg *sync.WaitGroup
			if loaded {
				stop = make(chan struct{})
				wg = attack(stop)
				time.Sleep(time.Second) // every slow sender in its read
			}
			for i := range per {
				signed := i%2 == 1
				d, err := push(signed)
				if err != nil {
					b.Fatal(err)
				}
				key := fmt.Sprintf("%s-%s", map[bool]string{false: "quiet", true: "attacked"}[loaded], map[bool]string{false: "bearer", true: "signed"}[signed])
				lat[key] = append(lat[key], d)
				if loaded && i%10 == 0 {
					held = append(held, metricsOf(b, httpc, metricsURL)["flux_webhook_http_signed_reads_in_flight"])
				}
			}
			if loaded {
				close(stop)
				wg.Wait()
				time.Sleep(2500 * time.Millisecond) // the service let go of their reads
			}
		}
	}
	b.StopTimer()
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }
	var line []string
	for _, key := range []string{"quiet-bearer", "attacked-bearer", "quiet-signed", "attacked-signed"} {
		l := lat[key]
		slices.Sort(l)
		b.ReportMetric(us(pct(l, 50)), key+"-p50-µs")
		b.ReportMetric(us(pct(l, 99)), key+"-p99-µs")
		line = append(line, fmt.Sprintf("%s p50 %s p99 %s (%d)", key, pct(l, 50), pct(l, 99), len(l)))
	}
	mean := 0.0
	for _, h := range held {
		mean += h / float64(len(held))
	}
	b.ReportMetric(mean, "attack-reads-held")
	b.Logf("%s; the service held %.1f of the attack's reads on average, %d attack connections in all", strings.Join(line, ", "), mean, connects.Load())
}
