package ownership

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the coordinator's metrics.
type Metrics struct {
	Clusters     prometheus.Gauge   // clusters in the deployment
	Owned        prometheus.Gauge   // clusters this instance owns
	Instances    prometheus.Gauge   // live instances
	Leader       prometheus.Gauge   // 1 while this instance is the leader
	Rebalances   prometheus.Counter // rebalances that moved clusters (leader)
	Handovers    prometheus.Counter // clusters this instance handed over
	Takeovers    prometheus.Counter // clusters of dead instances given to live ones (leader)
	SessionsLost prometheus.Counter // registrations lost (connection lost or ended): every cluster lost at once
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Clusters: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cuesched_clusters", Help: "Clusters in the deployment (cuesched.cluster rows)."}),
		Owned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cuesched_clusters_owned", Help: "Clusters this instance owns."}),
		Instances: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cuesched_instances", Help: "Live instances sharing the clusters."}),
		Leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cuesched_ownership_leader", Help: "1 while this instance decides the assignment."}),
		Rebalances: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cuesched_rebalances_total", Help: "Assignments decided by this instance as leader that moved clusters."}),
		Handovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cuesched_handovers_total", Help: "Clusters this instance handed over to another (rebalance or stop)."}),
		Takeovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cuesched_takeovers_total", Help: "Clusters of dead instances this instance, as leader, gave to live ones."}),
		SessionsLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cuesched_ownership_sessions_lost_total", Help: "Times this instance lost its registration and every cluster with it."}),
	}
	if reg != nil {
		reg.MustRegister(m.Clusters, m.Owned, m.Instances, m.Leader, m.Rebalances, m.Handovers, m.Takeovers, m.SessionsLost)
	}
	return m
}
