package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openova-io/flux-webhook/webhook/enroll"
)

// What `flux-webhook enrollment` prints of a record: a rotation under way, an organization
// with its webhook, a repository found through Flux, one failing, one left alone
// (testdata/enrollment-text.golden; -update rewrites it).
func TestEnrollmentText(t *testing.T) {
	at := func(s string) *time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return &v
	}
	rec := &enroll.Record{
		Updated:       *at("2026-12-07T10:00:05Z"),
		KeyGeneration: "3f9a1c0d2b7e",
		Rotation:      &enroll.Rotation{From: "11aa22bb33cc", To: "3f9a1c0d2b7e", Started: *at("2026-12-07T10:00:00Z"), Pending: 1},
		Scopes: []enroll.ScopeRecord{
			{Scope: "org acme", Level: "organization", Sources: []string{"flag"}, Written: at("2026-12-07T10:00:01Z"), KeyGeneration: "3f9a1c0d2b7e",
				Checked: at("2026-12-07T09:55:00Z"), URL: "https://fw.example", Webhook: &enroll.HookRecord{ID: 12, KeyGeneration: "77cc88dd99ee", Written: at("2026-12-06T08:00:00Z")}},
			{Scope: "repo bob/app", Level: "repository", Sources: []string{"configmap", "flux"}, Written: at("2026-12-06T08:00:00Z"), KeyGeneration: "11aa22bb33cc",
				Error: "put secret: gitea answered 503", Failures: 2, NextAttempt: at("2026-12-07T10:00:15Z")},
			{Scope: "repo carol/site", Level: "repository", Sources: []string{"flux"}, LeftAlone: "the URL variable names another flux-webhook (FLUX_WEBHOOK_URL is \"https://fw.other.example\")"},
		},
		Refused: []string{"repositories: acme/../x"},
	}
	var out bytes.Buffer
	printEnrollment(&out, rec, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-webhook", Name: enroll.RecordName}})
	golden := filepath.Join("testdata", "enrollment-text.golden")
	if *update {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if out.String() != string(want) {
		t.Fatalf("output differs from %s:\n--- got\n%s\n--- want\n%s", golden, out.String(), want)
	}
}
