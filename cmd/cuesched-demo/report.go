package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/cuesched/cuesched/internal/htmlreport"
)

// writeReportFile writes the run's report to path.
func writeReportFile(path string, r *Run) error {
	var b bytes.Buffer
	if err := writeReport(&b, r); err != nil {
		return err
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write the report: %w (--report names the file to write)", err)
	}
	return nil
}

// writeReport writes a self-contained HTML page of the run: the summary,
// the events and four charts (package htmlreport: inline SVG, each marked
// by the page's script with the series the browser drew, which the test
// reads back from headless Chromium). The run itself is embedded as JSON.
func writeReport(w io.Writer, r *Run) error {
	data, err := json.Marshal(r) // escapes <, > and &: safe inside <script>
	if err != nil {
		return fmt.Errorf("report: encode the run: %w", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "<h1>cuesched demo, %s</h1>\n", esc(r.Date.UTC().Format("2006-01-02 15:04 MST")))
	fmt.Fprintf(&b, "<p>%s hosts, a backlog of %s frames handed over at once to %s cuesched instances (%s); one killed with SIGKILL while they booked.</p>\n",
		esc(thousands(r.Hosts)), esc(thousands(r.Frames)), esc(fmt.Sprint(len(r.Instances))), esc(strings.Join(r.Instances, ", ")))
	b.WriteString("<h2>What was measured</h2>\n<ul>\n")
	for _, line := range r.Summary() {
		fmt.Fprintf(&b, "<li>%s</li>\n", esc(line))
	}
	b.WriteString("</ul>\n<h2>What happened</h2>\n<ol>\n")
	for _, e := range r.Events {
		fmt.Fprintf(&b, "<li>%.1f s: %s</li>\n", e.At.Seconds(), esc(e.Text))
	}
	b.WriteString("</ol>\n<p>The red dashed lines on the charts mark these moments, by number.</p>\n")
	for _, c := range r.charts() {
		fmt.Fprintf(&b, "<h2>%s</h2>\n", esc(c.Title))
		b.WriteString(c.SVG())
	}
	b.WriteString(`<script type="application/json" id="run">`)
	b.Write(data)
	b.WriteString("</script>\n")
	return htmlreport.WritePage(w, "cuesched demo", b.String())
}

var (
	esc       = htmlreport.Esc
	thousands = htmlreport.Thousands
	palette   = htmlreport.Palette
)

// charts are the report's plots of the run.
func (r *Run) charts() []htmlreport.Chart {
	marks := make([]htmlreport.Mark, len(r.Events))
	for i, e := range r.Events {
		marks[i] = htmlreport.Mark{X: e.At.Seconds(), Text: fmt.Sprintf("%.1f s: %s", e.At.Seconds(), e.Text)}
	}
	at := make([]float64, len(r.Samples))
	for i, s := range r.Samples {
		at[i] = s.At.Seconds()
	}
	pick := func(f func(Sample) float64) []float64 {
		out := make([]float64, len(r.Samples))
		for i, s := range r.Samples {
			out[i] = f(s)
		}
		return out
	}
	frames := htmlreport.Chart{ID: "frames", Title: "Frames waiting, running and done", XLabel: "seconds since the hand-over",
		YLabel: "frames", Marks: marks, Series: []htmlreport.Series{
			{Name: "waiting", Color: palette[1], X: at, Y: pick(func(s Sample) float64 { return float64(s.Waiting) })},
			{Name: "running", Color: palette[0], X: at, Y: pick(func(s Sample) float64 { return float64(s.Running) })},
			{Name: "done", Color: palette[2], X: at, Y: pick(func(s Sample) float64 { return float64(s.Done) })},
		}}
	rate := htmlreport.Chart{ID: "rate", Title: "Booking rate", XLabel: "seconds since the hand-over",
		YLabel: "frames booked per second", Marks: marks, Series: []htmlreport.Series{
			{Name: "live view (frames leaving waiting)", Color: palette[0], X: at,
				Y: pick(func(s Sample) float64 { return s.Rate })},
		}}
	if len(r.Commits) > 0 {
		s := htmlreport.Series{Name: "booking commits (instances' commit times)", Color: palette[1]}
		for i, n := range r.Commits {
			s.X, s.Y = append(s.X, float64(i)+0.5), append(s.Y, float64(n))
		}
		rate.Series = append(rate.Series, s)
	}
	clusters := htmlreport.Chart{ID: "clusters", Title: "Clusters per instance", XLabel: "seconds since the hand-over",
		YLabel: "clusters owned", Marks: marks}
	owners := slices.Clone(r.Instances)
	for _, s := range r.Samples {
		for name := range s.Clusters {
			if !slices.Contains(owners, name) {
				owners = append(owners, name)
			}
		}
	}
	for i, name := range owners {
		label := name
		if name == "" {
			label = "nobody"
		}
		clusters.Series = append(clusters.Series, htmlreport.Series{Name: label, Color: palette[i%len(palette)], X: at,
			Y: pick(func(s Sample) float64 { return float64(s.Clusters[name]) })})
	}
	probe := htmlreport.Chart{ID: "probe", Title: "Time to book on the idle farm (the probe's distribution)",
		XLabel: "time to book, ms", YLabel: "share of probe jobs booked within", Kind: htmlreport.Dots}
	if len(r.Probe) > 0 {
		p := sortedCopy(r.Probe)
		s := htmlreport.Series{Name: fmt.Sprintf("%d single-frame jobs", len(p)), Color: palette[0]}
		for i, d := range p {
			s.X = append(s.X, float64(d)/float64(time.Millisecond))
			s.Y = append(s.Y, float64(i+1)/float64(len(p)))
		}
		probe.Series = []htmlreport.Series{s}
	}
	return []htmlreport.Chart{frames, rate, clusters, probe}
}
