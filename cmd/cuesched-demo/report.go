package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"time"
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
// the events and four charts drawn here as inline SVG. The page loads
// nothing; its one script marks each chart with how many of its series the
// browser drew (data-drawn), which the test reads back from headless
// Chromium. The run itself is embedded as JSON.
func writeReport(w io.Writer, r *Run) error {
	data, err := json.Marshal(r) // escapes <, > and &: safe inside <script>
	if err != nil {
		return fmt.Errorf("report: encode the run: %w", err)
	}
	var b strings.Builder
	b.WriteString(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>cuesched demo</title>
<style>
body{font-family:system-ui,sans-serif;margin:24px;max-width:900px;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
svg.chart{display:block;background:#fafafa;border:1px solid #ddd}
svg text{font-size:11px;fill:#444}
.legend text{font-size:12px}
ul{padding-left:1.2em}li{margin:.2em 0}
</style></head><body>
`)
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
		fmt.Fprintf(&b, "<h2>%s</h2>\n", esc(c.title))
		b.WriteString(c.svg())
	}
	b.WriteString(`<script type="application/json" id="run">`)
	b.Write(data)
	b.WriteString(`</script>
<script>
// Counts, for each chart, the series the browser drew: a path of some
// length, or a point of some radius.
for (const svg of document.querySelectorAll('svg.chart')) {
  let drawn = 0;
  for (const s of svg.querySelectorAll('.series')) {
    const len = s.tagName === 'path' ? s.getTotalLength() : 0;
    const dots = [...s.querySelectorAll('circle')].filter(c => c.r.baseVal.value > 0 && c.getBBox().width > 0).length;
    if (len > 0 || dots > 0) drawn++;
  }
  svg.setAttribute('data-drawn', String(drawn));
}
</script>
</body></html>
`)
	_, err = io.WriteString(w, b.String())
	return err
}

func esc(s string) string { return html.EscapeString(s) }

// chart is one plot: series of points over shared axes, and the run's
// events marked as vertical lines when x is time.
type chart struct {
	id, title      string
	xLabel, yLabel string
	series         []series
	events         []Event
	dots           bool // points, not lines
}

type series struct {
	name  string
	color string
	x, y  []float64
}

var palette = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#7f7f7f"}

// charts are the report's plots of the run.
func (r *Run) charts() []chart {
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
	frames := chart{id: "frames", title: "Frames waiting, running and done", xLabel: "seconds since the hand-over",
		yLabel: "frames", events: r.Events, series: []series{
			{name: "waiting", color: palette[1], x: at, y: pick(func(s Sample) float64 { return float64(s.Waiting) })},
			{name: "running", color: palette[0], x: at, y: pick(func(s Sample) float64 { return float64(s.Running) })},
			{name: "done", color: palette[2], x: at, y: pick(func(s Sample) float64 { return float64(s.Done) })},
		}}
	rate := chart{id: "rate", title: "Booking rate", xLabel: "seconds since the hand-over",
		yLabel: "frames booked per second", events: r.Events, series: []series{
			{name: "live view (frames leaving waiting)", color: palette[0], x: at,
				y: pick(func(s Sample) float64 { return s.Rate })},
		}}
	if len(r.Commits) > 0 {
		s := series{name: "booking commits (instances' commit times)", color: palette[1]}
		for i, n := range r.Commits {
			s.x, s.y = append(s.x, float64(i)+0.5), append(s.y, float64(n))
		}
		rate.series = append(rate.series, s)
	}
	clusters := chart{id: "clusters", title: "Clusters per instance", xLabel: "seconds since the hand-over",
		yLabel: "clusters owned", events: r.Events}
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
		clusters.series = append(clusters.series, series{name: label, color: palette[i%len(palette)], x: at,
			y: pick(func(s Sample) float64 { return float64(s.Clusters[name]) })})
	}
	probe := chart{id: "probe", title: "Time to book on the idle farm (the probe's distribution)",
		xLabel: "time to book, ms", yLabel: "share of probe jobs booked within", dots: true}
	if len(r.Probe) > 0 {
		p := sortedCopy(r.Probe)
		s := series{name: fmt.Sprintf("%d single-frame jobs", len(p)), color: palette[0]}
		for i, d := range p {
			s.x = append(s.x, float64(d)/float64(time.Millisecond))
			s.y = append(s.y, float64(i+1)/float64(len(p)))
		}
		probe.series = []series{s}
	}
	return []chart{frames, rate, clusters, probe}
}

// The charts' geometry, in SVG user units.
const (
	chartW, chartH                     = 860, 260
	padLeft, padRight, padTop, padBott = 64, 16, 28, 40
)

// svg draws the chart.
func (c chart) svg() string {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" id="chart-%s" data-series="%d" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s">`+"\n",
		c.id, len(c.series), chartW, chartH, chartW, chartH, esc(c.title))
	xmax, ymax := 0.0, 0.0
	for _, s := range c.series {
		for i := range s.x {
			xmax, ymax = math.Max(xmax, s.x[i]), math.Max(ymax, s.y[i])
		}
	}
	// Four round ticks a side.
	xmax, ymax = 4*niceCeil(xmax/4), 4*niceCeil(ymax/4)
	pw, ph := float64(chartW-padLeft-padRight), float64(chartH-padTop-padBott)
	px := func(x float64) float64 { return padLeft + x/xmax*pw }
	py := func(y float64) float64 { return padTop + ph - y/ymax*ph }
	// Axes, ticks and labels.
	fmt.Fprintf(&b, `<g class="axes" stroke="#999"><line x1="%d" y1="%d" x2="%d" y2="%d"/><line x1="%d" y1="%d" x2="%d" y2="%d"/></g>`+"\n",
		padLeft, padTop, padLeft, chartH-padBott, padLeft, chartH-padBott, chartW-padRight, chartH-padBott)
	for i := 0; i <= 4; i++ {
		xv, yv := xmax*float64(i)/4, ymax*float64(i)/4
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, px(xv), chartH-padBott+14, tick(xv))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`, padLeft-6, py(yv)+4, tick(yv))
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>`+"\n", padLeft+1, py(yv), chartW-padRight, py(yv))
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", padLeft+pw/2, chartH-6, esc(c.xLabel))
	fmt.Fprintf(&b, `<text x="14" y="%.1f" text-anchor="middle" transform="rotate(-90 14 %.1f)">%s</text>`+"\n",
		padTop+ph/2, padTop+ph/2, esc(c.yLabel))
	// Events are numbered as in the page's list of what happened.
	for i, e := range c.events {
		x := e.At.Seconds()
		if x > xmax {
			continue
		}
		fmt.Fprintf(&b, `<g class="event"><title>%s</title><line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#c00" stroke-dasharray="4 3"/><text x="%.1f" y="%d" text-anchor="middle" style="fill:#c00">%d</text></g>`+"\n",
			esc(fmt.Sprintf("%.1f s: %s", x, e.Text)), px(x), padTop, px(x), chartH-padBott, px(x), padTop-2, i+1)
	}
	if len(c.series) == 0 {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">no data</text>`+"\n", padLeft+pw/2, padTop+ph/2)
	}
	lx := padLeft + 8
	for _, s := range c.series {
		if c.dots {
			fmt.Fprintf(&b, `<g class="series" data-name="%s" data-points="%d" fill="%s">`, esc(s.name), len(s.x), s.color)
			for j := range s.x {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3"/>`, px(s.x[j]), py(s.y[j]))
			}
			b.WriteString("</g>\n")
		} else {
			var d strings.Builder
			for j := range s.x {
				cmd := "L"
				if j == 0 {
					cmd = "M"
				}
				fmt.Fprintf(&d, "%s%.1f %.1f ", cmd, px(s.x[j]), py(s.y[j]))
			}
			fmt.Fprintf(&b, `<path class="series" data-name="%s" data-points="%d" d="%s" fill="none" stroke="%s" stroke-width="1.8"/>`+"\n",
				esc(s.name), len(s.x), strings.TrimSpace(d.String()), s.color)
		}
		// The legend, across the top (7 units a character is enough).
		fmt.Fprintf(&b, `<g class="legend"><rect x="%d" y="8" width="10" height="10" fill="%s"/><text x="%d" y="17">%s</text></g>`+"\n",
			lx, s.color, lx+14, esc(s.name))
		lx += 14 + 7*len(s.name) + 20
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// niceCeil rounds v up to a round multiple of a power of ten (1 for 0).
func niceCeil(v float64) float64 {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// tick writes an axis value briefly.
func tick(v float64) string {
	switch {
	case v == math.Trunc(v) && math.Abs(v) < 1e6:
		return thousands(int(v))
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.0f", v)
	default:
		return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
	}
}
