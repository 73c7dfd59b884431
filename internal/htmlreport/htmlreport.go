// Package htmlreport writes self-contained HTML report pages: charts drawn
// here as inline SVG, and one inline script that marks each chart with what
// the browser drew of it, so a test can load the page in headless Chromium
// and check every chart holds data. The page loads nothing from anywhere.
// The demo's report (cmd/cuesched-demo) and `cuesched sim --html` use it.
package htmlreport

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// Kind is how a chart draws its series.
type Kind uint8

const (
	Lines Kind = iota // a polyline per series
	Dots              // a point per (x, y)
	Bars              // a bar per category, the series side by side in each
)

// Chart is one plot: series over shared axes. Its SVG element carries
// data-series (how many series it has); the page's script adds data-drawn
// (how many the browser drew) and data-drawn-points (their points drawn).
type Chart struct {
	ID, Title      string
	XLabel, YLabel string
	Kind           Kind
	Series         []Series
	// Marks are numbered vertical lines at an x (events on a time axis).
	Marks []Mark
	// Categories name the groups of a Bars chart, left to right: each
	// series has a Y per category (its X is unused).
	Categories []string
}

// Series is one named line, set of points or set of bars.
type Series struct {
	Name, Color string
	X, Y        []float64
}

// Mark is a numbered vertical line; Text is its tooltip.
type Mark struct {
	X    float64
	Text string
}

// Palette are the series' colours, in order.
var Palette = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#7f7f7f"}

// Esc escapes text for HTML.
func Esc(s string) string { return html.EscapeString(s) }

// WritePage writes a page titled title around body (HTML, escaped by the
// caller), ending with the script that marks the charts drawn.
func WritePage(w io.Writer, title, body string) error {
	var b strings.Builder
	fmt.Fprintf(&b, `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>%s</title>
<style>
body{font-family:system-ui,sans-serif;margin:24px;max-width:900px;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
svg.chart{display:block;background:#fafafa;border:1px solid #ddd}
svg text{font-size:11px;fill:#444}
.legend text{font-size:12px}
ul{padding-left:1.2em}li{margin:.2em 0}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
</style></head><body>
`, Esc(title))
	b.WriteString(body)
	b.WriteString(drawnScript)
	b.WriteString("</body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// drawnScript counts, for each chart, the series the browser drew (a path
// of some length, points of some radius, bars of some width) and their
// points.
const drawnScript = `<script>
for (const svg of document.querySelectorAll('svg.chart')) {
  let drawn = 0, points = 0;
  for (const s of svg.querySelectorAll('.series')) {
    let n = 0;
    if (s.tagName === 'path') {
      if (s.getTotalLength() > 0) n = Number(s.getAttribute('data-points'));
    } else {
      n = [...s.querySelectorAll('circle')].filter(c => c.r.baseVal.value > 0 && c.getBBox().width > 0).length +
        [...s.querySelectorAll('rect')].filter(r => r.getBBox().width > 0).length;
    }
    if (n > 0) { drawn++; points += n; }
  }
  svg.setAttribute('data-drawn', String(drawn));
  svg.setAttribute('data-drawn-points', String(points));
}
</script>
`

// The charts' geometry, in SVG user units.
const (
	chartW, chartH                     = 860, 260
	padLeft, padRight, padTop, padBott = 64, 16, 28, 40
)

// frame maps data to the plot area.
type frame struct {
	xmax, ymax float64
	pw, ph     float64
}

func (f frame) px(x float64) float64 { return padLeft + x/f.xmax*f.pw }
func (f frame) py(y float64) float64 { return padTop + f.ph - y/f.ymax*f.ph }

// SVG draws the chart.
func (c Chart) SVG() string {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" id="chart-%s" data-series="%d" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s">`+"\n",
		c.ID, len(c.Series), chartW, chartH, chartW, chartH, Esc(c.Title))
	xmax, ymax := 0.0, 0.0
	for _, s := range c.Series {
		for i := range s.Y {
			if i < len(s.X) {
				xmax = math.Max(xmax, s.X[i])
			}
			ymax = math.Max(ymax, s.Y[i])
		}
	}
	// Four round ticks a side.
	f := frame{xmax: 4 * niceCeil(xmax/4), ymax: 4 * niceCeil(ymax/4),
		pw: float64(chartW - padLeft - padRight), ph: float64(chartH - padTop - padBott)}
	c.axes(&b, f)
	if len(c.Series) == 0 {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">no data</text>`+"\n", padLeft+f.pw/2, padTop+f.ph/2)
	}
	lx := padLeft + 8
	for i, s := range c.Series {
		switch c.Kind {
		case Dots:
			fmt.Fprintf(&b, `<g class="series" data-name="%s" data-points="%d" fill="%s">`, Esc(s.Name), len(s.X), s.Color)
			for j := range s.X {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3"/>`, f.px(s.X[j]), f.py(s.Y[j]))
			}
			b.WriteString("</g>\n")
		case Bars:
			c.bars(&b, f, i, s)
		default:
			var d strings.Builder
			for j := range s.X {
				cmd := "L"
				if j == 0 {
					cmd = "M"
				}
				fmt.Fprintf(&d, "%s%.1f %.1f ", cmd, f.px(s.X[j]), f.py(s.Y[j]))
			}
			fmt.Fprintf(&b, `<path class="series" data-name="%s" data-points="%d" d="%s" fill="none" stroke="%s" stroke-width="1.8"/>`+"\n",
				Esc(s.Name), len(s.X), strings.TrimSpace(d.String()), s.Color)
		}
		// The legend, across the top (7 units a character is enough).
		fmt.Fprintf(&b, `<g class="legend"><rect x="%d" y="8" width="10" height="10" fill="%s"/><text x="%d" y="17">%s</text></g>`+"\n",
			lx, s.Color, lx+14, Esc(s.Name))
		lx += 14 + 7*len(s.Name) + 20
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// axes draws the axes, their ticks (the categories on a Bars chart's x),
// labels and marks.
func (c Chart) axes(b *strings.Builder, f frame) {
	fmt.Fprintf(b, `<g class="axes" stroke="#999"><line x1="%d" y1="%d" x2="%d" y2="%d"/><line x1="%d" y1="%d" x2="%d" y2="%d"/></g>`+"\n",
		padLeft, padTop, padLeft, chartH-padBott, padLeft, chartH-padBott, chartW-padRight, chartH-padBott)
	for i := 0; i <= 4; i++ {
		xv, yv := f.xmax*float64(i)/4, f.ymax*float64(i)/4
		if c.Kind != Bars {
			fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, f.px(xv), chartH-padBott+14, tick(xv))
		}
		fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`, padLeft-6, f.py(yv)+4, tick(yv))
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>`+"\n", padLeft+1, f.py(yv), chartW-padRight, f.py(yv))
	}
	if c.Kind == Bars {
		group := f.pw / float64(max(1, len(c.Categories)))
		for i, name := range c.Categories {
			fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, padLeft+group*(float64(i)+0.5), chartH-padBott+14, Esc(name))
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", padLeft+f.pw/2, chartH-6, Esc(c.XLabel))
	fmt.Fprintf(b, `<text x="14" y="%.1f" text-anchor="middle" transform="rotate(-90 14 %.1f)">%s</text>`+"\n",
		padTop+f.ph/2, padTop+f.ph/2, Esc(c.YLabel))
	for i, m := range c.Marks {
		if m.X > f.xmax {
			continue
		}
		fmt.Fprintf(b, `<g class="event"><title>%s</title><line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#c00" stroke-dasharray="4 3"/><text x="%.1f" y="%d" text-anchor="middle" style="fill:#c00">%d</text></g>`+"\n",
			Esc(m.Text), f.px(m.X), padTop, f.px(m.X), chartH-padBott, f.px(m.X), padTop-2, i+1)
	}
}

// bars draws series i of a Bars chart: a bar in each category, beside the
// other series' bars there.
func (c Chart) bars(b *strings.Builder, f frame, i int, s Series) {
	group := f.pw / float64(max(1, len(c.Categories)))
	w := group * 0.8 / float64(len(c.Series))
	fmt.Fprintf(b, `<g class="series" data-name="%s" data-points="%d" fill="%s">`, Esc(s.Name), len(s.Y), s.Color)
	for j, y := range s.Y {
		x := padLeft + group*float64(j) + group*0.1 + w*float64(i)
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s</title></rect>`,
			x, f.py(y), w, f.py(0)-f.py(y), Esc(fmt.Sprintf("%s: %s", s.Name, tick(y))))
	}
	b.WriteString("</g>\n")
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
		return Thousands(int(v))
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.0f", v)
	default:
		return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
	}
}

// Thousands writes n with a comma every three digits.
func Thousands(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + Thousands(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
