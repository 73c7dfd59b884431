package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/cuesched/cuesched/internal/grants"
)

// runGrants prints the SQL giving cuesched's role what it needs and nothing
// more (package grants, the list `run` checks at start).
func runGrants(_ context.Context, env *environment, args []string) error {
	fs := flag.NewFlagSet("cuesched grants", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	role := fs.String("role", "", "cuesched's database role (required)")
	database := fs.String("database", "cuebot", "Cuebot's database, for the CONNECT grant")
	feed := fs.String("feed", "events", "the instances' feed: events (needs REPLICATION) or poll (does not)")
	fs.Usage = func() {
		fmt.Fprint(env.stderr, "usage: cuesched grants --role NAME [--database NAME] [--feed events|poll]\n\n"+
			"Prints the SQL that gives cuesched's role what it reads and writes and nothing else; apply it as the\n"+
			"owner of Cuebot's tables (the REPLICATION attribute needs a superuser):\n\n"+
			"  cuesched grants --role cuesched | psql \"postgres://postgres@dbhost/cuebot\"\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError(err.Error())
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
