package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cuesched/cuesched/explain"
	"github.com/cuesched/cuesched/internal/config"
	"github.com/cuesched/cuesched/internal/instance"
)

// explainTimeout bounds the whole explanation: one read-only transaction
// that loads the farm as the host cache would.
const explainTimeout = 2 * time.Minute

// explainFlags are the flags of explain beyond its settings, which
// config.Load reads (--db, --policy, --order, ... and a --config file shared
// with run).
type explainFlags struct {
	job, layer string
	json       bool
}

// runExplain says why a job's layers wait (package explain), from one
// REPEATABLE READ READ ONLY transaction.
func runExplain(ctx context.Context, env *environment, args []string) error {
	if wantsHelp(args) {
		config.PrintHelp(env.stdout, "explain", explainUsage)
		return flag.ErrHelp
	}
	ef, rest, err := splitExplainFlags(args)
	if err != nil {
		return err
	}
	cfg, err := config.Load("explain", rest, env.getenv, nil, env.stdout, explainUsage.Flags...)
	if err != nil {
		return err
	}
	if ef.job == "" {
		return usageError("explain needs --job NAME (job.str_name): cuesched explain --db ... --job NAME [--layer NAME] [--json]")
	}
	ctx, cancel := context.WithTimeout(ctx, explainTimeout)
	defer cancel()
	pool, err := connect(ctx, cfg, "cuesched-explain")
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := checkSchemas(ctx, pool); err != nil {
		return err
	}
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("begin read-only transaction: %w", err)
	}
	// Read-only: nothing to commit, and a rollback ends it just as well.
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	rep, err := explain.Read(ctx, tx, explain.Options{
		Job: ef.job, Layer: ef.layer, PolicyName: cfg.Policy, Policy: instance.Policy(cfg), Order: instance.Order(cfg),
		SelfishServices: cfg.SelfishServices, Locality: cfg.Locality, HostPingMaxAge: cfg.HostPingMaxAge,
		Memory: instance.Memory(cfg), Reservations: cfg.Reservations,
	})
	if err != nil {
		return err
	}
	if ef.json {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	rep.Print(env.stdout)
	return nil
}

var explainUsage = config.Usage{
	Line: "cuesched explain --job NAME [--layer NAME] [--json] [flags]",
	About: "Why a job's layers wait: read-only, the matching rules against the farm as the database has it, " +
		"in one snapshot. The settings are run's that matching reads, so run's --config file serves.",
	Flags: []config.Flag{
		{Name: "job", Type: "NAME", Meaning: "the job (job.str_name); required"},
		{Name: "layer", Type: "NAME", Meaning: "only this layer of the job"},
		{Name: "json", Type: "bool", Meaning: "machine-readable output", Default: "false"},
	},
}

// splitExplainFlags takes explain's own flags out of args and returns the
// rest for config.Load.
func splitExplainFlags(args []string) (explainFlags, []string, error) {
	var ef explainFlags
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		if !strings.HasPrefix(a, "-") {
			rest = append(rest, a)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch name {
		case "job", "layer":
			if !hasValue {
				if i+1 >= len(args) {
					return ef, nil, usageError("flag needs an argument: --" + name)
				}
				i++
				value = args[i]
			}
			if name == "job" {
				ef.job = value
			} else {
				ef.layer = value
			}
		case "json":
			ef.json = true
			if hasValue {
				b, err := strconv.ParseBool(value)
				if err != nil {
					return ef, nil, usageError(fmt.Sprintf("--json: %q is not true or false", value))
				}
				ef.json = b
			}
		default:
			rest = append(rest, a)
		}
	}
	return ef, rest, nil
}
