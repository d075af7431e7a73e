package docs

import (
	"slices"
	"strings"
	"testing"
)

const md = "# T\n\nIntro `a\nb` and `c`.\n\n## Interface\n\n| flag | default | |\n| --- | --- | --- |\n" +
	"| `--x`, `--y` | `1`, `2` | a `p|q` pipe \\| escaped |\n| `--z` | | z |\n\n```sh\n# not a heading\nflux-webhook serve\n```\n\n" +
	"### Sub\n\n| limit | value |\n| --- | --- |\n| body | 3 MiB |\n\n## Next\n\ntext\n"

func TestSection(t *testing.T) {
	for _, tc := range []struct {
		title, want string
		ok          bool
	}{
		{"Interface", "Sub", true}, // a deeper heading stays inside
		{"Sub", "body", true},
		{"Next", "text", true},
		{"Missing", "", false},
		{"not a heading", "", false}, // inside a code block
	} {
		s, err := Section(md, tc.title)
		if (err == nil) != tc.ok || !strings.Contains(s, tc.want) {
			t.Errorf("Section(%q) = %q, %v", tc.title, s, err)
		}
	}
	if s, _ := Section(md, "Sub"); strings.Contains(s, "text") {
		t.Error("Section(Sub) runs into the next section")
	}
	// Line numbers in a section are the document's.
	s, _ := Section(md, "Sub")
	if rows, err := Table(s, "limit"); err != nil || len(rows) != 1 || rows[0].Line != 22 {
		t.Errorf("the row of section Sub: %+v, %v; want line 22", rows, err)
	}
}

func TestTable(t *testing.T) {
	rows, err := Table(md, "flag", "default")
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"`--x`, `--y`", "`1`, `2`", "a `p|q` pipe | escaped"}, {"`--z`", "", "z"}}
	if len(rows) != len(want) {
		t.Fatalf("rows %+v", rows)
	}
	for i, r := range rows {
		if !slices.Equal(r.Cells, want[i]) {
			t.Errorf("row %d: %q, want %q", i, r.Cells, want[i])
		}
	}
	if rows[0].Line != 10 {
		t.Errorf("first row on line %d, want 10", rows[0].Line)
	}
	if _, err := Table(md, "nope"); err == nil {
		t.Error("a missing table is found")
	}
}

func TestBlocksAndSpans(t *testing.T) {
	b := Blocks(md)
	if len(b) != 1 || b[0].Lang != "sh" || b[0].Text != "# not a heading\nflux-webhook serve" || b[0].Line != 14 {
		t.Errorf("blocks %+v", b)
	}
	var got []string
	for _, s := range Spans(md) {
		got = append(got, s.Text)
	}
	want := []string{"a b", "c", "--x", "--y", "1", "2", "p|q", "--z"}
	if !slices.Equal(got, want) {
		t.Errorf("spans %q, want %q", got, want)
	}
}

func TestSaysInOrder(t *testing.T) {
	for _, tc := range []struct {
		text string
		want []string
		ok   bool
	}{
		{"64 per replica, 4 per client address | `503`", []string{"64 per replica", "4 per client", "`503`"}, true},
		{"32 per replica, 8 per client address | `503`", []string{"64 per replica", "4 per client", "`503`"}, false},
		{"4 per client, 64 per replica", []string{"64 per replica", "4 per client"}, false}, // order
		{"10,000 addresses, 2 s", []string{"10,000 addresses"}, false},                      // a number the code does not hold
		{"10,000 addresses", []string{Thousands(10000) + " addresses"}, true},
	} {
		if err := SaysInOrder(tc.text, tc.want...); (err == nil) != tc.ok {
			t.Errorf("SaysInOrder(%q, %q) = %v", tc.text, tc.want, err)
		}
	}
	if Thousands(25000) != "25,000" || Thousands(999) != "999" || Thousands(1000000) != "1,000,000" {
		t.Error("Thousands")
	}
}
