package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cuesched/cuesched/internal/config"
	"github.com/cuesched/cuesched/shows"
)

// showTimeout bounds list, manage and release (but for release's --settle
// and --wait): a few short transactions, and release's wait for the
// transactions that read table show before it.
const showTimeout = 2 * time.Minute

// showSub is one subcommand of `cuesched show`.
type showSub struct {
	name, synopsis, about string
	names                 int // positional arguments: 0, or 1 (the show's name)
}

var showSubs = []showSub{
	{"list", "list [--json]", "every show: managed or not, active, frames running and waiting, running under cuesched", 0},
	{"manage", "manage NAME", "hand show NAME to cuesched: Cuebot's booking skips it from now on", 1},
	{"release", "release NAME [--wait] [--timeout D] [--settle D]",
		"hand show NAME back to Cuebot at once, its counters at their sums; --wait waits for the frames cuesched booked", 1},
}

// showOptions are the flags of the show subcommands beyond --db.
type showOptions struct {
	json, wait      bool
	timeout, settle time.Duration
}

func showUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: cuesched show <command> [NAME] --db ...   (cuesched show <command> --help for its flags)")
	fmt.Fprintln(w, "\nWhich shows cuesched books (show.b_scheduler_managed); run manage and release as the owner of Cuebot's tables.")
	fmt.Fprintln(w, "\ncommands:")
	for _, s := range showSubs {
		fmt.Fprintf(w, "  %-8s %s\n", s.name, s.about)
	}
}

// runShow lists shows, and hands them to cuesched and back (package shows).
func runShow(ctx context.Context, env *environment, args []string) error {
	if len(args) == 0 {
		showUsage(env.stderr)
		return usageError("show needs a command: list, manage or release")
	}
	if isHelpFlag(args[0]) || args[0] == "help" {
		showUsage(env.stdout)
		return flag.ErrHelp
	}
	i := slices.IndexFunc(showSubs, func(s showSub) bool { return s.name == args[0] })
	if i < 0 {
		if config.LooksLikeDSN(args[0]) {
			return &config.Error{Err: config.UnexpectedArgument(args[0], true)}
		}
		return usageError(fmt.Sprintf("unknown show command %q: want list, manage or release", args[0]))
	}
	sub := showSubs[i]
	fs := flag.NewFlagSet("cuesched show "+sub.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, help is printed below
	o := showOptions{timeout: time.Hour}
	switch sub.name {
	case "list":
		fs.BoolVar(&o.json, "json", false, "print the shows as JSON")
	case "release":
		fs.BoolVar(&o.wait, "wait", false, "then wait until none of the show's frames runs under cuesched")
		fs.DurationVar(&o.timeout, "timeout", time.Hour, "with --wait: give up after this long (exit 1; the show stays handed back)")
		fs.DurationVar(&o.settle, "settle", 0,
			"for a Cuebot that caches the managed flag: how long it may still take the show for managed (upstream OpenCue caches it ~30s)")
	}
	own, rest, names := splitShowArgs(fs, args[1:])
	var flags []config.Flag
	fs.VisitAll(func(f *flag.Flag) {
		typ, _ := flag.UnquoteUsage(f)
		flags = append(flags, config.Flag{Name: f.Name, Type: typ, Meaning: f.Usage, Default: f.DefValue})
	})
	usage := config.Usage{Line: "cuesched show " + sub.synopsis + " --db ...", About: sub.about + ".", Flags: flags}
	if slices.ContainsFunc(args[1:], isHelpFlag) {
		config.PrintHelp(env.stdout, "show "+sub.name, usage)
		return flag.ErrHelp
	}
	cfg, err := config.Load("show "+sub.name, rest, env.getenv, nil, env.stderr, flags...)
	if err != nil {
		return err
	}
	if err := fs.Parse(own); err != nil {
		return usageError(err.Error())
	}
	if o.timeout <= 0 || o.settle < 0 {
		return usageError(fmt.Sprintf("--timeout %s, --settle %s: want a timeout above zero and a settle of zero or more", o.timeout, o.settle))
	}
	switch {
	case len(names) > sub.names:
		return usageError(fmt.Sprintf("unexpected argument %q: usage: cuesched show %s", names[sub.names], sub.synopsis))
	case len(names) < sub.names || (sub.names == 1 && names[0] == ""):
		return usageError(fmt.Sprintf("show %s needs the show's name (show.str_name): cuesched show %s", sub.name, sub.synopsis))
	}
	opCtx, cancel := context.WithTimeout(ctx, showTimeout+o.settle)
	defer cancel()
	pool, err := connect(opCtx, cfg, "cuesched-show")
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := checkSchemas(opCtx, pool); err != nil {
		return err
	}
	switch sub.name {
	case "list":
		all, err := shows.List(opCtx, pool)
		if err != nil {
			return err
		}
		if o.json {
			enc := json.NewEncoder(env.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(all)
		}
		printShows(env.stdout, all)
		return nil
	case "manage":
		m, err := shows.Manage(opCtx, pool, names[0])
		if err != nil {
			return err
		}
		printManaged(env.stdout, m)
		return nil
	}
	r, err := shows.Release(opCtx, pool, names[0], shows.ReleaseOptions{Settle: o.settle})
	if err != nil {
		return err
	}
	printReleased(env.stdout, r)
	if !o.wait || r.Show.Cuesched == 0 {
		return nil
	}
	fmt.Fprintf(env.stdout, "waiting for them (at most %s) ...\n", o.timeout)
	wctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	s, err := shows.Wait(wctx, pool, r.Show.Name, time.Second, func(n int64) {
		if n > 0 && n != r.Show.Cuesched {
			fmt.Fprintf(env.stdout, "%s: %s of show %s still under cuesched\n", time.Now().Format(time.TimeOnly), frames(n), r.Show.Name)
		}
	})
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return fmt.Errorf("gave up after --timeout %s with %s of show %s still running under cuesched; "+
				"the show stays handed back to Cuebot, which lowers their counters as they finish", o.timeout, frames(s.Cuesched), r.Show.Name)
		}
		return err
	}
	fmt.Fprintf(env.stdout, "none of show %s's frames runs under cuesched any more\n", s.Name)
	return nil
}

// splitShowArgs sorts args into the subcommand's own flags (those fs
// defines), the settings for config.Load (with the value of --db or
// --config given apart), and the positional arguments.
func splitShowArgs(fs *flag.FlagSet, args []string) (own, rest, names []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			names = append(names, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			names = append(names, a)
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := fs.Lookup(name)
		takesNext := !hasValue && i+1 < len(args)
		switch {
		case f != nil:
			own = append(own, a)
			if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); takesNext && !(ok && bf.IsBoolFlag()) {
				own = append(own, args[i+1])
				i++
			}
		default:
			rest = append(rest, a)
			if takesNext && (name == "db" || name == "config") {
				rest = append(rest, args[i+1])
				i++
			}
		}
	}
	return own, rest, names
}

func frames(n int64) string {
	if n == 1 {
		return "1 frame"
	}
	return fmt.Sprintf("%d frames", n)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// printShows writes the shows as a table for people.
func printShows(w io.Writer, all []shows.Show) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SHOW\tMANAGED\tACTIVE\tRUNNING\tWAITING\tUNDER CUESCHED")
	for _, s := range all {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\n", s.Name, yesNo(s.Managed), yesNo(s.Active), s.Running, s.Waiting, s.Cuesched)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nMANAGED: cuesched books the show (Cuebot's booking skips it). UNDER CUESCHED: frames cuesched booked that still hold their host.")
}

func printManaged(w io.Writer, m shows.Managed) {
	if m.Already {
		fmt.Fprintf(w, "show %s is already managed by cuesched: nothing changed\n", m.Show.Name)
		return
	}
	fmt.Fprintf(w, "show %s is now managed by cuesched: Cuebot's booking skips it, and the running cuesched instances book its %d waiting frames\n",
		m.Show.Name, m.Show.Waiting)
	printRefusedRows(w, m.Refused)
}

func printReleased(w io.Writer, r shows.Released) {
	s := r.Show
	if r.Already {
		fmt.Fprintf(w, "show %s was not managed by cuesched: nothing to hand back (its counters were brought to their sums all the same)\n", s.Name)
	} else {
		fmt.Fprintf(w, "show %s is handed back to Cuebot: Cuebot's booking takes it from now on, and its counters are at the sums of its procs\n", s.Name)
	}
	if s.Cuesched == 0 {
		fmt.Fprintln(w, "none of its frames runs under cuesched")
	} else {
		fmt.Fprintf(w, "frames still running under cuesched: %d; Cuebot lowers their counters as they finish\n", s.Cuesched)
	}
	if len(r.Lingering) > 0 {
		pids := make([]string, len(r.Lingering))
		for i, p := range r.Lingering {
			pids[i] = fmt.Sprint(p)
		}
		fmt.Fprintf(w, "warning: %d transactions that read table show before the release were still open at the recompute (pids %s): "+
			"if one is a Cuebot release of this show, run `cuesched show release %s` again once it has ended\n",
			len(r.Lingering), strings.Join(pids, ", "), s.Name)
	}
	printRefusedRows(w, r.Refused)
}

func printRefusedRows(w io.Writer, n int) {
	if n > 0 {
		fmt.Fprintf(w, "%d of its counter rows are above a cap Cuebot's guard enforces, and held at it until their procs, caps or hosts change\n", n)
	}
}
