package main

import (
	"bytes"
	"strings"
	"testing"
)

// Every line is written, however many of one message arrive in a second: a burst of pushes
// must leave a request line for each (a sampling logger keeps 100 a second, then one in 100).
func TestLoggerWritesEveryLine(t *testing.T) {
	const burst = 1000
	for _, encoding := range []string{"json", "console"} {
		t.Run(encoding, func(t *testing.T) {
			var out bytes.Buffer
			log, err := (&logOptions{Level: "info", Encoding: encoding}).Logger(&out)
			if err != nil {
				t.Fatal(err)
			}
			for i := range burst {
				log.Info("request", "status", 401, "n", i)
			}
			log.V(1).Info("debug line, not at info")
			if n := strings.Count(out.String(), "\n"); n != burst {
				t.Fatalf("%d lines written of %d", n, burst)
			}
		})
	}
}

func TestLoggerRefusesBadOptions(t *testing.T) {
	for _, o := range []logOptions{{Level: "loud", Encoding: "json"}, {Level: "info", Encoding: "xml"}} {
		if _, err := o.Logger(&bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "want") {
			t.Errorf("%+v: %v", o, err)
		}
	}
}
