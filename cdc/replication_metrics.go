package cdc

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ReplicationMetrics are the replication stream's metrics.
type ReplicationMetrics struct {
	LagBytes     prometheus.Gauge
	LagSeconds   prometheus.Gauge
	Events       *prometheus.CounterVec // by table and op
	Transactions *prometheus.CounterVec // by streamed ("true", "false")
	StreamBlocks prometheus.Counter
	Messages     prometheus.Counter
	SnapshotLoad prometheus.Histogram
	Reconnects   prometheus.Counter
	// Connected is 1 while the host cache's feed has a loaded state and is
	// following changes (a stream session or the last poll succeeded).
	Connected prometheus.Gauge

	mu        sync.Mutex
	serverEnd LSN
	applied   LSN
}

// NewReplicationMetrics creates the stream's metrics and registers them.
func NewReplicationMetrics(reg prometheus.Registerer) *ReplicationMetrics {
	m := &ReplicationMetrics{
		LagBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cuesched_replication_lag_bytes",
			Help: "WAL between the server's last reported position and what the cache has applied."}),
		LagSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cuesched_replication_lag_seconds",
			Help: "Age of the last applied transaction's commit when it was applied; 0 once caught up."}),
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cuesched_replication_events_total",
			Help: "Row changes applied from the stream, by table and operation."}, []string{"table", "op"}),
		Transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cuesched_replication_transactions_total",
			Help: "Transactions applied from the stream, by whether they were streamed in progress."}, []string{"streamed"}),
		StreamBlocks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cuesched_replication_stream_blocks_total",
			Help: "Blocks of in-progress transactions received (protocol v2 streaming)."}),
		Messages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cuesched_replication_messages_total",
			Help: "Transactional logical decoding messages received with applied transactions (cuesched's retry hints, and any other application's)."}),
		SnapshotLoad: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cuesched_replication_snapshot_load_seconds",
			Help:    "Duration of the initial state load inside each session's exported snapshot.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}),
		Reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cuesched_replication_reconnects_total",
			Help: "Replication sessions that ended or failed to start and were retried."}),
		Connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cuesched_replication_connected",
			Help: "1 while the host cache's feed has loaded a state and follows changes (stream session up, or last poll done)."}),
	}
	reg.MustRegister(m.LagBytes, m.LagSeconds, m.Events, m.Transactions, m.StreamBlocks, m.Messages, m.SnapshotLoad,
		m.Reconnects, m.Connected)
	return m
}

func (m *ReplicationMetrics) observeServer(end LSN) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if end > m.serverEnd {
		m.serverEnd = end
	}
	m.setLagLocked()
}

// observeApplied records the applied position; commit is the applied
// transaction's commit time, zero for a keepalive.
func (m *ReplicationMetrics) observeApplied(lsn LSN, commit time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if lsn > m.applied {
		m.applied = lsn
	}
	m.setLagLocked()
	switch {
	case !commit.IsZero():
		m.LagSeconds.Set(max(0, time.Since(commit).Seconds()))
	case m.applied >= m.serverEnd:
		m.LagSeconds.Set(0)
	}
}

// Lag is the WAL between the server's last reported position and what has
// been applied: the gauge's value, for those who publish it elsewhere.
func (m *ReplicationMetrics) Lag() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(max(m.serverEnd, m.applied) - m.applied)
}

func (m *ReplicationMetrics) setLagLocked() {
	if m.serverEnd > m.applied {
		m.LagBytes.Set(float64(m.serverEnd - m.applied))
	} else {
		m.LagBytes.Set(0)
	}
}

func (m *ReplicationMetrics) observeTxn(t *Txn) {
	for _, c := range t.Changes {
		m.Events.WithLabelValues(c.Rel.Name, c.Op.String()).Inc()
	}
	streamed := "false"
	if t.Streamed {
		streamed = "true"
	}
	m.Transactions.WithLabelValues(streamed).Inc()
	m.Messages.Add(float64(len(t.Messages)))
	m.observeApplied(t.EndLSN, t.CommitTime)
}
