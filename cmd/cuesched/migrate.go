package main

import (
	"context"
	"fmt"

	"github.com/cuesched/cuesched/internal/config"
	"github.com/cuesched/cuesched/migrations"
)

func runMigrate(ctx context.Context, env *environment, args []string) error {
	if len(args) == 0 || (args[0] != "up" && args[0] != "down" && args[0] != "status") {
		return usageError("migrate needs one of up, down or status: cuesched migrate up --db ...")
	}
	cfg, err := config.Load("migrate "+args[0], args[1:], env.getenv, []string{"db"}, env.stderr)
	if err != nil {
		return err
	}
	dsn := cfg.DB
	switch args[0] {
	case "up":
		if err := migrations.Up(ctx, dsn); err != nil {
			return err
		}
	case "down":
		if err := migrations.Down(ctx, dsn); err != nil {
			return err
		}
	}
	st, err := migrations.Get(ctx, dsn)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "%s: cuesched migrations at version %d of %d", config.RedactDSN(dsn), st.Version, st.Latest)
	if st.Dirty {
		fmt.Fprint(env.stdout, " (dirty: a migration failed half-way; fix it, then `migrate force`)")
	}
	fmt.Fprintln(env.stdout)
	return nil
}
