package sim

import (
	"slices"
	"testing"
)

// A wait distribution steps up at each wait to the share of the class's
// frames started within it; frames never started hold it below 1 out to
// the longest wait of the chart; a long list is cut to maxCDFPoints steps.
func TestCDF(t *testing.T) {
	t.Parallel()
	s := cdf("v", "#000", []float64{0, 60, 60, 120}, 5, 300, 60)
	wantX := []float64{0, 0, 0, 1, 1, 1, 1, 2, 2, 5}
	wantY := []float64{0, 0, 0.2, 0.2, 0.4, 0.4, 0.6, 0.6, 0.8, 0.8}
	if !slices.Equal(s.X, wantX) || !slices.Equal(s.Y, wantY) {
		t.Errorf("cdf = %v / %v, want %v / %v", s.X, s.Y, wantX, wantY)
	}
	if s.Name != "v (4 of 5 frames started)" {
		t.Errorf("name %q", s.Name)
	}
	many := make([]float64, 5000)
	for i := range many {
		many[i] = float64(i)
	}
	s = cdf("v", "#000", many, len(many), 4999, 1)
	if len(s.X) != 2*maxCDFPoints+1 || s.Y[len(s.Y)-1] != 1 || s.X[len(s.X)-1] != 4999 || s.Name != "v (5000 frames)" {
		t.Errorf("5000 waits: %d points ending at (%v, %v), %q; want %d ending at (4999, 1)",
			len(s.X), s.X[len(s.X)-1], s.Y[len(s.Y)-1], s.Name, 2*maxCDFPoints+1)
	}
	if s := cdf("v", "#000", nil, 3, 0, 1); len(s.X) != 0 || s.Name != "v (0 of 3 frames started)" {
		t.Errorf("no wait: %v, %q", s.X, s.Name)
	}
}
