package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cuesched/cuesched/internal/config"
	"github.com/cuesched/cuesched/internal/grants"
	"github.com/cuesched/cuesched/internal/instance"
	"github.com/cuesched/cuesched/internal/preflight"
	"github.com/cuesched/cuesched/sim"
	"github.com/cuesched/cuesched/sim/replay"
	"github.com/cuesched/cuesched/sim/workload"
)

var simUsage = config.Usage{
	Line: "cuesched sim --list | --scenario NAME|FILE [--seed N] | --from-db DSN [--since 7d] [--variant 'LABEL KEY=VALUE ...']... [--json] [--html FILE]",
	About: "Simulates a farm in simulated time, booked by the scheduling code of cuesched run itself (its loop, " +
		"matching and host index), and reports how it did: utilization (core-hours used over offered), the wait " +
		"from ready to first start per width class of cores asked (le1, 2to4, 5to16, gt16; p50, p99 and max), " +
		"share_error (mean over shows of |share of core-hours used - share of subscription size|), frames killed " +
		"for memory, frames started with less memory than their layer asks and layers a memory failure stopped " +
		"trimming (memory from history), reservations made, frames booked on a host reserved for their layer " +
		"(honoured) or for another (backfills), frames running on average, frames booked (retries included), drain_s (from the last " +
		"arrival until every frame is done), sim_s (simulated seconds) and wall_s (the only wall-clock figure). " +
		"The same scenario and seed give the same report.\n\n" +
		"--html FILE also writes a self-contained page (it loads nothing) with the table and charts, every " +
		"variant overlaid: utilization and frames waiting per width class over simulated time, the distribution " +
		"of waits per width class, and each show's share of the core-hours used against its share of the " +
		"subscriptions. Standard output is the same with or without it.\n\n" +
		"--from-db replays a Cuebot database's history instead of a scenario, read-only: the hosts and " +
		"allocations as they are now, and the jobs that arrived within --since (job_history) with their layers' " +
		"requests (layer_history) and the frames they ran (frame_history), each frame running its recorded " +
		"duration and memory use, ready when its job arrives (history keeps no dependencies). It prints what it " +
		"replayed on standard error. Its role needs SELECT on " + strings.Join(replay.Tables, ", ") +
		" (on the search_path): of these, cuesched run's grants lack " + strings.Join(beyondRunGrants(), ", ") + ".\n\n" +
		"A variant runs the same workload under other settings of cuesched run, one row each: " +
		"--variant 'epvm policy=epvm order=strict' (a label, then KEY=VALUE pairs separated by spaces; values may " +
		"hold commas). The settings a simulation follows are " + strings.Join(simSettings, ", ") + ". " +
		"Without --variant, one variant, default, with the defaults.",
	Flags: []config.Flag{
		{Name: "list", Type: "bool", Meaning: "list the committed scenarios, one a line, name first"},
		{Name: "scenario", Type: "NAME|FILE", Meaning: "a committed scenario (--list) or a scenario file (sim/workload/README.md)"},
		{Name: "seed", Type: "N", Meaning: "the seed the workload is drawn with", Default: "1"},
		{Name: "from-db", Type: "DSN", Meaning: "replay this Cuebot database's history (read-only) instead of a scenario"},
		{Name: "since", Type: "DURATION", Meaning: "with --from-db, the jobs that arrived this long ago or later: days (7d) or a Go duration (36h)", Default: "7d"},
		{Name: "variant", Type: "'LABEL KEY=VALUE ...'", Meaning: "a variant: its label and the settings it runs under (repeatable, a row each)"},
		{Name: "json", Type: "bool", Meaning: "print the report as JSON (schema: sim/report.schema.json)"},
		{Name: "html", Type: "FILE", Meaning: "also write the report with its charts as a self-contained HTML page to FILE"},
	},
}

// beyondRunGrants are the tables a replay reads that cuesched run's grants
// do not let it SELECT: what a site grants its role beyond them.
func beyondRunGrants() []string {
	var out []string
	for _, t := range replay.Tables {
		if !slices.ContainsFunc(grants.List, func(g grants.Grant) bool {
			return g.Kind == grants.Table && g.Name == "public."+t && slices.Contains(g.Privileges, "SELECT")
		}) {
			out = append(out, t)
		}
	}
	return out
}

// replayTimeout bounds a replay's read of the database: one read-only
// transaction over a window of history.
const replayTimeout = 10 * time.Minute

// simSettings are the settings of `cuesched run` a simulation follows.
var simSettings = []string{"policy", "order", "selfish-services", "tag-pressure", "locality", "memory-from-history",
	"memory-headroom", "reservations", "reservation-after"}

// variantFlags collects the repeated --variant.
type variantFlags []string

func (v *variantFlags) String() string     { return strings.Join(*v, "; ") }
func (v *variantFlags) Set(s string) error { *v = append(*v, s); return nil }

// runSim is `cuesched sim` (package sim).
func runSim(ctx context.Context, env *environment, args []string) error {
	if wantsHelp(args) {
		config.PrintHelp(env.stdout, "sim", simUsage)
		return flag.ErrHelp
	}
	fs := flag.NewFlagSet("cuesched sim", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	list := fs.Bool("list", false, "")
	scenario := fs.String("scenario", "", "")
	seed := fs.String("seed", "1", "")
	fromDB := fs.String("from-db", "", "")
	since := fs.String("since", "7d", "")
	asJSON := fs.Bool("json", false, "")
	htmlPath := fs.String("html", "", "")
	var variants variantFlags
	fs.Var(&variants, "variant", "")
	if err := fs.Parse(args); err != nil {
		return usageError(fmt.Sprintf("%v (cuesched sim --help lists its flags)", err))
	}
	if fs.NArg() > 0 {
		return usageError(fmt.Sprintf("unexpected argument %q (flags are given as --name=value)", fs.Arg(0)))
	}
	if *list {
		return listScenarios(env.stdout)
	}
	if *scenario != "" && *fromDB != "" {
		return usageError("--scenario and --from-db are exclusive: simulate a scenario, or replay a database's history")
	}
	sinceGiven := false
	fs.Visit(func(f *flag.Flag) { sinceGiven = sinceGiven || f.Name == "since" })
	if sinceGiven && *fromDB == "" {
		return usageError("--since is the window of history --from-db replays: give --from-db DSN with it")
	}
	if *scenario == "" && *fromDB == "" {
		return usageError("sim needs --scenario NAME|FILE (cuesched sim --list names the committed ones) or --from-db DSN")
	}
	n, err := strconv.ParseUint(*seed, 10, 64)
	if err != nil {
		return usageError(fmt.Sprintf("--seed %q: want a whole number from 0", *seed))
	}
	window, err := parseSince(*since)
	if err != nil {
		return err
	}
	vs, err := simVariants(variants)
	if err != nil {
		return err
	}
	var w *workload.Workload
	if *scenario != "" {
		if w, err = workload.Load(*scenario); err != nil {
			return usageError(err.Error())
		}
	}
	var page *os.File
	if *htmlPath != "" {
		// Opened before the simulation, which may run for minutes, so a
		// path that cannot be written is named at once.
		if page, err = openPage(*htmlPath); err != nil {
			return err
		}
		defer page.Close() // on the paths that do not reach writePage
	}
	var rep *sim.Report
	if *fromDB != "" {
		h, err := readHistory(ctx, *fromDB, window)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.stderr, "replaying %d jobs (%d layers, %d frames) that arrived from %s to %s, the first at %s; "+
			"history: %d runs, %d killed for memory; left out: %d frames still running, %d frames of layers without tags\n",
			h.Jobs, h.Layers, h.Farm.Frames, h.From.Format(time.RFC3339), h.To.Format(time.RFC3339),
			h.First.Format(time.RFC3339), h.Attempts, h.MemoryKills, h.Running, h.Untagged)
		if rep, err = sim.RunFarm("replay --since "+*since, h.Farm, sim.Options{Seed: n}, vs); err != nil {
			return err
		}
	} else if rep, err = sim.Run(w, sim.Options{Seed: n}, vs); err != nil {
		return err
	}
	if *asJSON {
		err = rep.WriteJSON(env.stdout)
	} else {
		err = rep.WriteTable(env.stdout)
	}
	if err != nil || page == nil {
		return err
	}
	return writePage(page, rep)
}

// openPage opens the --html file for writing, keeping what it holds until
// the page replaces it.
func openPage(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, usageError(fmt.Sprintf("--html %s: %v (name a file you can write, in a directory that exists)", path, err))
	}
	return f, nil
}

// writePage replaces what the --html file held with the report's page,
// and closes it.
func writePage(f *os.File, rep *sim.Report) error {
	var b bytes.Buffer
	err := rep.WriteHTML(&b)
	if err == nil {
		err = f.Truncate(0)
	}
	if err == nil {
		_, err = f.Write(b.Bytes())
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("--html %s: %w", f.Name(), err)
	}
	return nil
}

// parseSince reads --since: whole days (7d) or a Go duration, above zero.
func parseSince(s string) (time.Duration, error) {
	bad := usageError(fmt.Sprintf("--since %q: want days (7d) or a Go duration (36h, 90m), above zero", s))
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 16)
		if err != nil {
			return 0, bad
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, bad
		}
	}
	if d <= 0 {
		return 0, bad
	}
	return d, nil
}

// readHistory replays the history of the database at dsn within since of
// now (package sim/replay). What the database cannot give (no Cuebot
// schema, a table the role may not read, no history in the window) is bad
// input, said in one line.
func readHistory(ctx context.Context, dsn string, since time.Duration) (*replay.History, error) {
	ctx, cancel := context.WithTimeout(ctx, replayTimeout)
	defer cancel()
	pool, err := connect(ctx, config.Config{DB: dsn}, "cuesched-sim")
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			return nil, &config.Error{Setting: "from-db", Err: ce.Err}
		}
		return nil, err
	}
	defer pool.Close()
	if err := preflight.Readable(ctx, pool, "--from-db", replay.Tables); err != nil {
		return nil, usageError(err.Error())
	}
	h, err := replay.Read(ctx, pool, replay.Options{Since: since})
	if errors.Is(err, replay.ErrEmpty) {
		return nil, usageError(fmt.Sprintf("--from-db: %v", err))
	}
	return h, err
}

func listScenarios(out io.Writer) error {
	all, err := workload.List()
	if err != nil {
		return err
	}
	for _, w := range all {
		hosts, frames := w.Size()
		fmt.Fprintf(out, "%-14s %s (%d hosts, about %.0f frames)\n", w.Name, w.About, hosts, frames)
	}
	return nil
}

// simVariants reads each --variant as `cuesched run` reads its settings;
// none: one variant "default".
func simVariants(given []string) ([]sim.Variant, error) {
	if len(given) == 0 {
		given = []string{"default"}
	}
	var out []sim.Variant
	for _, g := range given {
		fields := strings.Fields(g)
		if len(fields) == 0 {
			return nil, usageError("--variant is empty: want 'LABEL KEY=VALUE ...'")
		}
		label, pairs := fields[0], fields[1:]
		if strings.Contains(label, "=") {
			return nil, usageError(fmt.Sprintf("--variant %q: it starts with its label, then KEY=VALUE pairs ('epvm policy=epvm')", g))
		}
		if slices.ContainsFunc(out, func(v sim.Variant) bool { return v.Label == label }) {
			return nil, usageError(fmt.Sprintf("--variant %s: the label is given twice", label))
		}
		flags := make([]string, len(pairs))
		for i, p := range pairs {
			k, _, ok := strings.Cut(p, "=")
			if !ok || k == "" {
				return nil, usageError(fmt.Sprintf("--variant %s: %q is not KEY=VALUE", label, p))
			}
			flags[i] = "--" + p
		}
		cfg, err := config.Load("run", flags, func(string) string { return "" }, nil, io.Discard)
		if err != nil {
			var ce *config.Error
			if errors.As(err, &ce) {
				return nil, fmt.Errorf("--variant %s: %w", label, err)
			}
			return nil, usageError(fmt.Sprintf("--variant %s: %v", label, err))
		}
		for _, p := range pairs {
			k, _, _ := strings.Cut(p, "=")
			if !slices.Contains(simSettings, k) {
				return nil, usageError(fmt.Sprintf("--variant %s: %s is a setting of cuesched run the simulation does not follow (it follows %s)",
					label, k, strings.Join(simSettings, ", ")))
			}
		}
		out = append(out, sim.Variant{Label: label, Settings: pairs, Policy: instance.Policy(cfg),
			Order: instance.Order(cfg), SelfishServices: cfg.SelfishServices, TagPressure: cfg.TagPressure,
			Locality: cfg.Locality, Memory: instance.Memory(cfg), Reservations: cfg.Reservations,
			ReservationAfter: cfg.ReservationAfter})
	}
	return out, nil
}
