package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/internal/audit"
	"github.com/cuesched/cuesched/internal/rqd"
	"github.com/cuesched/cuesched/internal/testworld/cuebotdb"
	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/fakerqd"
	"github.com/cuesched/cuesched/internal/testworld/pgcluster"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/migrations"
)

// demoPort is the port every simulated RQD listens on, each on its own
// loopback address (the host's name), as real RQDs do on their hosts.
const demoPort = 8444

// The demo's shape: instances sharing the farm, one killed once this share
// of the backlog is booked, and the jobs of the time-to-book probe.
const (
	demoInstances = 3
	killShare     = 3 // the kill comes once a third of the backlog is booked
	probeJobs     = 40
)

// runDemo shows cuesched at work on a simulated farm, self-contained: a
// throwaway PostgreSQL cluster with a Cuebot-compatible database and
// cuesched's migrations, the peer stress farm (1,200 hosts, 300 jobs, 6,000
// frames), one simulated RQD per host on its own loopback address, and Cuebot
// stood in for by completing each frame when its RQD finishes it. Three
// cuesched instances (processes) split the farm; the show is handed to them
// at once, and while they book it one is killed with SIGKILL and the others
// take its clusters over. Once every frame has succeeded a probe measures
// time to book on the idle farm, the invariant audit runs and the summary
// says what was measured. The system's own PostgreSQL cluster is never
// touched.
func runDemo(ctx context.Context, out, errw io.Writer, opts options) error {
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
	pool, err := newPool(ctx, dsn, 4)
	if err != nil {
		return err
	}
	defer pool.Close()

	farm := seed.PeerStress(1)
	// A job of Cuebot's own show rides along: cuesched must never book it.
	farm.Jobs = append(farm.Jobs, seed.Job{Name: "cuebot-own-job", Show: "testing",
		Layers: []seed.Layer{{Name: "render", Frames: 10, Cores: 100, Mem: seed.GB}}})
	seeded, err := seed.Load(ctx, pool, farm, 1)
	if err != nil {
		return err
	}
	managed := farm.FrameCount() - 10
	show := seeded.Shows["stress"]
	// The work is held back until the instances have split the farm, so the
	// drain is timed from one moment: the show's hand-over.
	if _, err := pool.Exec(ctx, `UPDATE show SET b_scheduler_managed = false WHERE pk_show = $1`, show); err != nil {
		return fmt.Errorf("hold the demo's show back: %w", err)
	}
	fmt.Fprintf(out, "demo: seeded the peer stress farm: %d hosts in 3 allocations, %d jobs, %d frames of the show to hand over\n",
		len(farm.Hosts), len(farm.Jobs)-1, managed)

	// Cuebot's stand-in completes frames on a pool of its own: its
	// completions come by the hundred at once.
	simPool, err := newPool(ctx, dsn, 8)
	if err != nil {
		return err
	}
	defer simPool.Close()
	rqds, err := startDemoRQDs(ctx, farm.Hosts, &cuebotsim.Sim{Pool: simPool}, errw)
	if err != nil {
		return err
	}
	defer rqds.close()
	fmt.Fprintf(out, "demo: %d simulated RQDs listening on their hosts' loopback addresses, port %d\n", len(farm.Hosts), demoPort)

	viewPool, err := newPool(ctx, dsn, 1)
	if err != nil {
		return err
	}
	defer viewPool.Close()
	fl := newFleet()
	defer fl.stop(30 * time.Second)
	var names []string
	for i := range demoInstances {
		name := fmt.Sprintf("demo-%d", i+1)
		if err := fl.start(name, dsn); err != nil {
			return err
		}
		names = append(names, name)
	}
	c, err := waitSplit(ctx, viewPool, show, names, fl)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "demo: %d cuesched instances (processes) split the farm's clusters: %s\n",
		len(names), (&view{instances: names}).clusters(Sample{Clusters: c.clusters}))

	if _, err := pool.Exec(ctx, `UPDATE show SET b_scheduler_managed = true WHERE pk_show = $1`, show); err != nil {
		return fmt.Errorf("hand the show over: %w", err)
	}
	handedOver := time.Now()
	fmt.Fprintf(out, "demo: the show is handed over: %s frames to book, launch over gRPC and follow to completion; one instance is killed (SIGKILL) once a third are booked\n",
		thousands(managed))
	run := &Run{Date: start, Hosts: len(farm.Hosts), Frames: managed, Instances: names}
	f := &follower{ctx: ctx, v: newView(out, names), fl: fl, pool: viewPool, show: show, run: run,
		began: handedOver, killAt: managed / killShare}
	if err := f.until(func(s Sample) bool { return f.drained && s.Done >= managed }, 10*time.Minute); err != nil {
		return err
	}

	// The time-to-book probe runs while the view goes on.
	probed := make(chan error, 1)
	probeCtx, stopProbe := context.WithCancel(ctx)
	defer stopProbe()
	go func() { probed <- probe(probeCtx, seeded, fl, run) }()
	f.event(fmt.Sprintf("the farm is idle: probing time to book with %d single-frame jobs, one at a time", probeJobs))
	var probeErr error
	probing := true
	err = f.until(func(s Sample) bool {
		select {
		case probeErr = <-probed:
			probing = false
		default:
		}
		return !probing && s.Done >= managed+len(run.Probe) && s.Running == 0
	}, 5*time.Minute)
	f.v.done()
	if probing {
		// The view failed first: the probe stops with it.
		stopProbe()
		<-probed
	}
	if err != nil {
		return err
	}
	if probeErr != nil {
		return probeErr
	}
	run.BookedBy = fl.bookings().perInstance
	run.Commits = perSecond(handedOver, fl.commitTimes())

	// The instances own the counters of the managed show: the last
	// releases are accounted a moment after they commit.
	vs, err := settleAudit(ctx, pool, 30*time.Second)
	if err != nil {
		return err
	}
	if err := fl.stop(30 * time.Second); err != nil {
		return err
	}
	for _, line := range run.Summary() {
		fmt.Fprintln(out, "demo: "+line)
	}
	if opts.report != "" {
		if err := writeReportFile(opts.report, run); err != nil {
			return err
		}
		fmt.Fprintf(out, "demo: report written to %s\n", opts.report)
	}
	return reportDemo(ctx, out, pool, start, vs)
}

// newPool opens a pool of at most conns connections on the demo's cluster.
func newPool(ctx context.Context, dsn string, conns int32) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("demo database address: %w", err)
	}
	pc.MaxConns = conns
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect to demo database: %w", err)
	}
	return pool, nil
}

// waitSplit waits until every cluster has an owner and every instance
// owns some.
func waitSplit(ctx context.Context, pool *pgxpool.Pool, show string, names []string, fl *fleet) (counts, error) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		c, err := readCounts(ctx, pool, show)
		if err != nil {
			return c, err
		}
		split := c.clusters[""] == 0 && len(c.clusters) > 0
		for _, name := range names {
			split = split && c.clusters[name] > 0
		}
		if split {
			return c, nil
		}
		if err := fl.failed(); err != nil {
			return c, err
		}
		if time.Now().After(deadline) {
			return c, fmt.Errorf("the instances did not split the clusters within 2 minutes (owners: %v)", c.clusters)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return c, err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// probe submits single-frame jobs one at a time onto the idle farm and
// records each one's time to book: from its launch's COMMIT returning here
// to its booking's COMMIT returning in an instance (DESIGN.md), both on
// this machine's clock.
func probe(ctx context.Context, seeded *seed.Seeded, fl *fleet, run *Run) error {
	tags := []string{"stress_a", "stress_b", "stress_c", "pool1", "pool2", "pool3", "pool4", "pool5", "pool6", "pool7", "pool8"}
	var lat []time.Duration
	for i := range probeJobs {
		keys, err := seeded.Launch(ctx, seed.Job{
			Name: fmt.Sprintf("probe-%02d", i), Show: "stress", Priority: 50, MaxCores: 1_000_000,
			Layers: []seed.Layer{{Name: "render", Frames: 1, Cores: 100, Mem: seed.GB, Tags: tags[i%len(tags)]}},
		})
		if err != nil {
			return fmt.Errorf("probe job %d: %w", i, err)
		}
		launched := time.Now()
		deadline := time.NewTimer(30 * time.Second)
		for {
			b := fl.bookings()
			if at, ok := fl.bookedAt(keys.ID); ok {
				lat = append(lat, at.Sub(launched))
				break
			}
			select {
			case <-b.changed:
				continue
			case <-ctx.Done():
				deadline.Stop()
				return ctx.Err()
			case <-deadline.C:
				return fmt.Errorf("probe job %d was not booked within 30 s", i)
			}
		}
		deadline.Stop()
		// The farm is idle again before the next job.
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	run.Probe = lat
	return nil
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
	servers []*fakerqd.Server
	cancel  context.CancelFunc
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
			},
		})
		if err != nil {
			d.close()
			return nil, fmt.Errorf("start simulated RQD for %s (the demo gives every host its own address in 127.0.0.0/8): %w",
				h.Name, err)
		}
		d.servers = append(d.servers, srv)
	}
	return d, nil
}

func (d *demoRQDs) close() {
	d.cancel()
	for _, s := range d.servers {
		s.Close()
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
