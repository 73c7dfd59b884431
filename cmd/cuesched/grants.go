package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/cuesched/cuesched/internal/config"
	"github.com/cuesched/cuesched/internal/grants"
)

var grantsUsage = config.Usage{
	Line: "cuesched grants --role NAME [--database NAME] [--feed events|poll]",
	About: "Prints the SQL that gives cuesched's role what it reads and writes and nothing else; apply it as " +
		"the owner of Cuebot's tables (the REPLICATION attribute needs a superuser):\n\n" +
		"  cuesched grants --role cuesched | psql \"postgres://postgres@dbhost/cuebot\"",
	Flags: []config.Flag{
		{Name: "role", Type: "NAME", Meaning: "cuesched's database role; required"},
		{Name: "database", Type: "NAME", Meaning: "Cuebot's database, for the CONNECT grant", Default: "cuebot"},
		{Name: "feed", Type: "events|poll", Meaning: "the instances' feed: events needs REPLICATION, poll does not",
			Default: "events"},
	},
}

// runGrants prints the SQL giving cuesched's role what it needs and nothing
// more (package grants, the list `run` checks at start).
func runGrants(_ context.Context, env *environment, args []string) error {
	fs := flag.NewFlagSet("cuesched grants", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned as one line, help printed below
	fs.Usage = func() {}
	var names []string
	strFlag := func(f config.Flag) *string {
		names = append(names, f.Name)
		return fs.String(f.Name, f.Default, f.Meaning)
	}
	role, database, feed := strFlag(grantsUsage.Flags[0]), strFlag(grantsUsage.Flags[1]), strFlag(grantsUsage.Flags[2])
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			config.PrintHelp(env.stdout, "grants", grantsUsage)
			return err
		}
		return config.FlagError("grants", err, names)
	}
	if fs.NArg() > 0 {
		return usageError(fmt.Sprintf("unexpected argument %q: grants takes only --role, --database and --feed", fs.Arg(0)))
	}
	if *feed != "events" && *feed != "poll" {
		return usageError(fmt.Sprintf("--feed %q: want events or poll, as the instances run", *feed))
	}
	sql, err := grants.SQL(*role, *database, *feed == "events")
	if err != nil {
		return usageError(err.Error())
	}
	fmt.Fprint(env.stdout, sql)
	return nil
}
