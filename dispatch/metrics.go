package dispatch

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the booking's own metrics (the OpenCue-named ones live in
// internal/metrics and are passed in beside these; the launcher's are
// launch.Metrics).
type Metrics struct {
	batchSize     prometheus.Histogram   // placements per booking transaction
	batchDuration prometheus.Histogram   // one booking transaction, begin to commit
	gateWait      prometheus.Histogram   // a batch waiting for this instance's batches sharing its rows
	drops         *prometheus.CounterVec // placements the re-check dropped, by reason
	guardLosses   *prometheus.CounterVec // transactions rolled back by a guard or a lock conflict, by reason
	busy          prometheus.Counter     // batches skipped: another transaction held the cluster
}

// NewMetrics creates the booking's metrics and registers them on reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "cuesched_dispatch_batch_size", Help: "Placements per booking transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11)}),
		batchDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "cuesched_dispatch_batch_duration_seconds", Help: "Duration of one booking transaction, begin to commit.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		gateWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cuesched_dispatch_gate_wait_seconds",
			Help:    "Time a batch waited, before its transaction began, for this instance's batches locking some of its rows.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cuesched_dispatch_drops_total", Help: "Placements dropped by the booking's re-check, by reason."},
			[]string{"reason"}),
		guardLosses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cuesched_dispatch_guard_losses_total", Help: "Booking transactions rolled back by a guard trigger or a lock conflict, by reason."},
			[]string{"reason"}),
		busy: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cuesched_dispatch_cluster_busy_total", Help: "Batches skipped because another transaction was booking the cluster."}),
	}
	if reg != nil {
		reg.MustRegister(m.batchSize, m.batchDuration, m.gateWait, m.drops, m.guardLosses, m.busy)
	}
	return m
}
