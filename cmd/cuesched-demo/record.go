package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Run is what the demo records of one run. The closing summary and the
// HTML report are computed from it alone, so both are tested on a recorded
// run (testdata/run.json) without a farm.
type Run struct {
	Date      time.Time `json:"date"`
	Hosts     int       `json:"hosts"`
	Frames    int       `json:"frames"` // the backlog: frames of the managed show handed over at once
	Instances []string  `json:"instances"`
	// BookedBy is the frames each instance booked, backlog and probe.
	BookedBy map[string]int `json:"booked_by"`
	Samples  []Sample       `json:"samples"` // one a second from the hand-over on
	Events   []Event        `json:"events"`
	// ToDrain runs from the hand-over's COMMIT returning to the last
	// backlog booking's COMMIT returning; Window from the first booking
	// commit to the last (DESIGN.md's booking window).
	ToDrain time.Duration `json:"to_drain"`
	Window  time.Duration `json:"window"`
	// WaitP50 and WaitP99 are percentiles of the backlog frames' waits,
	// from the hand-over's commit to each one's booking commit, over
	// WaitFrames frames (those the instances reported).
	WaitP50    time.Duration `json:"wait_p50"`
	WaitP99    time.Duration `json:"wait_p99"`
	WaitFrames int           `json:"wait_frames"`
	// Probe is the time to book of each single-frame job submitted onto
	// the idle farm, in submission order (DESIGN.md's definition).
	Probe []time.Duration `json:"probe"`
	// Commits counts the booking commits the instances reported in each
	// second since the hand-over (Commits[i]: from i to i+1 s).
	Commits []int `json:"commits"`
	// Redraws are the live view's intervals between redraws while the
	// backlog was booked.
	Redraws []time.Duration `json:"redraws"`
}

// Sample is one redraw of the live view.
type Sample struct {
	At      time.Duration `json:"at"` // since the hand-over
	Waiting int           `json:"waiting"`
	Running int           `json:"running"`
	Done    int           `json:"done"`
	// Booked is the frames booked so far: running and done (in the demo a
	// frame leaves waiting only by a booking). Rate is how many more a
	// second since the previous sample.
	Booked int     `json:"booked"`
	Rate   float64 `json:"rate"`
	// Clusters per instance name; "" counts the clusters nobody owns.
	Clusters map[string]int `json:"clusters"`
	// Stale: the counts query did not answer within the second, and
	// waiting, running and done are the previous sample's.
	Stale bool `json:"stale,omitempty"`
}

// Event is something the demo did or saw (a kill, a takeover), shown in
// the view and marked on the report's charts.
type Event struct {
	At   time.Duration `json:"at"` // since the hand-over
	Text string        `json:"text"`
}

// perSecond counts the times in each second from began on.
func perSecond(began time.Time, times []time.Time) []int {
	var out []int
	for _, at := range times {
		d := at.Sub(began)
		if d < 0 {
			continue
		}
		i := int(d / time.Second)
		for len(out) <= i {
			out = append(out, 0)
		}
		out[i]++
	}
	return out
}

// DrainRate is the backlog's frames over the time to drain.
func (r *Run) DrainRate() float64 {
	if r.ToDrain <= 0 {
		return 0
	}
	return float64(r.Frames) / r.ToDrain.Seconds()
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func sortedCopy(ds []time.Duration) []time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s
}

// Summary is the closing summary: each figure labelled with what it
// measures, as BENCHMARKS.md defines it.
func (r *Run) Summary() []string {
	var out []string
	if r.ToDrain > 0 {
		out = append(out,
			fmt.Sprintf("backlog drain rate: %s frames booked in %s from the hand-over's commit to the last booking's commit (time to drain): %.0f frames/s",
				thousands(r.Frames), roundDur(r.ToDrain), r.DrainRate()),
			fmt.Sprintf("booking window (first to last booking commit): %s; booked by %s", roundDur(r.Window), r.bookedBy()))
	}
	if r.WaitFrames > 0 {
		out = append(out, fmt.Sprintf("backlog per-frame wait (hand-over's commit to the frame's booking commit, %s frames): p50 %s, p99 %s",
			thousands(r.WaitFrames), roundDur(r.WaitP50), roundDur(r.WaitP99)))
	}
	if len(r.Probe) > 0 {
		p := sortedCopy(r.Probe)
		out = append(out,
			fmt.Sprintf("time to book on the idle farm (%d single-frame jobs submitted one at a time; launch COMMIT returning in the demo to the booking's COMMIT returning in an instance): p50 %s, p99 %s, max %s",
				len(p), roundDur(percentile(p, 0.5)), roundDur(percentile(p, 0.99)), roundDur(p[len(p)-1])),
			"why the two differ: a backlog frame waits for the frames booked before it (it measures the drain: "+
				thousands(r.Frames)+" frames at the drain rate), while time to book is measured with nothing queued ahead, as in BENCHMARKS.md")
	}
	if len(r.Redraws) > 0 {
		d := sortedCopy(r.Redraws)
		out = append(out, fmt.Sprintf("live view: %d redraws while booking, interval p50 %s, max %s",
			len(d)+1, roundDur(percentile(d, 0.5)), roundDur(d[len(d)-1])))
	}
	return out
}

// bookedBy is how many frames each instance booked, in the instances'
// order.
func (r *Run) bookedBy() string {
	parts := make([]string, 0, len(r.Instances))
	for _, name := range r.Instances {
		parts = append(parts, fmt.Sprintf("%s %s", name, thousands(r.BookedBy[name])))
	}
	return strings.Join(parts, ", ")
}

// roundDur rounds a duration for a reader: three significant figures.
func roundDur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	default:
		return d.Round(10 * time.Microsecond).String()
	}
}
