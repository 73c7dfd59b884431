package counters

import "github.com/prometheus/client_golang/prometheus"

// metrics are a Writer's. Their names are those they had when the replica
// recomputed the counters.
type metrics struct {
	batches *prometheus.CounterVec // by result
	rows    prometheus.Counter
	// refused is how many counter rows a guard trigger refuses to set to
	// their sums now (Refusal): each is held at its cap.
	refused prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cuesched_cache_counter_batches_total",
			Help: "Counter recompute batches after releases, by result."}, []string{"result"}),
		rows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cuesched_cache_counter_rows_total",
			Help: "Counter rows marked by released procs and recomputed."}),
		refused: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cuesched_counters_refused",
			Help: "Counter rows of managed shows Cuebot's guard refuses to set to their sums (held at their caps until their rows change)."}),
	}
	reg.MustRegister(m.batches, m.rows, m.refused)
	return m
}
