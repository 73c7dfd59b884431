package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/cuesched/cuesched/internal/audit"
	"github.com/cuesched/cuesched/internal/config"
	"github.com/cuesched/cuesched/internal/instance"
)

var auditUsage = config.Usage{
	About: "Runs the invariant checks against the database, read-only, in one snapshot, and prints what it finds: " +
		"hosts and frames that disagree with their procs, counters of managed shows off the sums of their procs " +
		"(drift), launch outbox rows neither launched nor released past --outbox-age, procs cuesched booked " +
		"for a show not managed, and caps (burst, job and folder maxima, limits) that procs hold more of than " +
		"they allow, with the reason.\n\n" +
		"Each finding is illegal (a rule broken) or left-legal: over a limit only because a later change put it " +
		"there (a cap lowered, a host moved, a show handed back while its frames run); those end with the frames. " +
		"Procs of shows not managed that cuesched did not book are Cuebot's and left alone; with --counters cuebot, so " +
		"are the counters.\n\n" +
		"Exit status: 0 when nothing illegal is found (left-legal findings are printed), 1 when something " +
		"illegal is found or the audit could not run, 2 on a bad setting. A role given `cuesched grants` may run it.",
	Flags: []config.Flag{{Name: "json", Type: "bool", Meaning: "print the report as JSON", Default: "false"}},
}

// auditReport is what `cuesched audit --json` prints.
type auditReport struct {
	At        time.Time         `json:"at"`
	OutboxAge string            `json:"outbox_age"`
	Illegal   int               `json:"illegal"`
	LeftLegal int               `json:"left_legal"`
	Findings  []audit.Violation `json:"findings"`
}

// illegalFound makes the command exit 1 after its report.
type illegalFound int

func (n illegalFound) Error() string {
	return fmt.Sprintf("%d illegal findings", int(n))
}

// runAudit prints the invariant audit of the database and fails when
// something illegal is found.
func runAudit(ctx context.Context, env *environment, args []string) error {
	asJSON, rest := splitJSON(args)
	if wantsHelp(args) {
		config.PrintHelp(env.stdout, "audit", auditUsage)
		return flag.ErrHelp
	}
	cfg, err := config.Load("audit", rest, env.getenv, nil, env.stdout, auditUsage.Flags...)
	if err != nil {
		return err
	}
	pool, err := connect(ctx, cfg, "cuesched-audit")
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := checkSchemas(ctx, pool); err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	r := auditReport{At: time.Now().UTC().Truncate(time.Second), OutboxAge: cfg.OutboxAge.String(),
		Findings: []audit.Violation{}}
	vs, err := audit.Snapshot(actx, pool, instance.AuditOptions(cfg))
	if err != nil {
		return err
	}
	r.Findings = append(r.Findings, vs...)
	r.Illegal = len(audit.Illegals(vs))
	r.LeftLegal = len(vs) - r.Illegal
	if asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return err
		}
	} else {
		printAudit(env.stdout, r)
	}
	if r.Illegal > 0 {
		return illegalFound(r.Illegal)
	}
	return nil
}

func printAudit(w io.Writer, r auditReport) {
	fmt.Fprintf(w, "audit as of %s (outbox rows stale after %s): %d illegal, %d left legal\n",
		r.At.Format(time.RFC3339), r.OutboxAge, r.Illegal, r.LeftLegal)
	if len(r.Findings) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tKIND\tKEY\tDETAIL")
	for _, v := range r.Findings {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.Check, v.Kind, v.Key, v.Detail)
	}
	tw.Flush()
}
