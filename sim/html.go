package sim

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/cuesched/cuesched/internal/htmlreport"
)

// widthAbout says what each width class holds, for the page.
var widthAbout = [nWidths]string{"up to 1 core", "over 1, up to 4 cores", "over 4, up to 16 cores", "over 16 cores"}

// maxCDFPoints bounds the points of a wait distribution's line.
const maxCDFPoints = 200

// WriteHTML writes the report as one self-contained page (package
// internal/htmlreport: inline SVG, nothing loaded): the table, then charts
// with every variant overlaid: utilization and frames waiting per width
// class over time, the distribution of waits per width class, and each
// show's share of the core-hours used against its subscription's. Only a
// report made by Run has the series the charts draw.
func (rep *Report) WriteHTML(w io.Writer) error {
	var labels []string
	for _, v := range rep.Variants {
		if v.timeline == nil {
			return errors.New("the report holds no series over time (only a report sim.Run made does)")
		}
		labels = append(labels, v.Label)
	}
	title := fmt.Sprintf("cuesched sim: scenario %s, seed %d, variants %s", rep.Scenario, rep.Seed, strings.Join(labels, ", "))
	var b strings.Builder
	fmt.Fprintf(&b, "<h1>%s</h1>\n<p>%s hosts, %s frames.", esc(title), htmlreport.Thousands(rep.Hosts),
		htmlreport.Thousands(rep.Frames))
	for _, v := range rep.Variants {
		settings := "the default settings"
		if len(v.Settings) > 0 {
			settings = strings.Join(v.Settings, " ")
		}
		fmt.Fprintf(&b, " Variant %s: %s.", esc(v.Label), esc(settings))
	}
	b.WriteString(" Times are simulated; wall_s is the only wall-clock figure.</p>\n")
	rep.tableHTML(&b)
	var frames [nWidths]int
	for _, v := range rep.Variants {
		for c, n := range v.timeline.frames {
			frames[c] = max(frames[c], n)
		}
	}
	var none []string
	for c, n := range frames {
		if n == 0 {
			none = append(none, WidthClasses[c])
		}
	}
	if len(none) > 0 {
		fmt.Fprintf(&b, "<p>No layer asks for the width of %s: no chart of theirs.</p>\n", esc(strings.Join(none, ", ")))
	}
	for _, c := range rep.charts(frames) {
		fmt.Fprintf(&b, "<h2>%s</h2>\n", esc(c.Title))
		b.WriteString(c.SVG())
	}
	return htmlreport.WritePage(w, title, b.String())
}

func esc(s string) string { return htmlreport.Esc(s) }

func (rep *Report) tableHTML(b *strings.Builder) {
	b.WriteString("<div style=\"overflow-x:auto\"><table>\n")
	for i, row := range rep.rows() {
		cell := "td"
		if i == 0 {
			cell = "th"
		}
		b.WriteString("<tr>")
		for _, x := range row {
			fmt.Fprintf(b, "<%s>%s</%s>", cell, esc(x), cell)
		}
		b.WriteString("</tr>\n")
	}
	b.WriteString("</table></div>\n")
}

// charts are the page's plots; a width class without frames has none.
func (rep *Report) charts(frames [nWidths]int) []htmlreport.Chart {
	var simS float64
	for _, v := range rep.Variants {
		simS = max(simS, v.SimS)
	}
	unit, per := timeUnit(simS)
	util := htmlreport.Chart{ID: "util", Title: "Utilization over time: cores in use over cores offered",
		XLabel: unit + " simulated", YLabel: "utilization (interval mean)"}
	var waiting, waits []htmlreport.Chart
	for c := range nWidths {
		if frames[c] == 0 {
			continue
		}
		class := fmt.Sprintf("%s (%s)", WidthClasses[c], widthAbout[c])
		waiting = append(waiting, htmlreport.Chart{ID: "waiting-" + WidthClasses[c],
			Title: "Frames waiting (ready, not started) over time, width " + class, XLabel: unit + " simulated",
			YLabel: "frames waiting"})
		wunit, _ := timeUnit(rep.longestWait(c))
		waits = append(waits, htmlreport.Chart{ID: "wait-" + WidthClasses[c],
			Title: "Wait from ready to first start, width " + class, XLabel: "wait, " + wunit,
			YLabel: "share of its frames started within"})
	}
	shares := htmlreport.Chart{ID: "shares", Title: "Share of the core-hours used per show, against its share of the subscriptions",
		XLabel: "show", YLabel: "share", Kind: htmlreport.Bars}
	for i, v := range rep.Variants {
		tl, color := v.timeline, htmlreport.Palette[i%len(htmlreport.Palette)]
		s := htmlreport.Series{Name: v.Label, Color: color}
		for _, x := range tl.samples {
			s.X, s.Y = append(s.X, x.at.Seconds()/per), append(s.Y, x.util)
		}
		util.Series = append(util.Series, s)
		k := 0
		for c := range nWidths {
			if frames[c] == 0 {
				continue
			}
			s := htmlreport.Series{Name: v.Label, Color: color}
			for _, x := range tl.samples {
				s.X, s.Y = append(s.X, x.at.Seconds()/per), append(s.Y, float64(x.waiting[c]))
			}
			waiting[k].Series = append(waiting[k].Series, s)
			longest := rep.longestWait(c)
			_, wper := timeUnit(longest)
			waits[k].Series = append(waits[k].Series, cdf(v.Label, color, tl.waits[c], tl.frames[c], longest, wper))
			k++
		}
		if i == 0 {
			sub := htmlreport.Series{Name: "subscription", Color: "#444444"}
			for _, sh := range tl.shares {
				shares.Categories = append(shares.Categories, sh.show)
				sub.Y = append(sub.Y, sh.subscribed)
			}
			shares.Series = append(shares.Series, sub)
		}
		used := htmlreport.Series{Name: v.Label + " (used)", Color: color}
		for _, sh := range tl.shares {
			used.Y = append(used.Y, sh.used)
		}
		shares.Series = append(shares.Series, used)
	}
	out := append([]htmlreport.Chart{util}, waiting...)
	return append(append(out, waits...), shares)
}

// longestWait is the longest wait of class c in any variant, in seconds.
func (rep *Report) longestWait(c uint8) float64 {
	var longest float64
	for _, v := range rep.Variants {
		if ws := v.timeline.waits[c]; len(ws) > 0 {
			longest = max(longest, ws[len(ws)-1])
		}
	}
	return longest
}

// cdf is the distribution of a class's sorted waits (seconds) as a line:
// the share of the class's frames (frames) started within each wait, at
// most maxCDFPoints steps, from the shortest wait at 0. Frames never
// started leave the line below 1, held out to the chart's longest wait.
func cdf(label, color string, waits []float64, frames int, longest, per float64) htmlreport.Series {
	n := len(waits)
	s := htmlreport.Series{Name: fmt.Sprintf("%s (%d frames)", label, n), Color: color}
	if n < frames {
		s.Name = fmt.Sprintf("%s (%d of %d frames started)", label, n, frames)
	}
	if n == 0 {
		return s
	}
	// Steps: across at the share reached, then up at the next wait.
	s.X, s.Y = []float64{waits[0] / per}, []float64{0}
	k := min(n, maxCDFPoints)
	for j := 1; j <= k; j++ {
		i := int(math.Ceil(float64(j)*float64(n)/float64(k))) - 1
		x := waits[i] / per
		s.X, s.Y = append(s.X, x, x), append(s.Y, s.Y[len(s.Y)-1], float64(i+1)/float64(frames))
	}
	if n < frames && longest > waits[n-1] {
		s.X, s.Y = append(s.X, longest/per), append(s.Y, float64(n)/float64(frames))
	}
	return s
}

// timeUnit is the unit a time axis up to maxS seconds reads best in, and
// its seconds.
func timeUnit(maxS float64) (string, float64) {
	switch {
	case maxS < 2*60:
		return "seconds", 1
	case maxS < 2*3600:
		return "minutes", 60
	case maxS < 3*86400:
		return "hours", 3600
	}
	return "days", 86400
}
