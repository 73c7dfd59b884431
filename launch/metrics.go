package launch

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the launcher's own metrics. Their names kept the dispatch
// prefix they had before launching left package dispatch, so that
// dashboards and alerts read them unchanged.
type Metrics struct {
	launches       *prometheus.CounterVec   // launch calls by outcome
	compensations  *prometheus.CounterVec   // bookings released after a failed launch, by reason
	outboxPending  prometheus.Gauge         // this instance's committed bookings not yet launched or released
	specErrors     prometheus.Counter       // bookings whose launch could not be built from their rows
	launchDuration *prometheus.HistogramVec // one LaunchFrame call, by outcome
}

// NewMetrics creates the launcher's metrics and registers them on reg (nil:
// not registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		launches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cuesched_dispatch_launches_total", Help: "LaunchFrame calls by outcome."}, []string{"outcome"}),
		compensations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cuesched_dispatch_compensations_total", Help: "Bookings released after a launch failed, by reason."},
			[]string{"reason"}),
		outboxPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cuesched_dispatch_outbox_pending", Help: "Committed bookings of this instance not yet launched or released."}),
		specErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cuesched_dispatch_spec_errors_total", Help: "Bookings whose RunFrame could not be built from their rows (released)."}),
		launchDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "cuesched_dispatch_launch_duration_seconds", Help: "One LaunchFrame call, by outcome.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"outcome"}),
	}
	// Every outcome is exported from the start, at 0, so a failure rate has
	// a series to compute from before the first failure.
	for _, o := range []Outcome{Launched, AlreadyRunning, Refused, Ambiguous} {
		m.launches.WithLabelValues(o.String())
	}
	if reg != nil {
		reg.MustRegister(m.launches, m.compensations, m.outboxPending, m.specErrors, m.launchDuration)
	}
	return m
}
