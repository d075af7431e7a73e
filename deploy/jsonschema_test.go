package deploy_test

import (
	"encoding/json"
	"fmt"
	"math"
	"net/mail"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

// A JSON Schema (draft-07) checker for the keywords the project's schemas use: the Blueprint
// CRD schema written from the Catalyst guide, the chart's values.schema.json and the
// Blueprint's configSchema. A keyword it does not know makes the check fail, so a schema
// never passes for a rule nobody checked. (Helm checks values.schema.json itself at install;
// this one also checks documents Helm never sees: blueprint.yaml, the example HelmRelease's
// values, configSchema against the overlay's values.)

// schemaErrors returns what is wrong with doc under schema, "<JSON pointer>: <why>" each; nil
// when doc is valid. Both are decoded JSON (map[string]any, []any, float64, ...).
func schemaErrors(schema map[string]any, doc any) []string {
	c := &schemaChecker{root: schema}
	c.check(schema, doc, "")
	return c.errs
}

type schemaChecker struct {
	root map[string]any
	errs []string
}

// Annotations and containers of definitions: no rule of their own.
var schemaAnnotations = map[string]bool{
	"$schema": true, "$id": true, "$comment": true, "title": true, "description": true,
	"default": true, "examples": true, "readOnly": true, "writeOnly": true, "deprecated": true,
	"definitions": true, "$defs": true,
}

func (c *schemaChecker) fail(path, format string, args ...any) {
	if path == "" {
		path = "/"
	}
	c.errs = append(c.errs, path+": "+fmt.Sprintf(format, args...))
}

// valid reports whether x passes s, without recording errors.
func (c *schemaChecker) valid(s, x any, path string) bool {
	sub := &schemaChecker{root: c.root}
	sub.check(s, x, path)
	return len(sub.errs) == 0
}

func (c *schemaChecker) check(schema, x any, path string) {
	switch s := schema.(type) {
	case bool:
		if !s {
			c.fail(path, "not allowed")
		}
		return
	case map[string]any:
		c.checkObject(s, x, path)
	default:
		c.fail(path, "schema is a %T", schema)
	}
}

func (c *schemaChecker) checkObject(s map[string]any, x any, path string) {
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	// Draft-07: a $ref's siblings are ignored (as Helm's validator ignores them).
	if _, ok := s["$ref"]; ok {
		keys = []string{"$ref"}
	}
	for _, k := range keys {
		v := s[k]
		if schemaAnnotations[k] || strings.HasPrefix(k, "x-") {
			continue
		}
		switch k {
		case "$ref":
			ref, _ := v.(string)
			target, err := c.resolve(ref)
			if err != nil {
				c.fail(path, "%v", err)
				continue
			}
			c.check(target, x, path)
		case "type":
			if !typeMatches(v, x) {
				c.fail(path, "%s, want type %v", describe(x), v)
				return // the other keywords' messages would only repeat it
			}
		case "enum":
			if !slices.ContainsFunc(v.([]any), func(e any) bool { return jsonEqual(e, x) }) {
				c.fail(path, "%s is not one of %v", describe(x), v)
			}
		case "const":
			if !jsonEqual(v, x) {
				c.fail(path, "%s, want %v", describe(x), v)
			}
		case "properties", "required", "additionalProperties", "patternProperties", "minProperties", "maxProperties", "propertyNames":
			if m, ok := x.(map[string]any); ok {
				c.checkMember(k, v, s, m, path)
			}
		case "items", "minItems", "maxItems", "uniqueItems":
			if a, ok := x.([]any); ok {
				c.checkItems(k, v, a, path)
			}
		case "pattern", "minLength", "maxLength", "format":
			if str, ok := x.(string); ok {
				c.checkString(k, v, str, path)
			}
		case "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf":
			if n, ok := number(x); ok {
				c.checkNumber(k, v.(float64), n, path)
			}
		case "allOf":
			for _, sub := range v.([]any) {
				c.check(sub, x, path)
			}
		case "anyOf":
			if !slices.ContainsFunc(v.([]any), func(sub any) bool { return c.valid(sub, x, path) }) {
				c.fail(path, "%s matches none of anyOf", describe(x))
			}
		case "oneOf":
			n := 0
			for _, sub := range v.([]any) {
				if c.valid(sub, x, path) {
					n++
				}
			}
			if n != 1 {
				c.fail(path, "%s matches %d of oneOf, want exactly one", describe(x), n)
			}
		case "not":
			if c.valid(v, x, path) {
				c.fail(path, "%s matches what `not` forbids", describe(x))
			}
		case "if":
			if c.valid(v, x, path) {
				if then, ok := s["then"]; ok {
					c.check(then, x, path)
				}
			} else if els, ok := s["else"]; ok {
				c.check(els, x, path)
			}
		case "then", "else":
			// with "if"
		default:
			c.fail(path, "the schema uses %q, which this checker does not know", k)
		}
	}
}

func (c *schemaChecker) checkMember(k string, v any, s, m map[string]any, path string) {
	switch k {
	case "properties":
		props := v.(map[string]any)
		for _, name := range sortedKeys(m) {
			if ps, ok := props[name]; ok {
				c.check(ps, m[name], path+"/"+name)
			}
		}
	case "required":
		for _, r := range v.([]any) {
			if _, ok := m[r.(string)]; !ok {
				c.fail(path, "missing property %q", r)
			}
		}
	case "additionalProperties":
		props, _ := s["properties"].(map[string]any)
		patterns, _ := s["patternProperties"].(map[string]any)
		for _, name := range sortedKeys(m) {
			if _, ok := props[name]; ok {
				continue
			}
			if slices.ContainsFunc(sortedKeys(patterns), func(p string) bool { return mustRegexp(p).MatchString(name) }) {
				continue
			}
			if b, ok := v.(bool); ok && !b {
				c.fail(path, "additional property %q is not allowed", name)
				continue
			}
			c.check(v, m[name], path+"/"+name)
		}
	case "patternProperties":
		for _, p := range sortedKeys(v.(map[string]any)) {
			for _, name := range sortedKeys(m) {
				if mustRegexp(p).MatchString(name) {
					c.check(v.(map[string]any)[p], m[name], path+"/"+name)
				}
			}
		}
	case "propertyNames":
		for _, name := range sortedKeys(m) {
			c.check(v, name, path+"/"+name)
		}
	case "minProperties":
		if float64(len(m)) < v.(float64) {
			c.fail(path, "%d properties, want at least %v", len(m), v)
		}
	case "maxProperties":
		if float64(len(m)) > v.(float64) {
			c.fail(path, "%d properties, want at most %v", len(m), v)
		}
	}
}

func (c *schemaChecker) checkItems(k string, v any, a []any, path string) {
	switch k {
	case "items":
		if tuple, ok := v.([]any); ok {
			for i := range min(len(tuple), len(a)) {
				c.check(tuple[i], a[i], fmt.Sprintf("%s/%d", path, i))
			}
			return
		}
		for i, e := range a {
			c.check(v, e, fmt.Sprintf("%s/%d", path, i))
		}
	case "minItems":
		if float64(len(a)) < v.(float64) {
			c.fail(path, "%d items, want at least %v", len(a), v)
		}
	case "maxItems":
		if float64(len(a)) > v.(float64) {
			c.fail(path, "%d items, want at most %v", len(a), v)
		}
	case "uniqueItems":
		if v.(bool) {
			for i := range a {
				for j := i + 1; j < len(a); j++ {
					if jsonEqual(a[i], a[j]) {
						c.fail(path, "items %d and %d are equal", i, j)
					}
				}
			}
		}
	}
}

func (c *schemaChecker) checkString(k string, v any, str, path string) {
	switch k {
	case "pattern":
		if !mustRegexp(v.(string)).MatchString(str) {
			c.fail(path, "%q does not match %s", str, v)
		}
	case "minLength":
		if float64(utf8.RuneCountInString(str)) < v.(float64) {
			c.fail(path, "%q is shorter than %v", str, v)
		}
	case "maxLength":
		if float64(utf8.RuneCountInString(str)) > v.(float64) {
			c.fail(path, "%q is longer than %v", str, v)
		}
	case "format":
		switch v {
		case "hostname":
			if !mustRegexp(`^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`).MatchString(str) || len(str) > 253 {
				c.fail(path, "%q is not a hostname", str)
			}
		case "email":
			if _, err := mail.ParseAddress(str); err != nil {
				c.fail(path, "%q is not an email address", str)
			}
		default:
			c.fail(path, "format %q is unknown to this checker", v)
		}
	}
}

func (c *schemaChecker) checkNumber(k string, limit, n float64, path string) {
	bad := map[string]bool{
		"minimum": n < limit, "maximum": n > limit,
		"exclusiveMinimum": n <= limit, "exclusiveMaximum": n >= limit,
		"multipleOf": math.Mod(n, limit) != 0,
	}[k]
	if bad {
		c.fail(path, "%v fails %s %v", n, k, limit)
	}
}

// resolve follows a local reference, #/definitions/<name> or any JSON pointer in the root.
func (c *schemaChecker) resolve(ref string) (any, error) {
	if !strings.HasPrefix(ref, "#/") {
		return nil, fmt.Errorf("$ref %q: only local references are supported", ref)
	}
	var cur any = c.root
	for _, p := range strings.Split(ref[2:], "/") {
		p = strings.NewReplacer("~1", "/", "~0", "~").Replace(p)
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("$ref %q does not resolve", ref)
		}
		if cur, ok = m[p]; !ok {
			return nil, fmt.Errorf("$ref %q does not resolve", ref)
		}
	}
	return cur, nil
}

func typeMatches(want, x any) bool {
	if list, ok := want.([]any); ok {
		return slices.ContainsFunc(list, func(t any) bool { return typeMatches(t, x) })
	}
	switch want {
	case "object":
		_, ok := x.(map[string]any)
		return ok
	case "array":
		_, ok := x.([]any)
		return ok
	case "string":
		_, ok := x.(string)
		return ok
	case "boolean":
		_, ok := x.(bool)
		return ok
	case "null":
		return x == nil
	case "number":
		_, ok := number(x)
		return ok
	case "integer":
		n, ok := number(x)
		return ok && n == math.Trunc(n)
	}
	return false
}

func number(x any) (float64, bool) {
	switch n := x.(type) {
	case float64:
		return n, true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

func jsonEqual(a, b any) bool {
	na, oka := number(a)
	nb, okb := number(b)
	if oka && okb {
		return na == nb
	}
	return reflect.DeepEqual(a, b)
}

func describe(x any) string {
	b, _ := json.Marshal(x)
	if len(b) > 80 {
		b = append(b[:77], "..."...)
	}
	return string(b)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var regexps sync.Map

// mustRegexp compiles an ECMA-262 pattern of the subset RE2 shares with it.
func mustRegexp(p string) *regexp.Regexp {
	if re, ok := regexps.Load(p); ok {
		return re.(*regexp.Regexp)
	}
	re := regexp.MustCompile(p)
	regexps.Store(p, re)
	return re
}

// The checker refuses what it should, names where, and fails on keywords it does not know.
func TestSchemaChecker(t *testing.T) {
	schema := map[string]any{}
	if err := json.Unmarshal([]byte(`{
		"type": "object", "additionalProperties": false, "required": ["name"],
		"definitions": {"label": {"type": "string", "pattern": "^[a-z]+$"}},
		"properties": {
			"name": {"$ref": "#/definitions/label"},
			"ports": {"type": "array", "minItems": 1, "uniqueItems": true, "items": {"type": "integer", "minimum": 1, "maximum": 65535}},
			"mode": {"enum": ["a", "b"]},
			"either": {"anyOf": [{"const": ""}, {"$ref": "#/definitions/label"}]},
			"one": {"oneOf": [{"type": "string"}, {"type": "string", "minLength": 3}]},
			"n": {"type": ["integer", "null"], "exclusiveMinimum": 0}
		},
		"if": {"properties": {"mode": {"const": "b"}}, "required": ["mode"]},
		"then": {"required": ["ports"]}
	}`), &schema); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		doc, want string // want: "" valid, else a fragment of the error
	}{
		{`{"name": "x"}`, ""},
		{`{"name": "x", "ports": [80, 443], "mode": "b", "either": "", "one": "ab", "n": null}`, ""},
		{`{}`, `/: missing property "name"`},
		{`{"name": "X"}`, `/name: "X" does not match`},
		{`{"name": "x", "extra": 1}`, `additional property "extra"`},
		{`{"name": "x", "ports": []}`, "/ports: 0 items"},
		{`{"name": "x", "ports": [80, 80]}`, "/ports: items 0 and 1 are equal"},
		{`{"name": "x", "ports": [0]}`, "/ports/0: 0 fails minimum"},
		{`{"name": "x", "ports": [1.5]}`, "/ports/0: 1.5, want type integer"},
		{`{"name": "x", "mode": "c"}`, `/mode: "c" is not one of`},
		{`{"name": "x", "mode": "b"}`, `missing property "ports"`},
		{`{"name": "x", "either": "A"}`, "/either: \"A\" matches none of anyOf"},
		{`{"name": "x", "one": "abc"}`, "matches 2 of oneOf"},
		{`{"name": "x", "n": 0}`, "/n: 0 fails exclusiveMinimum"},
	} {
		var doc any
		if err := json.Unmarshal([]byte(tc.doc), &doc); err != nil {
			t.Fatal(err)
		}
		errs := strings.Join(schemaErrors(schema, doc), "; ")
		if tc.want == "" && errs != "" || tc.want != "" && !strings.Contains(errs, tc.want) {
			t.Errorf("%s: errors %q, want %q", tc.doc, errs, tc.want)
		}
	}
	if errs := schemaErrors(map[string]any{"dependentRequired": map[string]any{}}, map[string]any{}); len(errs) != 1 || !strings.Contains(errs[0], "does not know") {
		t.Errorf("an unknown keyword: %q", errs)
	}
}
