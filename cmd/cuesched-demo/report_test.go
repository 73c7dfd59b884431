package main

import (
	"bytes"
	"encoding/json"
	"html"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cuesched/cuesched/internal/testworld/headless"
)

// recordedRun is a run the demo recorded (testdata/run.json: the run of
// `cuesched-demo --report`, 2026-12-02, on the loaded 2-core machine; its
// booked counts and commits per second recomputed from the same run as the
// demo now records them).
func recordedRun(t *testing.T) *Run {
	t.Helper()
	raw, err := os.ReadFile("testdata/run.json")
	if err != nil {
		t.Fatal(err)
	}
	var r Run
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("testdata/run.json: %v", err)
	}
	return &r
}

var (
	chartTag = regexp.MustCompile(`<svg class="chart" id="chart-([a-z]+)" data-series="(\d+)"[^>]*>`)
	// A line series' path, or a point series' group.
	seriesTag = regexp.MustCompile(`class="series" data-name="[^"]*" data-points="(\d+)"`)
)

// The report is a pure function of the recorded run: four charts, each
// series carrying every sample (or every probe job), every summary line and
// event on the page, nothing fetched from anywhere, the same bytes each
// time.
func TestReport(t *testing.T) {
	t.Parallel()
	full := recordedRun(t)
	quiet := recordedRun(t) // no kill seen, no probe
	quiet.Events, quiet.Probe, quiet.Commits = nil, nil, nil
	empty := &Run{Date: full.Date, Instances: []string{"demo-1"}}
	for _, tc := range []struct {
		name   string
		run    *Run
		series map[string]int // chart -> series drawn
		text   []string       // must be on the page
	}{
		{"recorded", full, map[string]int{"frames": 3, "rate": 2, "clusters": 3, "probe": 1},
			[]string{"backlog drain rate: 6,000 frames booked in 1m11.9s", "83 frames/s",
				"time to book on the idle farm (40 single-frame jobs", "why the two differ",
				"SIGKILL to demo-2", "live view: 73 redraws while booking"}},
		{"no kill, no probe", quiet, map[string]int{"frames": 3, "rate": 1, "clusters": 3, "probe": 0},
			[]string{"backlog drain rate"}},
		{"nothing recorded", empty, map[string]int{"frames": 3, "rate": 1, "clusters": 1, "probe": 0},
			[]string{"no data"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a, b bytes.Buffer
			if err := writeReport(&a, tc.run); err != nil {
				t.Fatal(err)
			}
			if err := writeReport(&b, tc.run); err != nil {
				t.Fatal(err)
			}
			page := a.String()
			if page != b.String() {
				t.Error("two reports of one run differ")
			}
			charts := chartTag.FindAllStringSubmatch(page, -1)
			if len(charts) != 4 {
				t.Fatalf("%d charts, want 4", len(charts))
			}
			for _, c := range charts {
				if n, _ := strconv.Atoi(c[2]); n != tc.series[c[1]] {
					t.Errorf("chart %s has %d series, want %d", c[1], n, tc.series[c[1]])
				}
			}
			for _, m := range seriesTag.FindAllStringSubmatch(page, -1) {
				n, _ := strconv.Atoi(m[1])
				if r := tc.run; n != len(r.Samples) && n != len(r.Probe) && n != len(r.Commits) {
					t.Errorf("a series has %d points, want %d (samples), %d (probe jobs) or %d (seconds of commits)",
						n, len(r.Samples), len(r.Probe), len(r.Commits))
				}
			}
			for _, line := range tc.run.Summary() {
				if !strings.Contains(page, html.EscapeString(line)) {
					t.Errorf("summary line missing: %s", line)
				}
			}
			for _, e := range tc.run.Events {
				if !strings.Contains(page, html.EscapeString(e.Text)) {
					t.Errorf("event missing: %s", e.Text)
				}
			}
			for _, s := range tc.text {
				if !strings.Contains(page, html.EscapeString(s)) {
					t.Errorf("page lacks %q", s)
				}
			}
			// Self-contained: nothing loaded from a file or the network.
			for _, ref := range []string{"src=", "href=", "http:", "https:", "@import", "url(", "<link", "<iframe"} {
				if strings.Contains(page, ref) {
					t.Errorf("the page refers to something outside it (%q)", ref)
				}
			}
		})
	}
}

// The closing summary's figures follow BENCHMARKS.md's definitions and say
// what each measures.
func TestSummary(t *testing.T) {
	t.Parallel()
	r := &Run{Frames: 6000, Instances: []string{"a", "b"}, BookedBy: map[string]int{"a": 4000, "b": 2030},
		ToDrain: 12 * time.Second, Window: 11 * time.Second, WaitP50: 5 * time.Second, WaitP99: 11900 * time.Millisecond,
		WaitFrames: 6000, Redraws: []time.Duration{time.Second, 1010 * time.Millisecond, 990 * time.Millisecond}}
	for i := range 40 {
		r.Probe = append(r.Probe, time.Duration(i+1)*time.Millisecond)
	}
	got := strings.Join(r.Summary(), "\n")
	for _, want := range []string{
		"backlog drain rate: 6,000 frames booked in 12s from the hand-over's commit to the last booking's commit (time to drain): 500 frames/s",
		"booking window (first to last booking commit): 11s; booked by a 4,000, b 2,030",
		"backlog per-frame wait (hand-over's commit to the frame's booking commit, 6,000 frames): p50 5s, p99 11.9s",
		"time to book on the idle farm (40 single-frame jobs submitted one at a time; launch COMMIT returning in the demo to the booking's COMMIT returning in an instance): p50 20ms, p99 40ms, max 40ms",
		"why the two differ",
		"live view: 4 redraws while booking, interval p50 1s, max 1.01s",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
}

// Headless Chromium loads the report of the recorded run and draws every
// series of every chart: the page's script marks each chart with the
// series it found drawn (a path of some length, points of some radius).
func TestReportDrawnInChromium(t *testing.T) {
	t.Parallel()
	page := filepath.Join(t.TempDir(), "report.html")
	if err := writeReportFile(page, recordedRun(t)); err != nil {
		t.Fatal(err)
	}
	dom := headless.DumpDOM(t, page)
	drawn := regexp.MustCompile(`<svg class="chart" id="chart-([a-z]+)" data-series="(\d+)"[^>]*data-drawn="(\d+)"`)
	found := drawn.FindAllStringSubmatch(dom, -1)
	if len(found) != 4 {
		t.Fatalf("chromium drew %d charts, want 4 (each marked data-drawn); the DOM's charts:\n%s", len(found),
			strings.Join(chartTag.FindAllString(dom, -1), "\n"))
	}
	for _, m := range found {
		if m[2] != m[3] || m[2] == "0" {
			t.Errorf("chart %s: %s of %s series drawn", m[1], m[3], m[2])
		}
	}
}

// Commits are counted in the second since the hand-over they fall in.
func TestPerSecond(t *testing.T) {
	t.Parallel()
	began := time.Unix(1000, 0)
	at := func(ms int) time.Time { return began.Add(time.Duration(ms) * time.Millisecond) }
	got := perSecond(began, []time.Time{at(-5), at(0), at(999), at(1000), at(3500)})
	if want := []int{2, 1, 0, 1}; !slices.Equal(got, want) {
		t.Errorf("perSecond = %v, want %v", got, want)
	}
}
