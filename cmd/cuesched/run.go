package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/internal/config"
	"github.com/cuesched/cuesched/internal/instance"
	"github.com/cuesched/cuesched/internal/preflight"
	"github.com/cuesched/cuesched/migrations"
	"github.com/cuesched/cuesched/ownership"
)

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// connect opens a pool on the configured database (pool-db when set, db
// otherwise) and proves it answers, with a deadline so an unreachable
// database fails fast and plainly.
func connect(ctx context.Context, cfg config.Config, app string) (*pgxpool.Pool, error) {
	dsn, setting := cfg.DB, "db"
	if cfg.PoolDB != "" {
		dsn, setting = cfg.PoolDB, "pool-db"
	}
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, &config.Error{Setting: setting, Err: fmt.Errorf("%s: %w", config.RedactDSN(dsn), err)}
	}
	if cfg.PoolDB != "" && !strings.Contains(dsn, "default_query_exec_mode") {
		// A transaction pooler gives each transaction whichever server
		// session is free: a statement prepared by name on one is missing
		// on the next. Exec mode prepares none and still binds parameters
		// on the server.
		pc.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	}
	pc.ConnConfig.RuntimeParams["application_name"] = app
	pc.ConnConfig.ConnectTimeout = 10 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", config.RedactDSN(dsn), err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to %s: %w", config.RedactDSN(dsn), err)
	}
	return pool, nil
}

// checkSchemas refuses a database without Cuebot's schema at V47 or newer,
// or with cuesched migrations this binary cannot run on
// (migrationsRunnable), and says where they stand. It only reads.
func checkSchemas(ctx context.Context, pool *pgxpool.Pool) (migrations.Status, error) {
	if err := preflight.CuebotSchema(ctx, pool); err != nil {
		return migrations.Status{}, err
	}
	st, err := migrations.Read(ctx, pool)
	if err != nil {
		return st, err
	}
	return st, migrationsRunnable(st)
}

// checkDatabase refuses a role lacking a privilege cuesched needs (first: a
// role that cannot read a table sees its columns as missing), what
// checkSchemas refuses, and a database logical replication cannot serve.
func checkDatabase(ctx context.Context, cfg config.Config, pool *pgxpool.Pool) (migrations.Status, error) {
	if err := preflight.Privileges(ctx, pool); err != nil {
		return migrations.Status{}, err
	}
	st, err := checkSchemas(ctx, pool)
	if err != nil {
		return st, err
	}
	if cfg.Feed == "events" {
		if err := preflight.Replication(ctx, pool, cdc.Publication); err != nil {
			return st, err
		}
	}
	return st, nil
}

var runUsage = config.Usage{
	About: "Books frames of scheduler-managed shows onto render hosts, beside Cuebot, until SIGTERM: then it " +
		"finishes or rolls back the batch in flight, hands its clusters over and exits 0.",
}

func runScheduler(ctx context.Context, env *environment, args []string) error {
	if wantsHelp(args) {
		config.PrintHelp(env.stdout, "run", runUsage)
		return flag.ErrHelp
	}
	cfg, err := config.Load("run", args, env.getenv, nil, env.stdout)
	if err != nil {
		return err
	}
	if _, err := cfg.RQDTLS(); err != nil {
		return err // before connecting: a bad file is a configuration error
	}
	log := newLogger(cfg, env.stderr)
	log.Info("cuesched starting", "version", versionString(), "instance", cfg.Instance,
		"db", config.RedactDSN(cfg.DB), "pool_db", config.RedactDSN(cfg.PoolDB), "feed", cfg.Feed, "dry_run", cfg.DryRun)
	pool, err := connect(ctx, cfg, ownership.AppName(cfg.Instance))
	if err != nil {
		return stoppedWhileStarting(ctx, log, err)
	}
	defer pool.Close()
	st, err := checkDatabase(ctx, cfg, pool)
	if err != nil {
		return stoppedWhileStarting(ctx, log, err)
	}
	if st.Version > st.Latest {
		// Said once at start: in the middle of a rolling upgrade, an
		// instance still to be replaced.
		log.Info("cuesched migrations one ahead of this binary's, compatible with it: replace this instance with the release that holds them",
			"version", st.Version, "binary", st.Latest)
	}
	return serve(ctx, cfg, log, pool)
}

// stoppedWhileStarting is err, unless the instance was told to stop
// (SIGTERM) while it started: the step failed because it was cut short, and
// a stop is a clean exit whenever it comes.
func stoppedWhileStarting(ctx context.Context, log *slog.Logger, err error) error {
	if ctx.Err() != nil {
		log.Info("stopped while starting", "step", err)
		return nil
	}
	return err
}

// serve runs the instance until ctx ends (package instance: every part,
// started and stopped in order).
func serve(ctx context.Context, cfg config.Config, log *slog.Logger, pool *pgxpool.Pool) error {
	return instance.Run(ctx, cfg, log, pool, instance.Options{Version: versionString()})
}
