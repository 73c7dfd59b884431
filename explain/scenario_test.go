package explain_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cuesched/cuesched/explain"
	"github.com/cuesched/cuesched/internal/scenario"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestScenarios reads each scenario of testdata twice: with matching alone
// (scenario.Run), and with explain against a Cuebot database seeded with the
// scenario's farm, one report per job. The same expect lines must hold in
// both: what explain says is booked, what waits and why, is what matching
// says.
func TestScenarios(t *testing.T) {
	files, err := filepath.Glob("testdata/*.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no scenarios in testdata")
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".test"), func(t *testing.T) {
			t.Parallel()
			sc, err := scenario.ParseFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out, err := scenario.Run(sc)
			if err != nil {
				t.Fatal(err)
			}
			for _, err := range sc.Check(out) {
				t.Errorf("matching alone: %v", err)
			}
			out, err = explainScenario(t.Context(), t, sc)
			if err != nil {
				t.Fatal(err)
			}
			for _, err := range sc.Check(out) {
				t.Errorf("explain: %v", err)
			}
			if t.Failed() {
				t.Logf("explain's outcome:\n%s", out)
			}
		})
	}
}

// explainScenario seeds the scenario's farm into a fresh database and fills
// an outcome from explain's report of every job with layers: its dry plan's
// placements and waits.
func explainScenario(ctx context.Context, t *testing.T, sc *scenario.Scenario) (*scenario.Outcome, error) {
	opt, err := explainOptions(sc)
	if err != nil {
		return nil, err
	}
	farm, err := seed.FromScenario(sc, time.Now())
	if err != nil {
		return nil, err
	}
	db := pgtest.NewDB(t)
	if _, err := seed.Load(ctx, db.Pool, farm, 1); err != nil {
		return nil, err
	}
	tx, err := db.Pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	out := scenario.NewOutcome()
	for _, j := range farm.Jobs {
		if len(j.Layers) == 0 {
			continue
		}
		opt.Job = j.Name
		rep, err := explain.Read(ctx, tx, opt)
		if err != nil {
			return nil, fmt.Errorf("explain job %s: %w", j.Name, err)
		}
		if len(rep.Blocked) > 0 {
			return nil, fmt.Errorf("explain job %s: blocked before matching: %v", j.Name, rep.Blocked)
		}
		for _, l := range rep.Layers {
			for _, p := range l.Placements {
				out.Place(p.Host, l.Name)
			}
			if l.Reason != "" {
				out.Waits[l.Name] = scenario.Wait{Reason: l.Reason, Detail: l.Detail}
			}
		}
	}
	return out, nil
}

// explainOptions are the scenario's options as explain takes them. Explain
// plans one round of one job with seed 1 over the allocations of the job's
// clusters, so a scenario setting anything else is not one for explain.
func explainOptions(sc *scenario.Scenario) (explain.Options, error) {
	o := sc.Options
	if o.Rounds != 1 || o.Finish != 0 || o.Max != 0 || o.Seed != 1 || len(o.Allocs) > 0 {
		return explain.Options{}, fmt.Errorf("%s:%d: explain plans one round with seed 1, no placement bound "+
			"and its own allocations: drop rounds, finish, max, seed and allocs", sc.File, o.Line)
	}
	in := sc.Inputs()
	return explain.Options{PolicyName: o.Policy, Policy: in.Options.Policy, Order: in.Options.Order,
		SelfishServices: in.Options.SelfishServices, Memory: in.Options.Memory}, nil
}
