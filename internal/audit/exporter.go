package audit

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cuesched/cuesched/internal/wait"
)

// Exporter runs the audit every interval and exports the counts of its
// findings as cuesched_audit_findings{check,kind}, for a running instance.
// Each run is one read-only snapshot; between runs it costs nothing, so an
// idle farm pays one audit per interval. It logs when the number of illegal
// findings changes, not at every run.
type Exporter struct {
	pool     *pgxpool.Pool
	opts     Options
	every    time.Duration
	log      *slog.Logger
	findings *prometheus.GaugeVec
	illegal  int // of the last run, to log only changes
}

// NewExporter registers the metric on reg; Run audits.
func NewExporter(pool *pgxpool.Pool, opts Options, every time.Duration, log *slog.Logger,
	reg prometheus.Registerer) *Exporter {
	a := &Exporter{pool: pool, opts: opts, every: every, log: log,
		findings: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cuesched_audit_findings",
			Help: "Findings of the instance's last invariant audit, by check and kind: illegal (a rule broken) or " +
				"left-legal (over a limit a later change put it over)."}, []string{"check", "kind"}),
	}
	reg.MustRegister(a.findings)
	a.set(nil) // every series exists from the start: 0 until the first run says otherwise
	return a
}

// Run audits every interval until ctx ends.
func (a *Exporter) Run(ctx context.Context) error {
	for wait.Sleep(ctx, a.every) {
		a.once(ctx)
	}
	return nil
}

func (a *Exporter) once(ctx context.Context) {
	actx, cancel := context.WithTimeout(ctx, max(a.every, time.Minute))
	defer cancel()
	began := time.Now()
	vs, err := Snapshot(actx, a.pool, a.opts)
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("invariant audit failed", "err", err)
		}
		return
	}
	a.set(vs)
	illegal := Illegals(vs)
	a.log.Debug("invariant audit", "findings", len(vs), "illegal", len(illegal), "took", time.Since(began))
	switch {
	case len(illegal) > 0 && len(illegal) != a.illegal:
		a.log.Warn("invariant audit found illegal state (cuesched audit lists it)", "illegal", len(illegal),
			"first", illegal[0].String())
	case len(illegal) == 0 && a.illegal > 0:
		a.log.Info("invariant audit clean again")
	}
	a.illegal = len(illegal)
}

// set writes every check's series, zero included, so that a finding gone
// reads 0 rather than its last count.
func (a *Exporter) set(vs []Violation) {
	counts := map[[2]string]int{}
	for _, c := range Checks() {
		counts[[2]string{c, string(Illegal)}] = 0
		counts[[2]string{c, string(LeftLegal)}] = 0
	}
	for _, v := range vs {
		counts[[2]string{v.Check, string(v.Kind)}]++
	}
	for k, n := range counts {
		a.findings.WithLabelValues(k[0], k[1]).Set(float64(n))
	}
}
