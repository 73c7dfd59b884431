// Package metrics serves Prometheus metrics and health endpoints, and holds
// the scheduler metrics under OpenCue's names so dashboards built for
// OpenCue's scheduler keep working.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Scheduler holds the metrics OpenCue's scheduler exports, by the same names.
type Scheduler struct {
	JobsQueried           prometheus.Counter
	JobsProcessed         prometheus.Counter
	FramesDispatched      *prometheus.CounterVec // by show
	CandidatesPerLayer    prometheus.Histogram
	TimeToBook            prometheus.Histogram
	JobQueryDuration      prometheus.Histogram
	NoCandidateIterations prometheus.Counter
}

// NewScheduler creates the OpenCue-named metrics and registers them.
func NewScheduler(reg prometheus.Registerer) *Scheduler {
	s := &Scheduler{
		JobsQueried: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scheduler_jobs_queried_total", Help: "Jobs read as pending work."}),
		JobsProcessed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scheduler_jobs_processed_total", Help: "Jobs whose layers went through a planning round."}),
		FramesDispatched: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scheduler_frames_dispatched_total", Help: "Frames booked (committed), by show."}, []string{"show"}),
		CandidatesPerLayer: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "scheduler_candidates_per_layer", Help: "Hosts considered per layer in a planning round.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8)}),
		TimeToBook: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "scheduler_time_to_book_seconds", Help: "From a frame becoming eligible to its booking's commit.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
		JobQueryDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "scheduler_job_query_duration_seconds", Help: "Duration of queries that read pending work.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		NoCandidateIterations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scheduler_no_candidate_iterations_total", Help: "Planning rounds of a layer that found no host."}),
	}
	reg.MustRegister(s.JobsQueried, s.JobsProcessed, s.FramesDispatched, s.CandidatesPerLayer, s.TimeToBook,
		s.JobQueryDuration, s.NoCandidateIterations)
	return s
}

// Loop holds cuesched's own metrics of the scheduling loop.
type Loop struct {
	// Attempts counts placements handed to dispatch by outcome: booked,
	// dropped (the booking's re-check refused it) or deferred (not tried:
	// the cluster's lock was held, ownership moved, the batch failed). The
	// last two are wasted attempts.
	Attempts *prometheus.CounterVec
	// LayersWaiting is the layers left with waiting frames after the last
	// round of each owned cluster, by the reason matching gave.
	LayersWaiting *prometheus.GaugeVec
	// ClustersAsleep is the owned clusters sleeping until an event wakes them.
	ClustersAsleep prometheus.Gauge
}

// NewLoop creates the loop's metrics and registers them.
func NewLoop(reg prometheus.Registerer) *Loop {
	l := &Loop{
		Attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cuesched_placement_attempts_total",
			Help: "Placements handed to dispatch, by outcome: booked, dropped or deferred."}, []string{"outcome"}),
		LayersWaiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cuesched_layers_waiting",
			Help: "Layers left with waiting frames after their cluster's last round, by reason."}, []string{"reason"}),
		ClustersAsleep: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cuesched_clusters_asleep", Help: "Owned clusters sleeping until an event wakes them."}),
	}
	reg.MustRegister(l.Attempts, l.LayersWaiting, l.ClustersAsleep)
	return l
}

// NewRegistry is a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Server serves /metrics, /healthz (the process is alive) and /readyz (ready
// reports nil when the instance has its snapshot, its feeds and its share).
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Listen binds addr; Serve starts answering.
func Listen(addr string, reg *prometheus.Registry, ready func() error) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln: ln}, nil
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve answers until ctx ends, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics server: %w", err)
	case <-ctx.Done():
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.srv.Shutdown(shut); err != nil {
			slog.Warn("metrics server shutdown", "err", err)
		}
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("metrics server: %w", err)
		}
		return nil
	}
}
