// Package ownership decides which live instance owns which cluster, through
// the database alone, and proves that ownership in every booking.
//
// Each instance registers a row in cuesched.instance and holds the session
// advisory lock (cluster.LivenessLock, its id) on a coordination connection
// for as long as it lives. One instance leads: it holds (cluster.OwnershipLock,
// 0); every other one keeps a backend blocked on that key, so a new leader
// takes over the moment the old one's session ends. The leader keeps one
// backend blocked on each peer's liveness key, so it learns of a dead peer at
// once, and writes the assignment to cuesched.cluster: clusters of dead
// instances and new clusters go straight to the least loaded live instance
// (owner set, epoch + 1); a move away from a live instance is asked for in
// cuesched.handover and done by the giver, which stops booking the cluster
// first, so a cluster is never without an owner during a move. Every change
// is announced on the channel Channel; instances reread the tables on each
// notification and after every reconnect.
//
// A hung but connected instance stops renewing its lease. The statement that
// renews every other instance's lease also ends the sessions of those whose
// lease ran out (pg_terminate_backend), which releases their locks, so the
// dead-peer path takes over. A lost coordination connection means this
// instance has lost every cluster at once: it stops booking and registers
// again as a new instance.
//
// Fencing: a booking transaction reads its cluster's row FOR SHARE (Fence,
// Queue) and books only while this instance owns it at the epoch it
// acquired. Every change of owner updates that row, so it waits for the
// bookings in flight, and bumps the epoch: a woken zombie cannot commit for
// a cluster it lost.
//
// The leader's decision has no I/O (decide.go: tidy, then decide, with
// Balance); leader.go reads the tables, calls it and writes what it returns.
//
// Idle, an instance runs one small statement per Lease/3 (the renewal); its
// other connections wait in the server without running statements.
package ownership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cuesched/cuesched/cdc"
	"github.com/cuesched/cuesched/cluster"
)

// ErrNotOwner means this instance does not own the cluster (at the epoch it
// holds): a booking must not proceed.
var ErrNotOwner = errors.New("this instance does not own the cluster")

// Options configure a Coordinator. Zero fields take defaults.
type Options struct {
	// Name is the instance's name in cuesched.instance and the logs
	// (default host-pid).
	Name string
	// Lease is how long an instance may go without renewing before a peer
	// ends its sessions (default 6 s); it renews every Lease/3.
	Lease time.Duration
	// Static restricts the clusters this instance may own.
	Static Static
	// Weights gives the pending work of every known cluster, from memory
	// (it must not read the database, and must be safe to call from any
	// goroutine). Missing clusters weigh 0; nil: all clusters weigh the same.
	Weights func() map[cluster.Key]int64
	// Threshold: a rebalance moves clusters until the heaviest instance's
	// work is at most Threshold x the mean (default 1.25).
	Threshold float64
	// DriftTrigger and DriftEvery: the leader checks the weights every
	// DriftEvery (in memory) and rebalances when the heaviest instance's
	// work exceeds DriftTrigger x the mean (defaults 1.5 and 10 s).
	DriftTrigger float64
	DriftEvery   time.Duration
	// DriftLeast: nor does it rebalance unless the heaviest instance's work
	// is at least DriftLeast queued layers above the mean (default 16), so a
	// trickle of small jobs does not move clusters back and forth.
	DriftLeast int64
	// DriftSoon: after WeightsChanged the leader checks the weights within
	// DriftSoon, rather than at the next DriftEvery (default 200 ms).
	DriftSoon time.Duration
	// Fenced, when set, is wrapped by the errors Queue's check returns
	// (dispatch.ErrFenced), so the Coordinator is a dispatch.Fence as it is.
	Fenced     error
	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: metrics not registered
}

// Claim is a cluster this instance owns.
type Claim struct {
	ID    int32 // cuesched.cluster.id: the booking lock's second int and Fence's argument
	Key   cluster.Key
	Epoch int64 // the epoch it was acquired at; a claim with another epoch is a new claim
}

// View is this instance's ownership at one moment.
type View struct {
	Instance  int32 // registration id; 0 while not registered (it then owns nothing)
	Leader    bool
	Claims    map[cluster.Key]Claim
	Clusters  int // clusters in the deployment
	Instances int // live instances
}

// Coordinator is one instance's part in the ownership of clusters.
type Coordinator struct {
	pool    *pgxpool.Pool
	dsn     string
	connCfg *pgx.ConnConfig
	opts    Options
	app     string
	host    string
	log     *slog.Logger
	m       *Metrics

	mu         sync.Mutex
	view       View
	byID       map[int32]Claim
	giving     []int32 // clusters being handed over: out of the view, not yet given
	restr      restriction
	info       map[cluster.Key]clusterInfo
	buckets    int
	changed    chan struct{}
	desired    []cluster.Key
	desiredSet bool
	prevID     int32 // the last registration, removed when registering again

	hintActor   chan struct{} // tables changed: reread them
	hintLeader  chan struct{}
	weighed     chan struct{} // WeightsChanged: the leader checks the drift soon
	clustersSet chan struct{}

	// hold, when set (tests), stops every goroutine of the instance that
	// would renew, reread or decide: a hung instance.
	hold atomic.Pointer[chan struct{}]
}

// AppName is the application_name an instance's sessions use: give it to
// the pool passed to New (RuntimeParams["application_name"]).
func AppName(instance string) string {
	s := "cuesched/" + instance
	if len(s) > 63 { // PostgreSQL keeps at most 63 bytes
		s = s[:63]
	}
	return s
}

// New returns a coordinator. pool is the instance's pool for bookings: its
// application_name must be set (AppName) and be this instance's alone,
// because a peer ends a hung instance's sessions by it. dsn is the same
// database; the coordinator opens its own connections with it.
func New(pool *pgxpool.Pool, dsn string, opts Options) (*Coordinator, error) {
	app := pool.Config().ConnConfig.RuntimeParams["application_name"]
	if app == "" {
		return nil, &ConfigError{Field: "db", Msg: "the pool has no application_name: set it to ownership.AppName(instance)"}
	}
	if len(app) > 63 {
		return nil, &ConfigError{Field: "instance", Msg: fmt.Sprintf("application_name %q is longer than 63 bytes", app)}
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, &ConfigError{Field: "db", Msg: fmt.Sprintf("parse database address: %v", err)}
	}
	cfg.RuntimeParams["application_name"] = app
	// A vanished server is noticed by TCP even on a connection that waits
	// in a lock for hours.
	cfg.DialFunc = (&net.Dialer{KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: 15 * time.Second, Interval: 5 * time.Second, Count: 3}}).DialContext

	host, _ := os.Hostname()
	if opts.Name == "" {
		opts.Name = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if opts.Lease <= 0 {
		opts.Lease = 6 * time.Second
	}
	if opts.Threshold < 1 {
		opts.Threshold = 1.25
	}
	if opts.DriftTrigger < opts.Threshold {
		opts.DriftTrigger = max(1.5, opts.Threshold)
	}
	if opts.DriftLeast <= 0 {
		opts.DriftLeast = 16
	}
	if opts.DriftEvery <= 0 {
		opts.DriftEvery = 10 * time.Second
	}
	if opts.DriftSoon <= 0 {
		opts.DriftSoon = 200 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Coordinator{
		pool: pool, dsn: dsn, connCfg: cfg, opts: opts, app: app, host: host,
		log:         opts.Logger.With("component", "ownership", "instance", opts.Name),
		m:           NewMetrics(opts.Registerer),
		view:        View{Claims: map[cluster.Key]Claim{}},
		byID:        map[int32]Claim{},
		info:        map[cluster.Key]clusterInfo{},
		buckets:     1,
		changed:     make(chan struct{}),
		hintActor:   make(chan struct{}, 1),
		hintLeader:  make(chan struct{}, 1),
		weighed:     make(chan struct{}, 1),
		clustersSet: make(chan struct{}, 1),
	}, nil
}

// Metrics are the coordinator's metrics.
func (c *Coordinator) Metrics() *Metrics { return c.m }

// View returns this instance's ownership now (a copy).
func (c *Coordinator) View() View {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.view
	v.Claims = maps.Clone(c.view.Claims)
	return v
}

// Changes returns a channel closed at the next change of the view (claims
// gained or lost, registration, leadership). Take it before reading View:
//
//	for {
//		ch := c.Changes()
//		work(c.View())
//		select { case <-ch: case <-ctx.Done(): return }
//	}
func (c *Coordinator) Changes() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// changedLocked wakes the waiters of Changes; c.mu is held.
func (c *Coordinator) changedLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// SetClusters gives the set of cluster keys of the deployment (computed from
// the replicated state by cluster.Keyer). The leader creates rows and owners
// for new keys and deletes the rows of keys gone; until the first call the
// leader leaves the set as it finds it. Call it again whenever the set or an
// allocation's tag may have changed.
func (c *Coordinator) SetClusters(keys []cluster.Key) {
	set := map[cluster.Key]bool{}
	var uniq []cluster.Key
	for _, k := range keys {
		if !set[k] {
			set[k] = true
			uniq = append(uniq, k)
		}
	}
	c.mu.Lock()
	c.desired, c.desiredSet = uniq, true
	c.mu.Unlock()
	signal(c.clustersSet)
}

// WeightsChanged tells the coordinator that the weights may have moved
// sharply (work came to clusters that had none): if this instance leads, it
// checks the drift within DriftSoon instead of at the next DriftEvery, so a
// burst of work is spread while it is booked, not ten seconds later. The
// check reads memory only; calling this often is cheap.
func (c *Coordinator) WeightsChanged() { signal(c.weighed) }

func (c *Coordinator) desiredClusters() ([]cluster.Key, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.desired, c.desiredSet
}

// MayOwn reports whether this instance's static restriction lets it own the
// cluster (false for an allocation cluster not yet seen in the tables while
// the instance is limited to listed tags).
func (c *Coordinator) MayOwn(key cluster.Key) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	info, ok := c.info[key]
	if !ok {
		info = clusterInfo{Key: key}
	}
	return c.restr.covers(info, c.buckets)
}

// AllowsShow reports whether this instance books the show (show.str_name)
// in the cluster: with alloc-tags, only the shows named with the cluster's
// allocation tag.
func (c *Coordinator) AllowsShow(key cluster.Key, show string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	info, ok := c.info[key]
	if !ok {
		info = clusterInfo{Key: key}
	}
	return c.restr.allowsShow(info, show)
}

func (c *Coordinator) weights() map[cluster.Key]int64 {
	if c.opts.Weights == nil {
		return nil
	}
	return c.opts.Weights()
}

// signal wakes the reader of a one-slot channel without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// hint says the tables may have changed.
func (c *Coordinator) hint() {
	signal(c.hintActor)
	signal(c.hintLeader)
}

// gate blocks while the instance is held (tests); false when ctx ended.
func (c *Coordinator) gate(ctx context.Context) bool {
	if p := c.hold.Load(); p != nil {
		select {
		case <-*p:
		case <-ctx.Done():
		}
	}
	return ctx.Err() == nil
}

// Run coordinates until ctx ends, then hands every owned cluster over at
// once, removes this instance's registration and returns nil. It returns a
// *ConfigError at once when this instance cannot start (a restriction that
// names no facility or would split a cluster with a live instance, a name
// already in use); every other failure is retried: a lost registration is
// followed by a new one.
func (c *Coordinator) Run(ctx context.Context) error {
	lctx, stopListener := context.WithCancel(ctx)
	l := cdc.NewListener(c.dsn, c.log)
	l.Handle(Channel, func(string) { c.hint() })
	l.OnConnect(func(context.Context) error { c.hint(); return nil })
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := l.Run(lctx); err != nil {
			c.log.Error("ownership listener stopped", "err", err)
		}
	}()
	defer func() { stopListener(); wg.Wait() }()

	const minDelay, maxDelay = 100 * time.Millisecond, 5 * time.Second
	delay := minDelay
	for {
		started := time.Now()
		err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var ce *ConfigError
		if errors.As(err, &ce) {
			return err
		}
		c.m.SessionsLost.Inc()
		if time.Since(started) > time.Minute {
			delay = minDelay
		}
		wait := delay/2 + rand.N(delay/2+1)
		c.log.Warn("ownership session lost: every cluster released; registering again", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		delay = min(delay*2, maxDelay)
	}
}

// session is one registration: from registering to losing it or to ctx's end.
func (c *Coordinator) session(ctx context.Context) error {
	coord, err := c.connect(ctx, false)
	if err != nil {
		return err
	}
	defer closeConn(coord)
	id, err := c.register(ctx, coord)
	if err != nil {
		return err
	}
	c.log.Info("registered", "id", id, "app", c.app)
	c.mu.Lock()
	c.prevID = id
	c.view.Instance = id
	c.changedLocked()
	c.mu.Unlock()

	// The renewer outlives the other goroutines at a graceful stop, so the
	// lease holds while the clusters are handed over.
	sctx, cancel := context.WithCancel(ctx)
	rctx, cancelRenew := context.WithCancel(context.WithoutCancel(ctx))
	fatal := make(chan error, 3) // one per goroutine that may fail
	give := make(chan struct{}, 1)
	var wg, rwg sync.WaitGroup
	rwg.Add(1)
	go func() { defer rwg.Done(); c.renew(rctx, coord, id, fatal) }()
	for _, f := range []func(){
		func() { c.elect(sctx, id, fatal) },
		func() { c.giveLoop(sctx, id, give) },
	} {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	end := func() {
		cancel()
		wg.Wait()
		cancelRenew()
		rwg.Wait()
	}

	signal(c.hintActor)
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			cancel()
			wg.Wait()
			c.stop(id)
			end()
			return nil
		case err := <-fatal:
			c.gate(ctx)
			end()
			c.lose()
			return err
		case <-c.hintActor:
		case <-retry.C:
		}
		if !c.gate(ctx) {
			continue
		}
		if err := c.resync(sctx, id, give); err != nil && sctx.Err() == nil {
			c.log.Warn("reread ownership", "err", err)
			retry.Reset(500 * time.Millisecond)
		}
	}
}

// connect opens a connection of this instance. A waiter blocks in a lock for
// long: the server checks that its client is still there, so the wait of a
// killed instance ends at once instead of queueing for the lock.
func (c *Coordinator) connect(ctx context.Context, waiter bool) (*pgx.Conn, error) {
	cfg := c.connCfg.Copy()
	if waiter {
		cfg.RuntimeParams["client_connection_check_interval"] = "1000"
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return conn, nil
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	conn.Close(ctx)
}

// waitLock waits in pg_advisory_lock(ns, key) until it is granted, the
// connection fails or ctx ends. At ctx's end the wait is cancelled in the
// server and the connection cut: a cancel request that arrives before the
// statement runs is lost, and then the cut is what ends the call (the
// server notices the missing client within client_connection_check_interval).
// The connection is unusable after ctx ended.
func waitLock(ctx context.Context, conn *pgx.Conn, ns, key int32) error {
	stop := context.AfterFunc(ctx, func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.PgConn().CancelRequest(cctx)
		conn.PgConn().Conn().Close()
	})
	defer stop()
	// Not ctx: its deadline handling would leave the server waiting.
	_, err := conn.Exec(context.Background(), "SELECT pg_advisory_lock($1, $2)", ns, key)
	return err
}

// register resolves the static restriction, refuses one that conflicts with
// a live instance, and inserts this instance's row while taking its liveness
// lock, in one transaction serialised with other registrations.
func (c *Coordinator) register(ctx context.Context, coord *pgx.Conn) (int32, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	restr, err := c.resolveStatic(ctx, coord)
	if err != nil {
		return 0, err
	}

	tx, err := coord.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("register: %w", err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, 1)", cluster.OwnershipLock); err != nil {
		return 0, fmt.Errorf("register: serialise: %w", err)
	}
	if err := c.checkPeers(ctx, tx, restr); err != nil {
		return 0, err
	}
	if c.prevID != 0 {
		if _, err := tx.Exec(ctx, "DELETE FROM cuesched.instance WHERE id = $1", c.prevID); err != nil {
			return 0, fmt.Errorf("register: remove previous registration %d: %w", c.prevID, err)
		}
	}
	var id int32
	err = tx.QueryRow(ctx, `INSERT INTO cuesched.instance (name, host_name, pid, app_name, static, lease_until)
		VALUES ($1, $2, $3, $4, $5, now() + $6 * interval '1 millisecond') RETURNING id`,
		c.opts.Name, c.host, os.Getpid(), c.app, restr, c.opts.Lease.Milliseconds()).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("register: %w", err)
	}
	// Taken before the row is visible, so nobody sees the row without it.
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_lock($1, $2)", cluster.LivenessLock, id); err != nil {
		return 0, fmt.Errorf("register: liveness lock: %w", err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, 'join')", Channel); err != nil {
		return 0, fmt.Errorf("register: notify: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("register: commit: %w", err)
	}
	c.mu.Lock()
	c.restr = restr
	c.mu.Unlock()
	return id, nil
}

// resolveStatic resolves the static restriction's facility name to its key.
func (c *Coordinator) resolveStatic(ctx context.Context, coord *pgx.Conn) (restriction, error) {
	facilityID := ""
	if name := c.opts.Static.Facility; name != "" {
		err := coord.QueryRow(ctx, `SELECT pk_facility FROM facility WHERE lower(str_name) = lower($1)
			ORDER BY pk_facility LIMIT 1`, name).Scan(&facilityID)
		if errors.Is(err, pgx.ErrNoRows) {
			return restriction{}, &ConfigError{Field: "facility", Msg: fmt.Sprintf("no facility is named %q", name)}
		}
		if err != nil {
			return restriction{}, fmt.Errorf("resolve facility %q: %w", name, err)
		}
	}
	return c.opts.Static.resolve(facilityID), nil
}

// checkPeers refuses to register beside a live instance (other than this
// one's previous registration) that uses the same application_name or
// whose restriction would split a cluster with restr.
func (c *Coordinator) checkPeers(ctx context.Context, tx pgx.Tx, restr restriction) error {
	rows, err := tx.Query(ctx, `SELECT i.id, i.name, i.app_name, i.static FROM cuesched.instance i
		WHERE i.id <> $1 AND `+liveSQL+` ORDER BY i.id`, c.prevID)
	if err != nil {
		return fmt.Errorf("register: read live instances: %w", err)
	}
	peers, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (instanceRow, error) {
		var p instanceRow
		err := r.Scan(&p.ID, &p.Name, &p.AppName, &p.Static)
		return p, err
	})
	if err != nil {
		return fmt.Errorf("register: read live instances: %w", err)
	}
	for _, p := range peers {
		other := fmt.Sprintf("%q (id %d)", p.Name, p.ID)
		if p.AppName == c.app {
			return &ConfigError{Field: "instance", Msg: fmt.Sprintf(
				"live instance %s already uses application_name %q: give each instance its own name", other, c.app)}
		}
		if tag, mine, theirs := restr.splitWith(p.Static); tag != "" {
			return splitError(tag, mine, theirs, other)
		}
	}
	return nil
}

// renew renews the lease every Lease/3 on the coordination connection, which
// also ends the sessions of peers whose lease ran out (renewSQL).
func (c *Coordinator) renew(ctx context.Context, coord *pgx.Conn, id int32, fatal chan<- error) {
	t := time.NewTicker(c.opts.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !c.gate(ctx) {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, c.opts.Lease)
		var renewed, ended int64
		var late []int32
		err := coord.QueryRow(rctx, renewSQL, id, c.opts.Lease.Milliseconds(), c.app).Scan(&renewed, &late, &ended)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			fatal <- fmt.Errorf("renew lease: %w", err)
			return
		case renewed == 0:
			fatal <- errors.New("renew lease: this instance's registration is gone")
			return
		case ended > 0:
			c.log.Warn("ended the sessions of instances whose lease ran out", "instances", late, "sessions", ended)
		}
	}
}

// elect waits to lead, then leads until the session ends.
func (c *Coordinator) elect(ctx context.Context, id int32, fatal chan<- error) {
	conn, err := c.connect(ctx, true)
	if err != nil {
		if ctx.Err() == nil {
			fatal <- fmt.Errorf("leader connection: %w", err)
		}
		return
	}
	defer closeConn(conn)
	if err := waitLock(ctx, conn, cluster.OwnershipLock, 0); err != nil || ctx.Err() != nil {
		if ctx.Err() == nil {
			fatal <- fmt.Errorf("wait to lead: %w", err)
		}
		return
	}
	c.setLeader(true)
	defer c.setLeader(false)
	c.log.Info("leading", "id", id)
	if err := c.lead(ctx, conn, id); ctx.Err() == nil {
		fatal <- fmt.Errorf("lead: %w", err)
	}
}

func (c *Coordinator) setLeader(on bool) {
	c.mu.Lock()
	c.view.Leader = on
	c.changedLocked()
	c.mu.Unlock()
	if on {
		c.m.Leader.Set(1)
	} else {
		c.m.Leader.Set(0)
	}
}

// resync rereads the tables and updates the view: the clusters this instance
// owns, less those it is asked to hand over (the giver loop gives them).
func (c *Coordinator) resync(ctx context.Context, id int32, give chan struct{}) error {
	s, err := readSnapshot(ctx, c.pool)
	if err != nil {
		return err
	}
	claims, byID, giving := s.claims(id)
	info := make(map[cluster.Key]clusterInfo, len(s.Clusters))
	for _, row := range s.Clusters {
		info[row.key()] = row.info()
	}
	live := len(s.live())

	c.mu.Lock()
	if c.view.Instance != id { // the session ended meanwhile
		c.mu.Unlock()
		return nil
	}
	same := maps.Equal(claims, c.view.Claims) && c.view.Clusters == len(s.Clusters) && c.view.Instances == live
	c.view.Claims, c.byID, c.giving = claims, byID, giving
	c.view.Clusters, c.view.Instances = len(s.Clusters), live
	c.info, c.buckets = info, s.Buckets
	if !same {
		c.changedLocked()
	}
	c.mu.Unlock()

	c.m.Clusters.Set(float64(len(s.Clusters)))
	c.m.Owned.Set(float64(len(claims)))
	c.m.Instances.Set(float64(live))
	if len(giving) > 0 {
		signal(give)
	}
	return nil
}

// lose forgets every claim: the registration is gone.
func (c *Coordinator) lose() {
	c.mu.Lock()
	c.view.Instance = 0
	c.view.Claims, c.byID, c.giving = map[cluster.Key]Claim{}, map[int32]Claim{}, nil
	c.changedLocked()
	c.mu.Unlock()
	c.m.Owned.Set(0)
}

// giveLoop hands over the clusters the leader asked this instance to give:
// they are out of the view already, so the loop stops booking them; the
// update waits for the bookings in flight (they hold the row FOR SHARE).
func (c *Coordinator) giveLoop(ctx context.Context, id int32, give chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-give:
		}
		if !c.gate(ctx) {
			return
		}
		c.mu.Lock()
		ids := slices.Clone(c.giving)
		c.mu.Unlock()
		if len(ids) == 0 {
			continue
		}
		n, err := c.give(ctx, id, ids)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			c.log.Warn("hand clusters over", "clusters", ids, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
			signal(give)
			continue
		}
		c.m.Handovers.Add(float64(n))
		c.log.Info("handed clusters over", "clusters", ids, "moved", n)
	}
}

func (c *Coordinator) give(ctx context.Context, id int32, ids []int32) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var n int64
	err := pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `WITH h AS (
				DELETE FROM cuesched.handover WHERE giver = $1 AND cluster = ANY($2) RETURNING cluster, receiver)
			UPDATE cuesched.cluster c SET owner = h.receiver, epoch = c.epoch + 1
			FROM h WHERE c.id = h.cluster AND c.owner = $1`, id, ids)
		if err != nil {
			return err
		}
		n = tag.RowsAffected()
		_, err = tx.Exec(ctx, "SELECT pg_notify($1, 'handover')", Channel)
		return err
	})
	return n, err
}

// stop hands every cluster this instance owns to the least loaded live peer
// that may own it (or to nobody), and removes the registration, in one
// transaction; closing the coordination connection then releases the locks.
func (c *Coordinator) stop(id int32) {
	c.lose()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := c.handOverAll(ctx, id)
	if err != nil {
		c.log.Error("hand clusters over at stop: the leader will give them out when this session ends", "err", err)
		return
	}
	c.m.Handovers.Add(float64(n))
	c.log.Info("stopped: clusters handed over", "clusters", n)
}

func (c *Coordinator) handOverAll(ctx context.Context, id int32) (int64, error) {
	s, err := readSnapshot(ctx, c.pool)
	if err != nil {
		return 0, err
	}
	var ids, owners []int32
	for _, g := range leaving(s, id, c.weights(), c.opts.Threshold) {
		ids, owners = append(ids, g.Cluster), append(owners, g.To)
	}
	var n int64
	err = pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE cuesched.cluster c SET owner = NULLIF(u.owner, 0), epoch = c.epoch + 1
			FROM unnest($2::int[], $3::int[]) AS u(id, owner) WHERE c.id = u.id AND c.owner = $1`, id, ids, owners)
		if err != nil {
			return err
		}
		n = tag.RowsAffected()
		if _, err := tx.Exec(ctx, "DELETE FROM cuesched.instance WHERE id = $1", id); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "SELECT pg_notify($1, 'leave')", Channel)
		return err
	})
	return n, err
}
