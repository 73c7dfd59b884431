package cache

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cuesched/cuesched/cdc"
)

// ReplicaMetrics are a Replica's metrics: the replication stream's (lag, events
// applied per table, snapshot load duration, reconnects) and the cache's own.
type ReplicaMetrics struct {
	Stream         *cdc.ReplicationMetrics
	Malformed      *prometheus.CounterVec // by table
	CounterBatches *prometheus.CounterVec // by result
	CounterRows    prometheus.Counter
	// CountersRefused is how many counter rows a guard trigger refuses to
	// set to their sums now (counters.Refusal): each is held at its cap.
	CountersRefused prometheus.Gauge
	LimitReloads    *prometheus.CounterVec // by result
}

// NewReplicaMetrics creates a Replica's metrics and registers them.
func NewReplicaMetrics(reg prometheus.Registerer) *ReplicaMetrics {
	m := &ReplicaMetrics{
		Stream: cdc.NewReplicationMetrics(reg),
		Malformed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cuesched_cache_rows_malformed_total",
			Help: "Replicated rows the cache could not read and skipped, by table."}, []string{"table"}),
		CounterBatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cuesched_cache_counter_batches_total",
			Help: "Counter recompute batches after releases, by result."}, []string{"result"}),
		CounterRows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cuesched_cache_counter_rows_total",
			Help: "Counter rows marked by released procs and recomputed."}),
		CountersRefused: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cuesched_counters_refused",
			Help: "Counter rows of managed shows Cuebot's guard refuses to set to their sums (held at their caps until their rows change)."}),
		LimitReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cuesched_cache_limit_reloads_total",
			Help: "Reads of limit_record and layer_limit, by result."}, []string{"result"}),
	}
	reg.MustRegister(m.Malformed, m.CounterBatches, m.CounterRows, m.CountersRefused, m.LimitReloads)
	return m
}
