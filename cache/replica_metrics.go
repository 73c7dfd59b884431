package cache

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cuesched/cuesched/cdc"
)

// ReplicaMetrics are a Replica's metrics: the replication stream's (lag, events
// applied per table, snapshot load duration, reconnects) and the cache's own.
type ReplicaMetrics struct {
	Stream       *cdc.ReplicationMetrics
	Malformed    *prometheus.CounterVec // by table
	LimitReloads *prometheus.CounterVec // by result
}

// NewReplicaMetrics creates a Replica's metrics and registers them.
func NewReplicaMetrics(reg prometheus.Registerer) *ReplicaMetrics {
	m := &ReplicaMetrics{
		Stream: cdc.NewReplicationMetrics(reg),
		Malformed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cuesched_cache_rows_malformed_total",
			Help: "Replicated rows the cache could not read and skipped, by table."}, []string{"table"}),
		LimitReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cuesched_cache_limit_reloads_total",
			Help: "Reads of limit_record and layer_limit, by result."}, []string{"result"}),
	}
	reg.MustRegister(m.Malformed, m.LimitReloads)
	return m
}
