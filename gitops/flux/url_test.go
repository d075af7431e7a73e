package flux

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestNormalizeURL(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"https://gitea.example.com/Org/Repo.git", "gitea.example.com/org/repo"},
		{"https://gitea.example.com/org/repo", "gitea.example.com/org/repo"},
		{"https://gitea.example.com/org/repo/", "gitea.example.com/org/repo"},
		{"https://gitea.example.com/org/repo.git/", "gitea.example.com/org/repo"},
		{"https://user:s3cret@GITEA.example.com:443/org/repo.git", "gitea.example.com/org/repo"},
		{"http://127.0.0.1:3000/gitea-admin/app.git", "127.0.0.1:3000/gitea-admin/app"},
		{"http://gitea.example.com:80/org/repo", "gitea.example.com/org/repo"},
		{"ssh://git@gitea.example.com/org/repo.git", "gitea.example.com/org/repo"},
		{"ssh://git@gitea.example.com:22/org/repo.git", "gitea.example.com/org/repo"},
		{"ssh://git@gitea.example.com:2222/org/repo.git", "gitea.example.com:2222/org/repo"},
		{"git@gitea.example.com:org/repo.git", "gitea.example.com/org/repo"},
		{"gitea.example.com:org/repo", "gitea.example.com/org/repo"},
		{"git://gitea.example.com/org/repo", "gitea.example.com/org/repo"},
		{"https://gitea.example.com/sub/path/org/repo.git", "gitea.example.com/sub/path/org/repo"},
		{"https://[::1]:3000/org/repo", "[::1]:3000/org/repo"},
		{"https://gitea.example.com./org/repo", "gitea.example.com/org/repo"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := NormalizeURL(tt.in)
			if err != nil || got != tt.want {
				t.Fatalf("NormalizeURL(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestNormalizeURLRejects(t *testing.T) {
	for _, in := range []string{
		"",
		"https://gitea.example.com",
		"https://gitea.example.com/",
		"https://gitea.example.com/.git",
		"ftp://gitea.example.com/org/repo",
		"https://gitea.example.com/org/../repo",
		"https://gitea.example.com/org//repo",
		"https://gitea.example.com/org/repo?x=1",
		"https://gitea.example.com/org/repo#main",
		"https:///org/repo",
		"https://gitea.example.com/org/re po",
		"https://gitea.example.com/org/repo\n",
		"/local/path/repo",
		"file:///srv/git/repo.git",
		"https://" + strings.Repeat("a", maxURLLength) + "/o/r",
		"#:00",
		"git@#host:org/repo",
		"git@host:org/repo?x",
		"host_name:org/repo",
		"https://-host/org/repo",
		"https://[zz::1]/org/repo",
		"0:0aa%0000",
		"https://host/org/re%00po",
		"https://host/org/répo",
	} {
		if got, err := NormalizeURL(in); !errors.Is(err, ErrInvalidURL) {
			t.Errorf("NormalizeURL(%q) = %q, %v; want ErrInvalidURL", in, got, err)
		}
	}
}

// Every form Gitea reports for one repository normalizes to the same key.
func TestNormalizeURLFormsAgree(t *testing.T) {
	forms := []string{
		"http://gitea.example.com/org/repo.git",      // clone_url
		"http://gitea.example.com/org/repo",          // html_url
		"git@gitea.example.com:org/repo.git",         // ssh_url
		"ssh://git@gitea.example.com/org/repo.git",   // what people write in Flux
		"https://token@gitea.example.com/Org/Repo/",  // with credentials and case
		"https://gitea.example.com:443/ORG/REPO.git", // default port
	}
	want, _ := NormalizeURL(forms[0])
	for _, f := range forms {
		if got, err := NormalizeURL(f); err != nil || got != want {
			t.Errorf("NormalizeURL(%q) = %q, %v; want %q", f, got, err, want)
		}
	}
}

func FuzzNormalizeURL(f *testing.F) {
	for _, s := range []string{
		"https://gitea.example.com/org/repo.git", "git@host:org/repo", "ssh://git@host:2222/o/r",
		"http://[::1]:3000/o/r", "https://u:p@h/o/r/", "h:o/r", "::", "@:", "https://h/%2e%2e/r",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := NormalizeURL(raw)
		if err != nil {
			return
		}
		// A key is stable, lower case, has a host and a path, and no credentials.
		if again, err := NormalizeURL("https://" + got); err != nil || again != got {
			t.Fatalf("NormalizeURL(%q) = %q, not stable: %q, %v", raw, got, again, err)
		}
		if strings.ToLower(got) != got || strings.Contains(got, "@") || !strings.Contains(got, "/") ||
			strings.HasSuffix(got, "/") || strings.HasSuffix(got, ".git") {
			t.Fatalf("NormalizeURL(%q) = %q", raw, got)
		}
	})
}

func TestAliases(t *testing.T) {
	a, err := ParseAlias("https://gitea.example.com/=http://gitea-http.gitea.svc.cluster.local:3000")
	if err != nil {
		t.Fatal(err)
	}
	if a.From != "gitea.example.com" || a.To != "gitea-http.gitea.svc.cluster.local:3000" {
		t.Fatalf("parsed %+v", a)
	}
	got := Expand("gitea.example.com/org/app", []Alias{a})
	if want := []string{"gitea.example.com/org/app", "gitea-http.gitea.svc.cluster.local:3000/org/app"}; !slices.Equal(got, want) {
		t.Fatalf("expand = %v, want %v", got, want)
	}
	if got := Expand("gitea.example.community/org/app", []Alias{a}); len(got) != 1 {
		t.Fatalf("a host that only starts like the alias expanded: %v", got)
	}
	sub, _ := ParseAlias("https://example.com/gitea=http://gitea:3000")
	if got := Expand("example.com/gitea/org/app", []Alias{sub}); len(got) != 2 || got[1] != "gitea:3000/org/app" {
		t.Fatalf("sub-path alias: %v", got)
	}
	for _, bad := range []string{"https://a.example.com", "=http://b", "ftp://a=http://b", "https://a=:", "https://a?x=http://b"} {
		if _, err := ParseAlias(bad); err == nil {
			t.Errorf("ParseAlias(%q) accepted", bad)
		}
	}
}
