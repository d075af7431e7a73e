package observe

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/openova-io/flux-webhook/gitops/record"
)

// Text returns a description fit for a commit status, a pull request summary, a stream line
// and the record: plain text (PlainText), cut to the record's bound (record.Bounded). Every
// text a status carries goes through it, Flux's messages first of all: whoever writes a
// Flux object's status or its source (a tenant, in its vcluster) writes them.
func Text(s string) string { return record.Bounded(PlainText(s)) }

// PlainText returns s as one line of plain text: control characters (newlines, tabs,
// terminal escapes) and line or paragraph separators become spaces; format characters
// (Unicode's Cf: bidirectional embeddings, overrides and isolates, zero-width spaces and
// joiners, the byte order mark, soft hyphens, tag characters) and bytes that are not UTF-8
// are removed, so that what a reader sees is what the text says, in the order it says it.
func PlainText(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || unicode.In(r, unicode.Zl, unicode.Zp) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case r == utf8.RuneError, unicode.Is(unicode.Cf, r):
		case unicode.IsControl(r), unicode.In(r, unicode.Zl, unicode.Zp):
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// MarkdownCode returns s as plain text in an inline code span, for a Markdown table cell of
// the pull request summary: nothing in it is Markdown (no link, image, emphasis, heading or
// HTML), and Gitea's post-processing links no URL, @mention, #issue or commit inside code.
// A backtick, which would end the span, becomes an apostrophe; a pipe, which would end the
// cell, is escaped as GitHub Flavored Markdown escapes it in a table. Empty stays empty.
func MarkdownCode(s string) string {
	s = strings.TrimSpace(PlainText(s))
	if s == "" {
		return ""
	}
	s = strings.NewReplacer("`", "'", "|", `\|`).Replace(s)
	return "`" + s + "`"
}
