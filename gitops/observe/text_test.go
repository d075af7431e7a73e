package observe

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// Flux's messages as a tenant can write them (a Flux object's status, a source's error):
// what a status and the pull request summary carry of them is plain text, read as written.
func TestHostileTexts(t *testing.T) {
	for _, tt := range []struct {
		name, in, text, code string
	}{
		{"plain", "applied main@sha1:0123456789ab", "applied main@sha1:0123456789ab", "`applied main@sha1:0123456789ab`"},
		{"newlines and tabs", "line one\nline two\r\n\tthree", "line one line two   three", "`line one line two   three`"},
		{"terminal escape", "\x1b[31mred\x1b[0m", " [31mred [0m", "`[31mred [0m`"},
		{"NUL and DEL", "a\x00b\x7fc", "a b c", "`a b c`"},
		{"C1 control", "a\u0085b\u009bc", "a b c", "`a b c`"},
		{"bidi override (Trojan Source)", "access granted \u202eTRUST\u202c", "access granted TRUST", "`access granted TRUST`"},
		{"bidi isolates and marks", "\u2066a\u2069\u2067b\u2069\u2068c\u2069\u200e\u200f\u061c", "abc", "`abc`"},
		{"bidi embeddings", "\u202ax\u202by\u202c", "xy", "`xy`"},
		{"zero-width space and joiners", "suc\u200bcess \u200c\u200d\u2060ok", "success ok", "`success ok`"},
		{"byte order mark", "\ufeffapplied", "applied", "`applied`"},
		{"soft hyphen", "ap\u00adplied", "applied", "`applied`"},
		{"tag characters", "ok\U000E0041\U000E007F", "ok", "`ok`"},
		{"line and paragraph separators", "a\u2028b\u2029c", "a b c", "`a b c`"},
		{"invalid UTF-8", "a\xff\xfeb", "ab", "`ab`"},
		{"markdown link", "see [the fix](https://evil.example/phish)", "see [the fix](https://evil.example/phish)", "`see [the fix](https://evil.example/phish)`"},
		{"markdown image", "![x](https://evil.example/track.png)", "![x](https://evil.example/track.png)", "`![x](https://evil.example/track.png)`"},
		{"html", "<img src=x onerror=alert(1)><script>alert(1)</script>", "<img src=x onerror=alert(1)><script>alert(1)</script>", "`<img src=x onerror=alert(1)><script>alert(1)</script>`"},
		{"a backtick ends no span", "a`b``c", "a`b``c", "`a'b''c`"},
		{"a pipe ends no cell", "dry-run failed | bad name", "dry-run failed | bad name", "`dry-run failed \\| bad name`"},
		{"mentions and references", "@admin see #1 and org/repo!2", "@admin see #1 and org/repo!2", "`@admin see #1 and org/repo!2`"},
		{"heading and emphasis", "# **boom**", "# **boom**", "`# **boom**`"},
		{"only invisible", "\u200b\u202e\ufeff", "", ""},
		{"empty", "", "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := PlainText(tt.in); got != tt.text {
				t.Errorf("PlainText(%q) = %q, want %q", tt.in, got, tt.text)
			}
			if got := MarkdownCode(tt.in); got != tt.code {
				t.Errorf("MarkdownCode(%q) = %q, want %q", tt.in, got, tt.code)
			}
		})
	}
	// A message over the bound is cut, on a character, after it is made plain.
	long := strings.Repeat("\u202eé", 300)
	if got := Text(long); len(got) > 255 || !utf8.ValidString(got) || strings.ContainsRune(got, '\u202e') {
		t.Fatalf("Text of a long hostile message: %d bytes %q", len(got), got)
	}
}

// FuzzPlainText: whatever a message holds, the text is valid UTF-8 without control or
// format characters, plain text is stable, and the code span is one span, on one line, with
// no pipe a table would split on.
func FuzzPlainText(f *testing.F) {
	for _, s := range []string{"applied", "a\nb", "\u202eevil", "a`b|c", "[x](y)", "\xff", "``", "\\|"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p := PlainText(s)
		if !utf8.ValidString(p) {
			t.Fatalf("not UTF-8: %q", p)
		}
		for _, r := range p {
			if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || unicode.In(r, unicode.Zl, unicode.Zp) {
				t.Fatalf("%q keeps %U", p, r)
			}
		}
		if PlainText(p) != p {
			t.Fatalf("not stable: %q", p)
		}
		if d := Text(s); len(d) > 255 || !utf8.ValidString(d) {
			t.Fatalf("Text: %d bytes %q", len(d), d)
		}
		c := MarkdownCode(s)
		if c == "" {
			if strings.TrimSpace(p) != "" {
				t.Fatalf("no span for %q", p)
			}
			return
		}
		inner := strings.TrimSuffix(strings.TrimPrefix(c, "`"), "`")
		if len(c) < 3 || c[0] != '`' || c[len(c)-1] != '`' || strings.Contains(inner, "`") {
			t.Fatalf("not one code span: %q", c)
		}
		if strings.ContainsAny(c, "\n\r") {
			t.Fatalf("more than a line: %q", c)
		}
		for i := 0; i < len(inner); i++ {
			if inner[i] == '|' && (i == 0 || inner[i-1] != '\\') {
				t.Fatalf("unescaped pipe: %q", c)
			}
		}
	})
}
