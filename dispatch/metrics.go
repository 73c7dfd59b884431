package dispatch

import "github.com/prometheus/client_golang/prometheus"

// Metrics are dispatch's own metrics (the OpenCue-named ones live in
// internal/metrics and are passed in beside these).
type Metrics struct {
	BatchSize      prometheus.Histogram     // placements per booking transaction
	BatchDuration  prometheus.Histogram     // one booking transaction, begin to commit
	Drops          *prometheus.CounterVec   // placements the re-check dropped, by reason
	GuardLosses    *prometheus.CounterVec   // transactions rolled back by a guard or a lock conflict, by reason
	Busy           prometheus.Counter       // batches skipped: another transaction held the cluster
	Launches       *prometheus.CounterVec   // launch calls by outcome
	Compensations  *prometheus.CounterVec   // bookings released after a failed launch, by reason
	OutboxPending  prometheus.Gauge         // this instance's committed bookings not yet launched or released
	SpecErrors     prometheus.Counter       // bookings whose launch could not be built from their rows
	LaunchDuration *prometheus.HistogramVec // one LaunchFrame call, by outcome
}

// NewMetrics creates dispatch's metrics and registers them on reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		BatchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "cuesched_dispatch_batch_size", Help: "Placements per booking transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11)}),
		BatchDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "cuesched_dispatch_batch_duration_seconds", Help: "Duration of one booking transaction, begin to commit.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		Drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cuesched_dispatch_drops_total", Help: "Placements dropped by the booking's re-check, by reason."},
			[]string{"reason"}),
		GuardLosses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cuesched_dispatch_guard_losses_total", Help: "Booking transactions rolled back by a guard trigger or a lock conflict, by reason."},
			[]string{"reason"}),
		Busy: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cuesched_dispatch_cluster_busy_total", Help: "Batches skipped because another transaction was booking the cluster."}),
		Launches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cuesched_dispatch_launches_total", Help: "LaunchFrame calls by outcome."}, []string{"outcome"}),
		Compensations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cuesched_dispatch_compensations_total", Help: "Bookings released after a launch failed, by reason."},
			[]string{"reason"}),
		OutboxPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cuesched_dispatch_outbox_pending", Help: "Committed bookings of this instance not yet launched or released."}),
		SpecErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cuesched_dispatch_spec_errors_total", Help: "Bookings whose RunFrame could not be built from their rows (released)."}),
		LaunchDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "cuesched_dispatch_launch_duration_seconds", Help: "One LaunchFrame call, by outcome.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"outcome"}),
	}
	if reg != nil {
		reg.MustRegister(m.BatchSize, m.BatchDuration, m.Drops, m.GuardLosses, m.Busy, m.Launches, m.Compensations,
			m.OutboxPending, m.SpecErrors, m.LaunchDuration)
	}
	return m
}
