package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cuesched/cuesched/internal/testworld/headless"
)

// tinyFarm is a scenario file small enough for the default suite: a
// dependency, two widths, frames dying of memory.
const tinyFarm = `about a tiny farm
hosts 6 cores=8,16 mem=16G,32G alloc=a,b
sub s1 a size=40 burst=60
sub s1 b size=40 burst=60
sub s2 a size=20 burst=40
job j show=s1 count=6 every=5m
layer sim job=j frames=4-8 cores=2 mem=4G used=0.5-1.5 runtime=10m spread=0.3 tags=a,b
layer render job=j frames=4-8 cores=1 mem=2G runtime=5m after=sim tags=a,b
job k show=s2 count=3 every=10m
layer wide job=k frames=2 cores=16 mem=8G runtime=20m tags=a
`

func writeTiny(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tiny.sim")
	if err := os.WriteFile(p, []byte(tinyFarm), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// --json prints a report valid under the committed schema, a result per
// variant, the same for the same seed but for wall_s (the only key naming
// wall).
func TestSimJSONSchema(t *testing.T) {
	t.Parallel()
	file := writeTiny(t)
	args := []string{"sim", "--scenario", file, "--json", "--variant", "default",
		"--variant", "epvm policy=epvm order=strict selfish-services=a,b",
		"--variant", "history memory-from-history=* memory-headroom=0.2",
		"--variant", "reserve reservations=true reservation-after=1m"}
	code, out := cli(t, nil, args...)
	if code != 0 {
		t.Fatalf("sim --json exited %d:\n%s", code, out)
	}
	src, err := os.ReadFile("../../sim/report.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema, doc any
	if err := json.Unmarshal(src, &schema); err != nil {
		t.Fatalf("the schema: %v", err)
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("sim --json is not JSON: %v\n%s", err, out)
	}
	for _, e := range validate(schema.(map[string]any), schema.(map[string]any), doc, "$") {
		t.Error(e)
	}
	vs := doc.(map[string]any)["variants"].([]any)
	if len(vs) != 4 || vs[1].(map[string]any)["label"] != "epvm" || vs[2].(map[string]any)["label"] != "history" ||
		vs[3].(map[string]any)["label"] != "reserve" {
		t.Fatalf("want the variants default, epvm, history and reserve:\n%s", out)
	}
	for _, k := range regexp.MustCompile(`"([a-z0-9_]*wall[a-z0-9_]*)"`).FindAllStringSubmatch(out, -1) {
		if k[1] != "wall_s" {
			t.Errorf("key %q names wall: only wall_s may", k[1])
		}
	}
	_, again := cli(t, nil, args...)
	wall := regexp.MustCompile(`"wall_s": [0-9.e+-]+`)
	if wall.ReplaceAllString(again, "") != wall.ReplaceAllString(out, "") {
		t.Errorf("two runs of the same seed differ:\n%s\n---\n%s", out, again)
	}
	// The schema refuses what it must: the check itself can fail.
	bad := strings.Replace(out, `"utilization"`, `"utilisation"`, 1)
	var badDoc any
	if err := json.Unmarshal([]byte(bad), &badDoc); err != nil {
		t.Fatal(err)
	}
	if errs := validate(schema.(map[string]any), schema.(map[string]any), badDoc, "$"); len(errs) == 0 {
		t.Error("a report without utilization passes the schema")
	}
}

// The table by default, one row per variant; --list names every committed
// scenario first on its line.
func TestSimTableAndList(t *testing.T) {
	t.Parallel()
	code, out := cli(t, nil, "sim", "--scenario", writeTiny(t), "--seed", "3")
	if code != 0 || !strings.Contains(out, "seed 3") || !strings.Contains(out, "default") {
		t.Fatalf("sim exited %d, want 0 and a table of the default variant:\n%s", code, out)
	}
	code, out = cli(t, nil, "sim", "--list")
	if code != 0 {
		t.Fatalf("sim --list exited %d:\n%s", code, out)
	}
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		names = append(names, strings.Fields(l)[0])
	}
	for _, want := range []string{"steady-mixed", "strandgrow", "memory-heavy", "multi-show"} {
		if !slices.Contains(names, want) {
			t.Errorf("sim --list does not name %s first on a line:\n%s", want, out)
		}
	}
}

// Bad input exits 2 with one line naming what is wrong and what to do.
func TestSimBadInput(t *testing.T) {
	t.Parallel()
	file := writeTiny(t)
	dir := t.TempDir()
	noDir := filepath.Join(dir, "no-such-dir", "r.html")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--scenario", "nope"}, `unknown scenario "nope"`},
		{[]string{}, "sim needs --scenario"},
		{[]string{"--scenario", file, "--seed", "x"}, `--seed "x"`},
		{[]string{"--scenario", file, "--variant", "v polcy=epvm"}, "did you mean --policy?"},
		{[]string{"--scenario", file, "--variant", "v policy=worst"}, `--policy: "worst" is not one of best-fit, epvm`},
		{[]string{"--scenario", file, "--variant", "v memory-headroom=-1"}, `--memory-headroom: "-1" is not a number from 0 to 10`},
		{[]string{"--scenario", file, "--variant", "v rqd-port=1"}, "rqd-port is a setting of cuesched run the simulation does not follow"},
		{[]string{"--scenario", file, "--variant", "v policy"}, `"policy" is not KEY=VALUE`},
		{[]string{"--scenario", file, "--variant", "a", "--variant", "a order=strict"}, "the label is given twice"},
		{[]string{"--frobnicate"}, "flag provided but not defined"},
		// An unwritable page is named before the simulation runs: no table.
		{[]string{"--scenario", file, "--html", noDir}, "--html " + noDir + ": no such file or directory"},
		{[]string{"--scenario", file, "--html", dir}, "--html " + dir + ": is a directory"},
	} {
		code, out := cli(t, nil, append([]string{"sim"}, tc.args...)...)
		if code != 2 || !strings.Contains(out, tc.want) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("sim %q exited %d with:\n%s\nwant 2 and one line containing %q", tc.args, code, out, tc.want)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.sim")
	if err := os.WriteFile(bad, []byte("hosts 2\nsub s general size=1\njob j show=s\nlayer l job=j runtime=forever\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := cli(t, nil, "sim", "--scenario", bad)
	if code != 2 || !strings.Contains(out, "bad.sim:4: runtime=forever: want a duration") {
		t.Errorf("a bad scenario file exited %d with:\n%s\nwant 2 naming file:line and the value", code, out)
	}
}

// everyWidth is a farm whose frames of every width class wait their turn
// behind others, in two shows.
const everyWidth = `about every width class waiting its turn, two shows
hosts 2 cores=32 mem=64G
sub s1 general size=40 burst=64
sub s2 general size=24 burst=64
job j show=s1 count=4 every=5m
layer narrow job=j frames=40 cores=1 mem=1G runtime=10m spread=0.3
layer mid job=j frames=4 cores=4 mem=4G runtime=10m after=narrow
job k show=s2 count=2 every=10m
layer wide job=k frames=2 cores=24 mem=8G runtime=20m
layer big job=k frames=3 cores=8 mem=8G runtime=15m
`

// The drawn charts of the page sim --html writes, as headless Chromium
// leaves them: the page's script marks each with the series and points it
// found drawn.
var drawnChart = regexp.MustCompile(`<svg class="chart" id="chart-([a-z0-9-]+)" data-series="(\d+)"[^>]*data-drawn="(\d+)" data-drawn-points="(\d+)"`)

// --html writes one self-contained page titled with the scenario, seed and
// variants, with a chart per figure (utilization, frames waiting per width
// class, waits per width class, share per show), each drawing every
// variant with data, as headless Chromium shows; standard output is what it
// is without --html.
func TestSimHTML(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file, page := filepath.Join(dir, "every.sim"), filepath.Join(dir, "report.html")
	if err := os.WriteFile(file, []byte(everyWidth), 0o644); err != nil {
		t.Fatal(err)
	}
	// A longer file there before is replaced whole.
	if err := os.WriteFile(page, []byte(strings.Repeat("stale ", 1<<18)), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"sim", "--scenario", file, "--json", "--variant", "default", "--variant", "epvm policy=epvm order=strict"}
	code, out := cli(t, nil, append(args, "--html", page)...)
	if code != 0 {
		t.Fatalf("sim --html exited %d:\n%s", code, out)
	}
	_, plain := cli(t, nil, args...)
	wall := regexp.MustCompile(`"wall_s": [0-9.e+-]+`)
	if wall.ReplaceAllString(out, "") != wall.ReplaceAllString(plain, "") {
		t.Errorf("--html changed standard output:\n%s\n--- without it:\n%s", out, plain)
	}
	raw, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	src := string(raw)
	if !strings.HasSuffix(src, "</html>\n") || strings.Contains(src, "stale") {
		t.Errorf("the page does not replace what the file held: it ends %q", src[max(0, len(src)-40):])
	}
	title := "<title>cuesched sim: scenario every, seed 1, variants default, epvm</title>"
	if !strings.Contains(src, title) {
		t.Errorf("the page is not titled %q", title)
	}
	for _, ref := range []string{"src=", "href=", "http:", "https:", "@import", "url(", "<link", "<iframe"} {
		if strings.Contains(src, ref) {
			t.Errorf("the page refers to something outside it (%q)", ref)
		}
	}
	want := map[string]int{"util": 2, "shares": 3} // the shares: the subscriptions', then each variant's
	for _, c := range []string{"le1", "2to4", "5to16", "gt16"} {
		want["waiting-"+c], want["wait-"+c] = 2, 2
	}
	dom := headless.DumpDOM(t, page)
	found := drawnChart.FindAllStringSubmatch(dom, -1)
	seen := map[string]bool{}
	for _, m := range found {
		id, series, drawn, points := m[1], m[2], m[3], m[4]
		seen[id] = true
		n, _ := strconv.Atoi(points)
		if series != fmt.Sprint(want[id]) || drawn != series || n < 2*want[id] {
			t.Errorf("chart %s: %s of %s series drawn with %d points; want %d series, each drawn with points",
				id, drawn, series, n, want[id])
		}
	}
	for id := range want {
		if !seen[id] {
			t.Errorf("chart %s is not drawn", id)
		}
	}
	if len(found) != len(want) {
		t.Errorf("%d charts drawn, want %d", len(found), len(want))
	}
}

// validate checks doc against the subset of JSON Schema the report's
// schema uses: type (one or a list), required, properties,
// additionalProperties false, items, minimum, maximum and $ref to $defs.
func validate(root, s map[string]any, doc any, at string) []string {
	if ref, ok := s["$ref"].(string); ok {
		name, _ := strings.CutPrefix(ref, "#/$defs/")
		return validate(root, root["$defs"].(map[string]any)[name].(map[string]any), doc, at)
	}
	var errs []string
	if t, ok := s["type"]; ok {
		var types []string
		switch t := t.(type) {
		case string:
			types = []string{t}
		case []any:
			for _, x := range t {
				types = append(types, x.(string))
			}
		}
		if !slices.ContainsFunc(types, func(t string) bool { return isType(doc, t) }) {
			return []string{fmt.Sprintf("%s: %v is not of type %v", at, doc, types)}
		}
	}
	if x, ok := doc.(float64); ok {
		if lo, ok := s["minimum"].(float64); ok && x < lo {
			errs = append(errs, fmt.Sprintf("%s: %v below the minimum %v", at, x, lo))
		}
		if hi, ok := s["maximum"].(float64); ok && x > hi {
			errs = append(errs, fmt.Sprintf("%s: %v above the maximum %v", at, x, hi))
		}
	}
	if obj, ok := doc.(map[string]any); ok {
		props, _ := s["properties"].(map[string]any)
		for _, r := range asList(s["required"]) {
			if _, ok := obj[r]; !ok {
				errs = append(errs, fmt.Sprintf("%s: %q is required", at, r))
			}
		}
		for k, v := range obj {
			p, ok := props[k].(map[string]any)
			if !ok {
				if s["additionalProperties"] == false {
					errs = append(errs, fmt.Sprintf("%s: %q is not allowed", at, k))
				}
				continue
			}
			errs = append(errs, validate(root, p, v, at+"."+k)...)
		}
	}
	if arr, ok := doc.([]any); ok {
		if items, ok := s["items"].(map[string]any); ok {
			for i, v := range arr {
				errs = append(errs, validate(root, items, v, fmt.Sprintf("%s[%d]", at, i))...)
			}
		}
	}
	return errs
}

func isType(doc any, t string) bool {
	switch t {
	case "object":
		_, ok := doc.(map[string]any)
		return ok
	case "array":
		_, ok := doc.([]any)
		return ok
	case "string":
		_, ok := doc.(string)
		return ok
	case "number":
		_, ok := doc.(float64)
		return ok
	case "integer":
		x, ok := doc.(float64)
		return ok && x == math.Trunc(x)
	case "null":
		return doc == nil
	}
	return false
}

func asList(v any) []string {
	var out []string
	if xs, ok := v.([]any); ok {
		for _, x := range xs {
			out = append(out, x.(string))
		}
	}
	return out
}
