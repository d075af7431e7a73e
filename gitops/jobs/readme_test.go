package jobs

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/openova-io/flux-webhook/internal/docs"
)

// README.md's limits table says the platform jobs' limits this package holds (the server's
// test holds the other rows).
func TestReadmeLimits(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	section, err := docs.Section(string(b), "Interface")
	if err != nil {
		t.Fatal(err)
	}
	rows, err := docs.Table(section, "limit", "value", "answer")
	if err != nil {
		t.Fatal(err)
	}
	every := time.Duration(float64(time.Second) / platformRate)
	want := []string{fmt.Sprint(platformBurst), fmt.Sprintf("then one per %d s", int(every.Seconds())),
		docs.Thousands(maxJobTargets), "`429`", "`422`"}
	for _, r := range rows {
		if r.Cells[0] == "new platform jobs (all replicas together); targets of one job" {
			if err := docs.SaysInOrder(strings.Join(r.Cells[1:], " | "), want...); err != nil {
				t.Errorf("README.md:%d: %v", r.Line, err)
			}
			return
		}
	}
	t.Error("README.md's limits table has no row of the platform jobs")
}
