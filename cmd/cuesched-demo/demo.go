package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cuesched/cuesched/internal/audit"
	"github.com/cuesched/cuesched/internal/config"
	"github.com/cuesched/cuesched/internal/instance"
	"github.com/cuesched/cuesched/internal/rqd"
	"github.com/cuesched/cuesched/internal/testworld/cuebotdb"
	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/fakerqd"
	"github.com/cuesched/cuesched/internal/testworld/pgcluster"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/migrations"
	"github.com/cuesched/cuesched/ownership"
)

// demoPort is the port every simulated RQD listens on, each on its own
// loopback address (the host's name), as real RQDs do on their hosts.
const demoPort = 8444

// runDemo shows cuesched at work on a simulated farm, self-contained: a
// throwaway PostgreSQL cluster with a Cuebot-compatible database and
// cuesched's migrations, the peer stress farm (1,200 hosts, 300 jobs, 6,000
// frames), one simulated RQD per host on its own loopback address, and Cuebot
// stood in for by completing each frame when its RQD finishes it. One
// cuesched instance books, launches over gRPC and follows completions until
// every frame has succeeded; then the invariant audit runs. The system's own
// PostgreSQL cluster is never touched.
func runDemo(ctx context.Context, out, errw io.Writer, getenv func(string) string, args []string) error {
	if _, err := config.Load("cuesched-demo", args, getenv, []string{}, out); err != nil {
		return err
	}
	start := time.Now()
	fmt.Fprintln(out, "demo: starting a throwaway PostgreSQL cluster")
	cl, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		return err
	}
	defer cl.Stop()
	if err := createDemoDB(ctx, cl); err != nil {
		return err
	}
	dsn := cl.DSN("cuebot")
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connect to demo database: %w", err)
	}
	defer pool.Close()

	farm := seed.PeerStress(1)
	// A job of Cuebot's own show rides along: cuesched must never book it.
	farm.Jobs = append(farm.Jobs, seed.Job{Name: "cuebot-own-job", Show: "testing",
		Layers: []seed.Layer{{Name: "render", Frames: 10, Cores: 100, Mem: seed.GB}}})
	if _, err := seed.Load(ctx, pool, farm, 1); err != nil {
		return err
	}
	managed := farm.FrameCount() - 10
	fmt.Fprintf(out, "demo: seeded the peer stress farm: %d hosts in 3 allocations, %d jobs, %d frames of the managed show\n",
		len(farm.Hosts), len(farm.Jobs)-1, managed)

	sim := &cuebotsim.Sim{Pool: pool}
	rqds, err := startDemoRQDs(ctx, farm.Hosts, sim, errw)
	if err != nil {
		return err
	}
	defer rqds.close()
	fmt.Fprintf(out, "demo: %d simulated RQDs listening on their hosts' loopback addresses, port %d\n", len(farm.Hosts), demoPort)

	metricsAddr, err := freeAddr()
	if err != nil {
		return err
	}
	cfg := config.Default()
	cfg.DB, cfg.Instance, cfg.MetricsAddr, cfg.RQDPort = dsn, "demo", metricsAddr, demoPort
	log := slog.New(slog.NewTextHandler(errw, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ipool, err := connectInstance(ctx, dsn, ownership.AppName(cfg.Instance))
	if err != nil {
		return err
	}
	defer ipool.Close()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- instance.Run(runCtx, cfg, log, ipool, instance.Options{}) }()
	fmt.Fprintln(out, "demo: cuesched is running: booking, launching over gRPC, following completions")

	if err := followDemo(ctx, out, pool, managed, served, rqds); err != nil {
		stop()
		<-served
		return err
	}
	// The instance owns the counters of the managed show: the last
	// releases are accounted a moment after they commit.
	vs, err := settleAudit(ctx, pool, 30*time.Second)
	if err != nil {
		stop()
		<-served
		return err
	}
	p50, p99, n, err := timeToBook(ctx, "http://"+metricsAddr+"/metrics")
	if err != nil {
		fmt.Fprintf(out, "demo: could not read the instance's metrics: %v\n", err)
	} else {
		fmt.Fprintf(out, "demo: time to book (eligible to booking commit, scheduler_time_to_book_seconds, %d frames): p50 %s, p99 %s\n",
			n, p50.Round(100*time.Microsecond), p99.Round(100*time.Microsecond))
	}
	stop()
	if err := <-served; err != nil {
		return fmt.Errorf("cuesched instance: %w", err)
	}
	return reportDemo(ctx, out, pool, start, vs)
}

// connectInstance opens the instance's pool on the demo's own cluster,
// named as `cuesched run` names it (ownership and status read the name).
func connectInstance(ctx context.Context, dsn, app string) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("demo database address: %w", err)
	}
	pc.ConnConfig.RuntimeParams["application_name"] = app
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect the instance to the demo database: %w", err)
	}
	return pool, nil
}

// settleAudit runs the audit until it is clean or the time is up, and
// returns the last violations.
func settleAudit(ctx context.Context, pool *pgxpool.Pool, within time.Duration) ([]audit.Violation, error) {
	deadline := time.Now().Add(within)
	for {
		vs, err := audit.Run(ctx, pool, audit.Options{})
		if err != nil || len(vs) == 0 || time.Now().After(deadline) {
			return vs, err
		}
		select {
		case <-ctx.Done():
			return vs, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a port for the demo's metrics: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// timeToBook reads the instance's time-to-book histogram and estimates its
// 50th and 99th percentiles from the buckets (the upper bound of the bucket
// each falls in).
func timeToBook(ctx context.Context, url string) (p50, p99 time.Duration, n uint64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, 0, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, 0, 0, err
	}
	fam := families["scheduler_time_to_book_seconds"]
	if fam == nil || len(fam.GetMetric()) == 0 {
		return 0, 0, 0, errors.New("no scheduler_time_to_book_seconds")
	}
	h := fam.GetMetric()[0].GetHistogram()
	n = h.GetSampleCount()
	at := func(q float64) time.Duration {
		want := uint64(q * float64(n))
		for _, b := range h.GetBucket() {
			if b.GetCumulativeCount() >= want {
				return time.Duration(b.GetUpperBound() * float64(time.Second))
			}
		}
		return time.Duration(math.Inf(1))
	}
	return at(0.5), at(0.99), n, nil
}

func createDemoDB(ctx context.Context, cl *pgcluster.Cluster) error {
	admin, err := pgx.Connect(ctx, cl.DSN("postgres"))
	if err != nil {
		return fmt.Errorf("connect to demo cluster: %w", err)
	}
	_, err = admin.Exec(ctx, "CREATE DATABASE cuebot")
	admin.Close(ctx)
	if err != nil {
		return fmt.Errorf("create demo database: %w", err)
	}
	conn, err := pgx.Connect(ctx, cl.DSN("cuebot"))
	if err != nil {
		return fmt.Errorf("connect to demo database: %w", err)
	}
	err = cuebotdb.Create(ctx, conn)
	conn.Close(ctx)
	if err != nil {
		return err
	}
	return migrations.Up(ctx, cl.DSN("cuebot"))
}

// demoRQDs are the simulated render hosts. A frame "renders" for 1 to 4 s,
// then its RQD reports the completion to Cuebot, which the demo stands in
// for: the frame is stopped and its proc released, Cuebot-style.
type demoRQDs struct {
	servers   []*fakerqd.Server
	completed atomic.Int64
	launched  func() int
	cancel    context.CancelFunc
}

func startDemoRQDs(ctx context.Context, hosts []seed.Host, sim *cuebotsim.Sim, errw io.Writer) (*demoRQDs, error) {
	cctx, cancel := context.WithCancel(ctx)
	d := &demoRQDs{cancel: cancel}
	for i, h := range hosts {
		// A Cuebot receives completions concurrently; so does the demo.
		srv, err := fakerqd.Start(fmt.Sprintf("%s:%d", h.Name, demoPort), fakerqd.Options{
			Cores:         h.Cores,
			CompleteAfter: time.Second + time.Duration(i%7)*500*time.Millisecond,
			OnComplete: func(_ string, rf *rqd.RunFrame) {
				if err := sim.Succeed(cctx, rf.GetFrameId()); err != nil && cctx.Err() == nil &&
					!errors.Is(err, cuebotsim.ErrStale) {
					fmt.Fprintf(errw, "demo: completing frame %s: %v\n", rf.GetFrameName(), err)
				}
				d.completed.Add(1)
			},
		})
		if err != nil {
			d.close()
			return nil, fmt.Errorf("start simulated RQD for %s (the demo gives every host its own address in 127.0.0.0/8): %w",
				h.Name, err)
		}
		d.servers = append(d.servers, srv)
	}
	d.launched = func() int {
		n := 0
		for _, s := range d.servers {
			n += len(s.Launches())
		}
		return n
	}
	return d, nil
}

func (d *demoRQDs) close() {
	d.cancel()
	for _, s := range d.servers {
		s.Close()
	}
}

// followDemo prints progress once a second until every frame of the managed
// show has succeeded.
func followDemo(ctx context.Context, out io.Writer, pool *pgxpool.Pool, total int, served <-chan error, rqds *demoRQDs) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	deadline := time.After(10 * time.Minute)
	began := time.Now()
	for {
		var waiting, running, succeeded int
		err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE f.str_state = 'WAITING'),
				count(*) FILTER (WHERE f.str_state = 'RUNNING'), count(*) FILTER (WHERE f.str_state = 'SUCCEEDED')
			FROM frame f JOIN job j USING (pk_job) JOIN show s USING (pk_show) WHERE s.b_scheduler_managed`).
			Scan(&waiting, &running, &succeeded)
		if err != nil {
			return fmt.Errorf("demo progress: %w", err)
		}
		fmt.Fprintf(out, "demo: %5.1fs  waiting %4d  running %4d  succeeded %4d  (launched on RQD %d)\n",
			time.Since(began).Seconds(), waiting, running, succeeded, rqds.launched())
		if succeeded == total {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-served:
			return fmt.Errorf("cuesched instance stopped early: %v", err)
		case <-deadline:
			return errors.New("demo: not every frame succeeded within 10 minutes")
		case <-tick.C:
		}
	}
}

// reportDemo prints what the run shows: every frame ran once, Cuebot's own
// show was left alone, no proc is left, and the invariant audit.
func reportDemo(ctx context.Context, out io.Writer, pool *pgxpool.Pool, start time.Time, vs []audit.Violation) error {
	var procsLeft, unmanagedBooked, ranTwice int
	if err := pool.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM proc),
			(SELECT count(*) FROM frame f JOIN job j USING (pk_job) JOIN show s USING (pk_show)
			  WHERE NOT s.b_scheduler_managed AND f.str_state <> 'WAITING'),
			(SELECT count(*) FROM (SELECT pk_frame FROM frame_history GROUP BY pk_frame HAVING count(*) > 1) x)`).
		Scan(&procsLeft, &unmanagedBooked, &ranTwice); err != nil {
		return fmt.Errorf("demo report: %w", err)
	}
	fmt.Fprintf(out, "demo: frames that ran more than once: %d; frames of Cuebot's own show touched: %d; procs left: %d\n",
		ranTwice, unmanagedBooked, procsLeft)
	fmt.Fprintf(out, "demo: %s\n", audit.Summary(vs))
	fmt.Fprintf(out, "demo: done in %s\n", time.Since(start).Round(time.Millisecond))
	if len(vs) > 0 || unmanagedBooked > 0 || procsLeft > 0 || ranTwice > 0 {
		return fmt.Errorf("demo found problems: %s; frames run twice %d; unmanaged frames booked %d; procs left %d",
			audit.Summary(vs), ranTwice, unmanagedBooked, procsLeft)
	}
	return nil
}
