package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cuesched/cuesched/internal/config"
	"github.com/cuesched/cuesched/status"
)

// layersShown bounds the waiting layers the table lists per cluster; --json
// lists them all.
const layersShown = 10

var statusUsage = config.Usage{
	About: "What the instances are doing, as the database holds it (read-only): the live instances and their " +
		"replication lag, the clusters each owns, pending work per cluster and why it waits.",
	Flags: []config.Flag{{Name: "json", Type: "bool", Meaning: "print the report as JSON", Default: "false"}},
}

// runStatus prints the deployment's state as the database holds it.
func runStatus(ctx context.Context, env *environment, args []string) error {
	asJSON, rest := splitJSON(args)
	if wantsHelp(args) {
		config.PrintHelp(env.stdout, "status", statusUsage)
		return flag.ErrHelp
	}
	cfg, err := config.Load("status", rest, env.getenv, nil, env.stdout, statusUsage.Flags...)
	if err != nil {
		return err
	}
	pool, err := connect(ctx, cfg, "cuesched-status")
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := checkSchemas(ctx, pool); err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	r, err := status.Read(rctx, pool)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	printStatus(env.stdout, r)
	return nil
}

// splitJSON takes the --json flag (status and audit) out of args.
func splitJSON(args []string) (asJSON bool, rest []string) {
	for _, a := range args {
		switch strings.TrimLeft(a, "-") {
		case "json", "json=true":
			asJSON = true
			continue
		case "json=false":
			asJSON = false
			continue
		}
		rest = append(rest, a)
	}
	return asJSON, rest
}

// printStatus writes the report as tables for people.
func printStatus(w io.Writer, r status.Report) {
	fmt.Fprintf(w, "as of %s   WAL %s   tag buckets %s\n", r.At.Format(time.RFC3339), r.WAL, r.Buckets)
	fmt.Fprintf(w, "%d pending layers, %d waiting frames, %d clusters, %d unowned\n",
		r.Layers, r.Frames, len(r.Clusters), r.Unowned)
	if r.Reserved > 0 {
		fmt.Fprintf(w, "reserved hosts: %d, for %d layers (explain --job names them)\n", r.Reserved, r.ReservedLayers)
	}
	fmt.Fprintln(w)

	fmt.Fprintln(w, "INSTANCES")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tHOST\tPID\tSTARTED\tLEASE\tLIVE\tCLUSTERS\tREPLICATION LAG")
	if len(r.Instances) == 0 {
		fmt.Fprintln(tw, "-\t(none registered)\t\t\t\t\t\t\t")
	}
	for _, in := range r.Instances {
		live := "yes"
		if !in.Live {
			live = "NO"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s ago\t%s\t%s\t%d\t%s\n", in.ID, in.Name, in.Host, in.PID,
			ago(r.At, in.Started), lease(r.At, in.LeaseUntil), live, in.Clusters, lag(r.At, in))
	}
	tw.Flush()
	printRefused(w, r)

	fmt.Fprintln(w, "\nCLUSTERS")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tKIND\tFACILITY\tALLOCATION / BUCKET\tOWNER\tLAYERS\tFRAMES")
	for _, c := range r.Clusters {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\n", c.Key, c.Kind, c.Facility, what(c), owner(c), c.Pending, c.Waiting)
	}
	tw.Flush()

	for _, c := range r.Clusters {
		if len(c.Layers) == 0 {
			continue
		}
		who := owner(c)
		if !c.Unowned {
			who = "owner " + who
		}
		fmt.Fprintf(w, "\nWAITING IN %s (%s; %s", c.Key, what(c), who)
		if c.ReasonsAt != nil {
			fmt.Fprintf(w, ", reasons as of %s ago", ago(r.At, *c.ReasonsAt))
		}
		fmt.Fprintln(w, ")")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  PRIORITY\tJOB\tLAYER\tFRAMES\tREASON\tDETAIL")
		for i, l := range c.Layers {
			if i == layersShown {
				fmt.Fprintf(tw, "  ...\t%d more layers (--json lists all)\t\t\t\t\n", len(c.Layers)-layersShown)
				break
			}
			reason, detail := l.Reason, l.Detail
			if reason == "" {
				reason = "-"
				if l.StartAfter != nil {
					reason, detail = "start-after", "not before "+l.StartAfter.Format(time.RFC3339)
				}
			}
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%d\t%s\t%s\n", l.Priority, l.Job, l.Name, l.Waiting, reason, detail)
		}
		tw.Flush()
	}
}

// printRefused lists the counter rows Cuebot's guard refuses the
// instances, if any: each is held at its cap, so nothing books against it,
// until its procs, its cap or its hosts change.
func printRefused(w io.Writer, r status.Report) {
	n := 0
	for _, in := range r.Instances {
		n += len(in.Refused)
	}
	if n == 0 {
		return
	}
	fmt.Fprintf(w, "\nCOUNTER ROWS REFUSED BY CUEBOT'S GUARD (%d; held at their caps until their procs, caps or hosts change)\n", n)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTANCE\tTABLE\tKEY\tERROR")
	for _, in := range r.Instances {
		for _, f := range in.Refused {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", in.ID, f.Table, f.Key, f.Err)
		}
	}
	tw.Flush()
}

func what(c status.Cluster) string {
	if c.Kind == "alloc" {
		if c.AllocTag != "" {
			return fmt.Sprintf("%s (tag %s)", c.Alloc, c.AllocTag)
		}
		return c.Alloc
	}
	return fmt.Sprintf("tag bucket %d", c.Bucket)
}

func owner(c status.Cluster) string {
	s := "UNOWNED"
	switch {
	case c.ID == 0:
		s = "UNOWNED (no cluster row: no instance registered it)"
	case !c.Unowned:
		s = fmt.Sprintf("%d %s", c.Owner, c.OwnerName)
	case c.Owner != 0:
		s = fmt.Sprintf("UNOWNED (owner %d is not live)", c.Owner)
	}
	if c.HandingTo != nil {
		s += fmt.Sprintf(", handing over to %d", *c.HandingTo)
	}
	return s
}

func ago(now, t time.Time) string { return now.Sub(t).Round(time.Second).String() }

func lease(now, until time.Time) string {
	if d := until.Sub(now).Round(time.Second); d >= 0 {
		return "+" + d.String()
	}
	return "EXPIRED " + ago(now, until) + " ago"
}

func lag(now time.Time, in status.Instance) string {
	if in.ReportedAt == nil || in.LagBytes == nil {
		return "not reported"
	}
	return fmt.Sprintf("%s (reported %s ago)", bytesText(*in.LagBytes), ago(now, *in.ReportedAt))
}

func bytesText(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}
