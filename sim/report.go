package sim

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cuesched/cuesched/sim/workload"
)

// Width classes of the report: cores a layer asks for.
const (
	widthLE1 uint8 = iota
	width2to4
	width5to16
	widthGT16
	nWidths
)

// WidthClasses are the report's keys of the width classes, in order.
var WidthClasses = [nWidths]string{"le1", "2to4", "5to16", "gt16"}

func widthOf(cores int64) uint8 {
	switch {
	case cores <= 100:
		return widthLE1
	case cores <= 400:
		return width2to4
	case cores <= 1600:
		return width5to16
	}
	return widthGT16
}

// Report is what `cuesched sim` prints: one Result per variant.
type Report struct {
	Scenario string   `json:"scenario"`
	Seed     uint64   `json:"seed"`
	Hosts    int      `json:"hosts"`
	Frames   int      `json:"frames"`
	Variants []Result `json:"variants"`
}

// Result is one variant's run. Times are simulated seconds except WallS.
type Result struct {
	Label    string   `json:"label"`
	Settings []string `json:"settings"`
	// Utilization is core-hours used (frames killed for memory included)
	// over core-hours offered, every host's cores over SimS.
	Utilization float64 `json:"utilization"`
	// Wait is per width class the wait of frames from ready (their job
	// arrived, the layer they wait for done) to their first start.
	Wait map[string]Wait `json:"wait"`
	// ShareError is the mean over shows of |share of the core-hours used -
	// share of the subscriptions' size|.
	ShareError float64 `json:"share_error"`
	// ShowShareError is each show's |share of the core-hours used - share
	// of the subscriptions' size|, what ShareError averages.
	ShowShareError map[string]float64 `json:"show_share_error"`
	OOMKills       int64              `json:"oom_kills"`
	// MemoryTrimmed is frames started with less memory than their layer
	// asks (memory from history); MemoryRestored is layers trimmed before
	// that a memory failure stopped trimming.
	MemoryTrimmed  int64 `json:"memory_trimmed"`
	MemoryRestored int64 `json:"memory_restored"`
	// ReservationsMade is the reservations made (a host held for a
	// layer); ReservationsHonoured the frames booked on a host reserved for
	// their layer; Backfills the frames booked on a host reserved for
	// another layer, expected to end before its start.
	ReservationsMade     int64   `json:"reservations_made"`
	ReservationsHonoured int64   `json:"reservations_honoured"`
	Backfills            int64   `json:"backfills"`
	FramesRunningAvg     float64 `json:"frames_running_avg"`
	FramesBooked         int64   `json:"frames_booked"` // starts, retries included
	// WarmShare is the share of those starts on a host warm for the frame's
	// layer (it ran a frame of the layer within match.WarmWindow).
	WarmShare float64 `json:"warm_share"`
	// DrainS is from the last job's arrival until every frame is done;
	// null when the farm did not drain within the limit.
	DrainS *float64 `json:"drain_s"`
	SimS   float64  `json:"sim_s"`
	WallS  float64  `json:"wall_s"`

	// timeline is what the HTML report draws (WriteHTML); not in the JSON.
	timeline *timeline
}

// Wait is a width class's waits, in simulated seconds.
type Wait struct {
	Frames int     `json:"frames"`
	P50S   float64 `json:"wait_p50_s"`
	P99S   float64 `json:"wait_p99_s"`
	MaxS   float64 `json:"wait_max_s"`
}

// Run simulates the workload under each variant, the same farm drawn for
// each.
func Run(w *workload.Workload, opt Options, variants []Variant) (*Report, error) {
	if opt.Limit <= 0 {
		opt.Limit = 30 * 24 * time.Hour
	}
	rep := &Report{Scenario: w.Name, Seed: opt.Seed}
	for _, v := range variants {
		began := time.Now()
		farm, err := w.Draw(opt.Seed, opt.Scale, opt.JobScale)
		if err != nil {
			return nil, err
		}
		rep.Hosts, rep.Frames = len(farm.Hosts), farm.Frames
		rep.Variants = append(rep.Variants, simulateVariant(farm, v, opt, began))
	}
	return rep, nil
}

// RunFarm simulates a farm given whole, every frame's duration and memory
// use fixed (a history replayed by package sim/replay), under each
// variant; name is the report's scenario.
func RunFarm(name string, farm *workload.Farm, opt Options, variants []Variant) (*Report, error) {
	if len(farm.Hosts) == 0 {
		return nil, fmt.Errorf("farm %s has no hosts to run on", name)
	}
	if opt.Limit <= 0 {
		opt.Limit = 30 * 24 * time.Hour
	}
	rep := &Report{Scenario: name, Seed: opt.Seed, Hosts: len(farm.Hosts), Frames: farm.Frames}
	for _, v := range variants {
		rep.Variants = append(rep.Variants, simulateVariant(farm, v, opt, time.Now()))
	}
	return rep, nil
}

// simulateVariant runs farm under v; the farm is only read, so variants share
// it. wall_s counts from began.
func simulateVariant(farm *workload.Farm, v Variant, opt Options, began time.Time) Result {
	r := newRun(farm, v)
	r.onStop = opt.OnStop
	r.simulate(opt.Limit)
	res := r.result(v)
	res.WallS = round(time.Since(began).Seconds(), 3)
	return res
}

func (r *run) result(v Variant) Result {
	res := Result{Label: v.Label, Settings: v.Settings, Wait: map[string]Wait{}, OOMKills: r.m.oomKills,
		MemoryTrimmed: r.m.memTrimmed, MemoryRestored: r.m.memRestored,
		ReservationsMade: r.m.resvMade, ReservationsHonoured: r.m.resvHonoured, Backfills: r.m.backfills,
		FramesBooked: r.m.booked, SimS: r.t.Seconds()}
	if res.Settings == nil {
		res.Settings = []string{}
	}
	var cores int64
	for _, h := range r.hosts {
		cores += h.h.Total.Cores
	}
	if r.t > 0 && cores > 0 {
		res.Utilization = round(r.m.coreArea/(float64(cores)*r.t.Seconds()), 4)
		res.FramesRunningAvg = round(r.m.frameArea/r.t.Seconds(), 2)
	}
	for c, name := range WidthClasses {
		ws := r.m.waits[c]
		slices.Sort(ws)
		res.Wait[name] = Wait{Frames: len(ws), P50S: round(quantile(ws, 0.5), 1), P99S: round(quantile(ws, 0.99), 1),
			MaxS: round(quantile(ws, 1), 1)}
	}
	res.ShowShareError = map[string]float64{}
	if shares, ok := r.shares(); ok {
		var sum float64
		for _, sh := range shares {
			e := math.Abs(sh.used - sh.subscribed)
			res.ShowShareError[sh.show] = round(e, 4)
			sum += e
		}
		res.ShareError = round(sum/float64(len(shares)), 4)
	}
	if r.m.booked > 0 {
		res.WarmShare = round(float64(r.m.warmStarts)/float64(r.m.booked), 4)
	}
	res.timeline = r.timeline()
	if r.m.done == len(r.frames) {
		d := round(max(0, (r.t-r.m.lastArrival).Seconds()), 1)
		res.DrainS = &d
	}
	return res
}

// quantile of sorted xs by the nearest rank; 0 when empty.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}

func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// WriteTable writes the report as a table, one row per variant.
func (rep *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "scenario %s, seed %d: %d hosts, %d frames\n\n", rep.Scenario, rep.Seed, rep.Hosts, rep.Frames)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, row := range rep.rows() {
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	return tw.Flush()
}

// rows are the table's: a head, then a row per variant.
func (rep *Report) rows() [][]string {
	head := []string{"variant", "util", "share_err", "oom", "trimmed", "restored", "reserved", "honoured", "backfills",
		"booked", "warm", "running", "drain_s", "sim_s"}
	for _, c := range WidthClasses {
		head = append(head, "wait_"+c+" p50/p99/max")
	}
	head = append(head, "wall_s")
	rows := [][]string{head}
	for _, v := range rep.Variants {
		drain := "-"
		if v.DrainS != nil {
			drain = fmt.Sprintf("%.0f", *v.DrainS)
		}
		row := []string{v.Label, fmt.Sprintf("%.3f", v.Utilization), fmt.Sprintf("%.3f", v.ShareError),
			fmt.Sprint(v.OOMKills), fmt.Sprint(v.MemoryTrimmed), fmt.Sprint(v.MemoryRestored),
			fmt.Sprint(v.ReservationsMade), fmt.Sprint(v.ReservationsHonoured), fmt.Sprint(v.Backfills), fmt.Sprint(v.FramesBooked),
			fmt.Sprintf("%.3f", v.WarmShare), fmt.Sprintf("%.1f", v.FramesRunningAvg), drain,
			fmt.Sprintf("%.0f", v.SimS)}
		for _, c := range WidthClasses {
			x := v.Wait[c]
			row = append(row, fmt.Sprintf("%.0f/%.0f/%.0f", x.P50S, x.P99S, x.MaxS))
		}
		rows = append(rows, append(row, fmt.Sprintf("%.2f", v.WallS)))
	}
	return rows
}
