// Package docs reads the parts of the project's Markdown that tests hold to the code: a
// section, its tables, the code blocks and inline code spans. It understands the Markdown the
// READMEs are written in (GitHub's: ATX headings, pipe tables, ``` fences), not all of it.
package docs

import (
	"fmt"
	"regexp"
	"strings"
)

// Section returns the text under the heading whose title is title ("## Interface" is title
// "Interface"), up to the next heading of the same or a higher level; it is an error when
// there is no such heading. Headings inside code blocks do not count. The text keeps its
// place: the lines before it are there, empty, so that a line number found in it is md's.
func Section(md, title string) (string, error) {
	lines := strings.Split(md, "\n")
	level, start := 0, -1
	fenced := false
	for i, l := range lines {
		if strings.HasPrefix(l, "```") {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		n := headingLevel(l)
		if n == 0 {
			continue
		}
		if start >= 0 && n <= level {
			return strings.Repeat("\n", start) + strings.Join(lines[start:i], "\n"), nil
		}
		if start < 0 && strings.TrimSpace(l[n:]) == title {
			level, start = n, i+1
		}
	}
	if start < 0 {
		return "", fmt.Errorf("no section %q", title)
	}
	return strings.Repeat("\n", start) + strings.Join(lines[start:], "\n"), nil
}

func headingLevel(l string) int {
	n := 0
	for n < len(l) && l[n] == '#' {
		n++
	}
	if n == 0 || n > 6 || n == len(l) || l[n] != ' ' {
		return 0
	}
	return n
}

// Row is one row of a table: its cells, trimmed, and its line in the text (1-based).
type Row struct {
	Cells []string
	Line  int
}

// Table returns the body rows of the first table in text whose header row's cells start
// with header (e.g. "flag", "default"); it is an error when there is none.
func Table(text string, header ...string) ([]Row, error) {
	lines := strings.Split(text, "\n")
	for i := 0; i+1 < len(lines); i++ {
		if !isRow(lines[i]) || !isDelimiter(lines[i+1]) {
			continue
		}
		cells := SplitRow(lines[i])
		if len(cells) < len(header) || !equal(cells[:len(header)], header) {
			continue
		}
		var rows []Row
		for j := i + 2; j < len(lines) && isRow(lines[j]); j++ {
			rows = append(rows, Row{Cells: SplitRow(lines[j]), Line: j + 1})
		}
		return rows, nil
	}
	return nil, fmt.Errorf("no table with header %q", strings.Join(header, " | "))
}

func isRow(l string) bool { return strings.HasPrefix(strings.TrimSpace(l), "|") }

var delimiter = regexp.MustCompile(`^\|(\s*:?-+:?\s*\|)+\s*$`)

func isDelimiter(l string) bool { return delimiter.MatchString(strings.TrimSpace(l)) }

func equal(a, b []string) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// SplitRow splits a table row into its trimmed cells. A '|' inside a code span or escaped
// as '\|' belongs to its cell.
func SplitRow(l string) []string {
	l = strings.TrimSpace(l)
	l = strings.TrimPrefix(l, "|")
	var cells []string
	var cell strings.Builder
	code := false
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case c == '\\' && i+1 < len(l) && l[i+1] == '|':
			cell.WriteByte('|')
			i++
		case c == '`':
			code = !code
			cell.WriteByte(c)
		case c == '|' && !code:
			cells = append(cells, strings.TrimSpace(cell.String()))
			cell.Reset()
		default:
			cell.WriteByte(c)
		}
	}
	if rest := strings.TrimSpace(cell.String()); rest != "" {
		cells = append(cells, rest)
	}
	return cells
}

// Block is a fenced code block: its info string ("sh", "yaml", "" for none), its text and
// the line of its first text line (1-based).
type Block struct {
	Lang string
	Text string
	Line int
}

// Blocks returns the fenced code blocks of md.
func Blocks(md string) []Block {
	var blocks []Block
	var cur *Block
	var text []string
	for i, l := range strings.Split(md, "\n") {
		if !strings.HasPrefix(l, "```") {
			if cur != nil {
				text = append(text, l)
			}
			continue
		}
		if cur == nil {
			cur = &Block{Lang: strings.TrimSpace(strings.TrimPrefix(l, "```")), Line: i + 2}
			text = nil
			continue
		}
		cur.Text = strings.Join(text, "\n")
		blocks = append(blocks, *cur)
		cur = nil
	}
	return blocks
}

// Span is an inline code span outside code blocks, with its line breaks as spaces, and the
// line it starts on (1-based).
type Span struct {
	Text string
	Line int
}

var span = regexp.MustCompile("`[^`]+`")

// Spans returns the inline code spans of md, outside code blocks. A span may run over a
// line break, as Markdown allows; a blank line ends a paragraph, and any span in it.
func Spans(md string) []Span {
	var spans []Span
	lines := strings.Split(md, "\n")
	fenced := false
	para, start := []string{}, 0
	flush := func() {
		text := strings.Join(para, "\n")
		for _, loc := range span.FindAllStringIndex(text, -1) {
			s := text[loc[0]+1 : loc[1]-1]
			spans = append(spans, Span{Text: strings.Join(strings.Fields(s), " "), Line: start + strings.Count(text[:loc[0]], "\n") + 1})
		}
		para = para[:0]
	}
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, "```"):
			flush()
			fenced = !fenced
		case fenced:
		case strings.TrimSpace(l) == "" || isRow(l):
			// A table row is a paragraph of its own: a span does not run into the next row.
			flush()
			if isRow(l) {
				para, start = append(para, l), i
				flush()
			}
		default:
			if len(para) == 0 {
				start = i
			}
			para = append(para, l)
		}
	}
	flush()
	return spans
}

var number = regexp.MustCompile(`\d+(?:,\d{3})*(?:\.\d+)?`)

// Numbers returns the numbers written in s, thousands separators removed.
func Numbers(s string) []string {
	var out []string
	for _, n := range number.FindAllString(s, -1) {
		out = append(out, strings.ReplaceAll(n, ",", ""))
	}
	return out
}

// SaysInOrder checks that text says each of want, in that order, and no other number than
// theirs: a limit written in a table cell is the code's, and nothing else there is a
// number the code does not hold.
func SaysInOrder(text string, want ...string) error {
	rest := text
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			return fmt.Errorf("%q does not say %q (after what comes before it)", text, w)
		}
		rest = rest[i+len(w):]
	}
	got, expected := Numbers(text), Numbers(strings.Join(want, " "))
	if strings.Join(got, " ") != strings.Join(expected, " ") {
		return fmt.Errorf("%q has the numbers %v, the code %v", text, got, expected)
	}
	return nil
}

// Thousands writes n with a thousands separator, as the READMEs do (10,000).
func Thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
