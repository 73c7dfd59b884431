package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"text/tabwriter"

	"github.com/cuesched/cuesched/internal/config"
	"github.com/cuesched/cuesched/internal/preflight"
	"github.com/cuesched/cuesched/migrations"
)

var migrateUsage = config.Usage{
	Line: "cuesched migrate up|down|status|force VERSION --db ...",
	About: `  up             check that the database holds Cuebot's schema (V47 or newer), then apply every cuesched
                 migration not yet applied
  down           roll back every cuesched migration (Cuebot's own tables and rows stay as they are)
  status         show the version applied and, when a migration failed half-way (dirty), what to do; then
                 each migration, applied or not, and whether the release before it runs on it (README,
                 "Upgrading")
  force VERSION  record VERSION (0: none) as applied and clean without running anything, once the
                 database has been fixed by hand after a failed migration`,
}

// runMigrate applies, rolls back, shows or forces cuesched's migrations.
// Nothing but up, down and force writes: status and the checks before up
// only read, so a refused up leaves the database as it was.
func runMigrate(ctx context.Context, env *environment, args []string) error {
	if wantsHelp(args) {
		config.PrintHelp(env.stdout, "migrate", migrateUsage)
		return flag.ErrHelp
	}
	latest, err := migrations.Latest()
	if err != nil {
		return err
	}
	if len(args) == 0 {
		return usageError("migrate needs one of up, down, status or force VERSION: cuesched migrate up|down|status|force VERSION --db ...")
	}
	sub, rest := args[0], args[1:]
	var version uint
	switch sub {
	case "up", "down", "status":
	case "force":
		if len(rest) == 0 {
			return forceUsage(latest, "")
		}
		v, err := strconv.ParseUint(rest[0], 10, 0)
		if err != nil || v > uint64(latest) {
			return forceUsage(latest, rest[0])
		}
		version, rest = uint(v), rest[1:]
	default:
		if config.LooksLikeDSN(sub) {
			return usageError("migrate needs one of up, down, status or force VERSION first, and the database as --db=...: cuesched migrate up --db ...")
		}
		return usageError(fmt.Sprintf("migrate needs one of up, down, status or force VERSION, not %q: cuesched migrate up --db ...", sub))
	}
	cfg, err := config.Load("migrate "+sub, rest, env.getenv, nil, env.stdout)
	if err != nil {
		return err
	}
	pool, err := connect(ctx, cfg, "cuesched-migrate")
	if err != nil {
		return err
	}
	defer pool.Close()
	st, err := migrations.Read(ctx, pool)
	if err != nil {
		return err
	}
	switch sub {
	case "up":
		// Before golang-migrate opens: it creates its table as it does, and
		// a database without Cuebot's schema would be left with 0001 applied
		// and 0002 failed.
		if err := preflight.CuebotSchema(ctx, pool); err != nil {
			return err
		}
		if st.Dirty {
			return fmt.Errorf("refusing to migrate up: cuesched migrations %s", describe(st))
		}
		if err := migrations.Up(ctx, cfg.DB); err != nil {
			return failed(ctx, pool, err)
		}
	case "down":
		if st.Dirty {
			return fmt.Errorf("refusing to migrate down: cuesched migrations %s", describe(st))
		}
		if st.Version > 0 {
			if err := migrations.Down(ctx, cfg.DB); err != nil {
				return failed(ctx, pool, err)
			}
		}
	case "force":
		if err := migrations.Force(ctx, cfg.DB, version); err != nil {
			return err
		}
	}
	if sub != "status" {
		if st, err = migrations.Read(ctx, pool); err != nil {
			return err
		}
	}
	fmt.Fprintf(env.stdout, "%s: cuesched migrations %s\n", config.RedactDSN(cfg.DB), describe(st))
	if sub == "status" {
		return printMarks(env.stdout, st)
	}
	return nil
}

// printMarks lists every migration, this binary's and any newer one the
// database records, with whether it is applied and whether the release
// before it runs on it: what decides how to upgrade (README, "Upgrading").
func printMarks(w io.Writer, st migrations.Status) error {
	ms, err := migrations.Migrations()
	if err != nil {
		return err
	}
	for v := range st.Recorded {
		if v > st.Latest {
			ms = append(ms, migrations.Migration{Version: v, Name: "(newer than this binary)"})
		}
	}
	slices.SortFunc(ms, func(a, b migrations.Migration) int { return cmp.Compare(a.Version, b.Version) })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "migration\tapplied\tthe release before it runs on it")
	for _, m := range ms {
		mark, ok := st.Recorded[m.Version]
		if !ok {
			mark, ok = m.Mark, m.Marked
		}
		applied, compatible := "no", "no"
		if m.Version <= st.Version {
			applied = "yes"
		}
		switch {
		case !ok:
			compatible = "unknown: it records no mark"
		case mark.Compatible:
			compatible = "yes: " + mark.Why
		default:
			compatible = "no: " + mark.Why
		}
		fmt.Fprintf(tw, "%04d %s\t%s\t%s\n", m.Version, m.Name, applied, compatible)
	}
	return tw.Flush()
}

func forceUsage(latest uint, got string) error {
	what := "migrate force needs the version to record"
	if got != "" && !config.LooksLikeDSN(got) {
		what = fmt.Sprintf("migrate force: %q is not a version", got)
	}
	return usageError(fmt.Sprintf("%s, 0 to %d (0: none applied): cuesched migrate force VERSION --db ...", what, latest))
}

// failed adds to a failed migration what state it left the database in.
func failed(ctx context.Context, pool migrations.Querier, err error) error {
	st, rerr := migrations.Read(ctx, pool)
	if rerr != nil || !st.Dirty {
		return err
	}
	return fmt.Errorf("%w; cuesched migrations are now %s", err, describe(st))
}

// describe is where the migrations stand and, when dirty, the way out.
func describe(st migrations.Status) string {
	s := fmt.Sprintf("at version %d of %d", st.Version, st.Latest)
	switch {
	case !st.Dirty:
		return s
	case st.Version == 0:
		return s + ", dirty: rolling back migration 1 failed half-way; undo by hand what is left of it, " +
			"then run `cuesched migrate force 0`"
	}
	return s + fmt.Sprintf(", dirty: migration %d failed half-way; undo by hand what it applied, then run "+
		"`cuesched migrate force %d` and `cuesched migrate up` (or, had you completed it by hand, `cuesched migrate force %d`)",
		st.Version, st.Version-1, st.Version)
}

// migrationsRunnable refuses migrations this binary cannot run on: dirty,
// not all applied, or newer than its own unless by one migration that
// records it compatible with the release before it (a rolling upgrade: the
// database is migrated first, then replicas are replaced one at a time).
func migrationsRunnable(st migrations.Status) error {
	switch {
	case st.Dirty:
		return errors.New("cuesched migrations " + describe(st))
	case st.Version < st.Latest:
		return fmt.Errorf("cuesched migrations at version %d of %d: run `cuesched migrate up --db ...` first", st.Version, st.Latest)
	case st.Version == st.Latest:
		return nil
	case st.Version > st.Latest+1:
		return fmt.Errorf("cuesched migrations at version %d, %d ahead of this binary's %d: an instance runs at most one migration "+
			"behind the database; run the cuesched that applied them, or a newer one", st.Version, st.Version-st.Latest, st.Latest)
	}
	mark, ok := st.Recorded[st.Version]
	switch {
	case !ok:
		return fmt.Errorf("cuesched migrations at version %d, one ahead of this binary's %d, and migration %d records no word on "+
			"the release before it: stop this release's instances and run the cuesched that applied it, or a newer one",
			st.Version, st.Latest, st.Version)
	case !mark.Compatible:
		return fmt.Errorf("cuesched migrations at version %d, one ahead of this binary's %d, and migration %d is not compatible with "+
			"the release before it (%s): stop this release's instances and run the cuesched that applied it, or a newer one",
			st.Version, st.Latest, st.Version, mark.Why)
	}
	return nil
}
