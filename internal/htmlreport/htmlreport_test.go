package htmlreport

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

// A bar chart draws a bar per category and series, its height in
// proportion to its value, with the categories named under the axis; a
// zero is a bar of no height, still there to count.
func TestBars(t *testing.T) {
	t.Parallel()
	c := Chart{ID: "shares", Title: "Shares", Kind: Bars, Categories: []string{"film", "tv"},
		Series: []Series{{Name: "subscribed", Color: "#444", Y: []float64{0.75, 0.25}},
			{Name: "used", Color: "#111", Y: []float64{1, 0}}}}
	svg := c.SVG()
	if !strings.Contains(svg, `data-series="2"`) || !strings.Contains(svg, ">film</text>") || !strings.Contains(svg, ">tv</text>") {
		t.Errorf("the chart lacks its series count or category names:\n%s", svg)
	}
	heights := regexp.MustCompile(`<rect x="[0-9.]+" y="[0-9.]+" width="[0-9.]+" height="([0-9.]+)">`).FindAllStringSubmatch(svg, -1)
	var got []string
	for _, h := range heights {
		got = append(got, h[1])
	}
	// The plot is 192 units high and its axis reaches 1.
	if want := "144.0 48.0 192.0 0.0"; strings.Join(got, " ") != want {
		t.Errorf("bar heights %v, want %s", got, want)
	}
}

// A page is self-contained: its title escaped, the body as given, and the
// script that marks the charts drawn, nothing loaded from anywhere.
func TestWritePage(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	body := Chart{ID: "x", Title: "a <b>", Series: []Series{{Name: "s", Color: "#000", X: []float64{0, 1}, Y: []float64{0, 1}}}}.SVG()
	if err := WritePage(&b, "a <b>", body); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, want := range []string{"<title>a &lt;b&gt;</title>", body, "setAttribute('data-drawn'", "</html>"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	for _, ref := range []string{"src=", "href=", "http:", "https:", "url("} {
		if strings.Contains(page, ref) {
			t.Errorf("the page refers to something outside it (%q)", ref)
		}
	}
}
