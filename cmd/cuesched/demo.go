package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/internal/audit"
	"github.com/cuesched/cuesched/internal/config"
	"github.com/cuesched/cuesched/internal/cuebotdb"
	"github.com/cuesched/cuesched/internal/pgcluster"
	"github.com/cuesched/cuesched/internal/seed"
	"github.com/cuesched/cuesched/migrations"
)

// runDemo starts a throwaway PostgreSQL cluster, builds a Cuebot-compatible
// database with cuesched's migrations, seeds the peer stress farm and
// reports what it holds. It never touches the system's own cluster.
func runDemo(ctx context.Context, env *environment, args []string) error {
	if _, err := config.Load("demo", args, env.getenv, []string{}, env.stderr); err != nil {
		return err
	}
	out := env.stdout
	start := time.Now()
	fmt.Fprintln(out, "demo: starting a throwaway PostgreSQL cluster")
	cl, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		return err
	}
	defer cl.Stop()
	admin, err := pgx.Connect(ctx, cl.DSN("postgres"))
	if err != nil {
		return fmt.Errorf("connect to demo cluster: %w", err)
	}
	_, err = admin.Exec(ctx, "CREATE DATABASE cuebot")
	admin.Close(ctx)
	if err != nil {
		return fmt.Errorf("create demo database: %w", err)
	}
	conn, err := pgx.Connect(ctx, cl.DSN("cuebot"))
	if err != nil {
		return fmt.Errorf("connect to demo database: %w", err)
	}
	err = cuebotdb.Create(ctx, conn)
	conn.Close(ctx)
	if err != nil {
		return err
	}
	if err := migrations.Up(ctx, cl.DSN("cuebot")); err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, cl.DSN("cuebot"))
	if err != nil {
		return fmt.Errorf("connect to demo database: %w", err)
	}
	defer pool.Close()
	farm := seed.PeerStress(1)
	if _, err := seed.Load(ctx, pool, farm, 1); err != nil {
		return err
	}
	fmt.Fprintf(out, "demo: seeded the peer stress farm: %d hosts, %d jobs, %d frames waiting\n",
		len(farm.Hosts), len(farm.Jobs), farm.FrameCount())
	vs, err := audit.Run(ctx, pool, audit.Options{})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "demo: %s\n", audit.Summary(vs))
	fmt.Fprintf(out, "demo: done in %s\n", time.Since(start).Round(time.Millisecond))
	if len(vs) > 0 {
		return fmt.Errorf("%s", audit.Summary(vs))
	}
	return nil
}
