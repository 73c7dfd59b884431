package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
)

// counts are what the view reads from the database each second.
type counts struct {
	waiting, running, done int
	clusters               map[string]int // per instance name; "" nobody
}

// countsSQL is the view's one query a second: Cuebot's per-job counters of
// the managed show (a few hundred rows, kept by Cuebot's frame triggers in
// each booking's and release's own transaction) and the clusters per owner.
const countsSQL = `SELECT coalesce(sum(s.int_waiting_count), 0), coalesce(sum(s.int_running_count), 0),
		coalesce(sum(s.int_succeeded_count), 0),
		(SELECT coalesce(json_object_agg(coalesce(i.name, ''), c.n), '{}')
		 FROM (SELECT owner, count(*) AS n FROM cuesched.cluster GROUP BY owner) c
		 LEFT JOIN cuesched.instance i ON i.id = c.owner)
	FROM job_stat s JOIN job j USING (pk_job) WHERE j.pk_show = $1`

// readCounts reads the counts on the view's own pool: sharing the pool of
// the Cuebot stand-in, whose completions queue for its connections by the
// hundred, is what held the demo's progress lines back 9-25 s.
func readCounts(ctx context.Context, pool *pgxpool.Pool, show string) (counts, error) {
	var c counts
	var raw []byte
	if err := pool.QueryRow(ctx, countsSQL, show).Scan(&c.waiting, &c.running, &c.done, &raw); err != nil {
		return c, fmt.Errorf("read the demo's counts: %w", err)
	}
	if err := json.Unmarshal(raw, &c.clusters); err != nil {
		return c, fmt.Errorf("read the demo's clusters per instance: %w", err)
	}
	return c, nil
}

// view draws the live view: redrawn in place on a terminal, one line a
// second otherwise. Events are printed above it and stay.
type view struct {
	out       io.Writer
	tty       bool
	instances []string
	killed    map[string]bool
	drawn     int // lines of the last block drawn in place
}

// isTerminal says whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func newView(out io.Writer, instances []string) *view {
	return &view{out: out, tty: isTerminal(out), instances: instances, killed: map[string]bool{}}
}

// event prints a line that stays above the view.
func (v *view) event(e Event) {
	v.clear()
	fmt.Fprintf(v.out, "demo: %6.1fs  %s\n", e.At.Seconds(), e.Text)
}

// draw shows a sample: in place on a terminal, as one line otherwise.
func (v *view) draw(s Sample) {
	if !v.tty {
		fmt.Fprintln(v.out, "demo: "+v.line(s))
		return
	}
	v.clear()
	lines := v.block(s)
	fmt.Fprint(v.out, strings.Join(lines, "\n")+"\n")
	v.drawn = len(lines)
}

// done leaves the last block on the screen as it is.
func (v *view) done() { v.drawn = 0 }

// clear erases the block drawn in place (cursor up, erase to the end).
func (v *view) clear() {
	if v.tty && v.drawn > 0 {
		fmt.Fprintf(v.out, "\x1b[%dA\x1b[J", v.drawn)
		v.drawn = 0
	}
}

func (v *view) stale(s Sample) string {
	if s.Stale {
		return " (counts from the previous second: the query did not answer in time)"
	}
	return ""
}

// line is a sample as one line.
func (v *view) line(s Sample) string {
	return fmt.Sprintf("%6.1fs  waiting %5d  running %5d  done %5d  booked %5d  %5.0f frames/s  clusters %s%s",
		s.At.Seconds(), s.Waiting, s.Running, s.Done, s.Booked, s.Rate, v.clusters(s), v.stale(s))
}

// block is a sample as the lines redrawn in place.
func (v *view) block(s Sample) []string {
	bar := func(n int) string {
		const width = 40
		total := max(s.Waiting+s.Running+s.Done, 1)
		k := min(width, n*width/total)
		return strings.Repeat("#", k) + strings.Repeat(".", width-k)
	}
	return []string{
		fmt.Sprintf("  %6.1fs since the hand-over%s", s.At.Seconds(), v.stale(s)),
		fmt.Sprintf("  waiting %5d  %s", s.Waiting, bar(s.Waiting)),
		fmt.Sprintf("  running %5d  %s", s.Running, bar(s.Running)),
		fmt.Sprintf("  done    %5d  %s", s.Done, bar(s.Done)),
		fmt.Sprintf("  booked  %5d  %6.0f frames/s in the last second", s.Booked, s.Rate),
		"  clusters " + v.clusters(s),
	}
}

// clusters is the clusters each instance owns, in the instances' order,
// then those nobody owns.
func (v *view) clusters(s Sample) string {
	var parts []string
	for _, name := range v.instances {
		mark := ""
		if v.killed[name] {
			mark = " (killed)"
		}
		if n, ok := s.Clusters[name]; ok || !v.killed[name] {
			parts = append(parts, fmt.Sprintf("%s%s %d", name, mark, n))
		}
	}
	var others []string
	for name := range s.Clusters {
		if name != "" && !slices.Contains(v.instances, name) {
			others = append(others, name)
		}
	}
	slices.Sort(others)
	for _, name := range others {
		parts = append(parts, fmt.Sprintf("%s %d", name, s.Clusters[name]))
	}
	if n := s.Clusters[""]; n > 0 {
		parts = append(parts, fmt.Sprintf("nobody %d", n))
	}
	return strings.Join(parts, ", ")
}
