package ownership

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cuesched/cuesched/cluster"
)

// leader is the state of this instance while it leads: one watcher per live
// peer and the tables as last read and written.
type leader struct {
	c        *Coordinator
	ctx      context.Context // the leadership's: watchers live as long
	conn     *pgx.Conn
	id       int32
	watchers map[int32]context.CancelFunc
	wg       sync.WaitGroup
	dead     chan int32 // a peer's session ended
	failed   chan int32 // a watcher lost its connection: start it again
	snap     *snapshot
	mem      memory
}

// lead decides the assignment until ctx ends or the leader connection fails.
// It acts on events only: a change of the tables (notification), a peer's
// end, a new cluster set, and the drift check, which looks at memory only.
func (c *Coordinator) lead(ctx context.Context, conn *pgx.Conn, id int32) error {
	// A write that waits behind a stuck booking gives up and is retried,
	// rather than stalling every other decision.
	if _, err := conn.Exec(ctx, "SET lock_timeout = '5s'"); err != nil {
		return fmt.Errorf("set lock_timeout: %w", err)
	}
	l := &leader{c: c, ctx: ctx, conn: conn, id: id, watchers: map[int32]context.CancelFunc{},
		dead: make(chan int32), failed: make(chan int32)}
	defer l.stopWatchers()
	drift := time.NewTicker(c.opts.DriftEvery)
	defer drift.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	soon := time.NewTimer(time.Hour)
	soon.Stop()
	defer soon.Stop()
	soonArmed := false

	pending, force := true, true
	for {
		if pending {
			if !c.gate(ctx) {
				return ctx.Err()
			}
			err := l.reconcile(ctx, force)
			switch {
			case err == nil:
				force = false
			case ctx.Err() != nil:
				return ctx.Err()
			case conn.IsClosed():
				return err
			default:
				c.log.Warn("decide ownership; retrying", "err", err)
				retry.Reset(500 * time.Millisecond)
			}
			pending = false
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.hintLeader:
			pending = true
		case <-c.clustersSet:
			pending = true
		case p := <-l.dead:
			delete(l.watchers, p)
			c.log.Info("instance ended", "peer", p)
			pending = true
		case p := <-l.failed:
			if cancel := l.watchers[p]; cancel != nil {
				cancel()
				delete(l.watchers, p)
			}
			retry.Reset(time.Second)
		case <-retry.C:
			pending = true
		case <-c.weighed:
			// One check for a burst of signals.
			if !soonArmed {
				soon.Reset(c.opts.DriftSoon)
				soonArmed = true
			}
		case <-soon.C:
			soonArmed = false
			if l.drifted() {
				pending, force = true, true
			}
		case <-drift.C:
			if l.drifted() {
				pending, force = true, true
			}
		}
	}
}

// watch keeps a backend blocked on the peer's liveness lock: it is granted
// the moment the peer's session ends.
func (l *leader) watch(peer int32) {
	wctx, cancel := context.WithCancel(l.ctx)
	l.watchers[peer] = cancel
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		report := func(ch chan int32) {
			select {
			case ch <- peer:
			case <-wctx.Done():
			}
		}
		conn, err := l.c.connect(wctx, true)
		if err != nil {
			l.c.log.Warn("watch instance", "peer", peer, "err", err)
			report(l.failed)
			return
		}
		defer closeConn(conn)
		err = waitLock(wctx, conn, cluster.LivenessLock, peer)
		if err == nil {
			// Let the peer's lock go before saying it is dead, or the
			// leader's next read would see it held and the peer alive.
			_, err = conn.Exec(wctx, "SELECT pg_advisory_unlock($1, $2)", cluster.LivenessLock, peer)
		}
		switch {
		case wctx.Err() != nil:
		case err != nil:
			l.c.log.Warn("watch instance", "peer", peer, "err", err)
			report(l.failed)
		default:
			report(l.dead)
		}
	}()
}

func (l *leader) stopWatchers() {
	for _, cancel := range l.watchers {
		cancel()
	}
	l.wg.Wait()
}

// drifted reports, from memory alone, whether the weights have drifted so
// far apart that a rebalance is due (snapshot.drifted; hysteresis: it
// triggers above DriftTrigger and rebalances down to Threshold).
func (l *leader) drifted() bool {
	w := l.c.weights()
	return l.snap != nil && l.snap.drifted(w, l.c.opts.DriftTrigger, l.c.opts.DriftLeast)
}

// reconcile reads the tables and writes what the assignment needs, in one
// transaction: dead instances removed (their clusters become unowned), the
// cluster set brought to the one SetClusters gave, unowned clusters given
// out, and, when the live instances changed or force is set, moves asked of
// the owners. What to write is decided by tidy and decide, without I/O. It
// notifies when it wrote anything.
func (l *leader) reconcile(ctx context.Context, force bool) error {
	c := l.c
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := readSnapshot(ctx, l.conn)
	if err != nil {
		return err
	}
	l.watchLive(s.live())
	keys, given := c.desiredClusters()
	s, t := tidy(s, keys, given)

	tx, err := l.conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	tidied, err := l.writeTidying(ctx, tx, s, t)
	if err != nil {
		return err
	}
	d := decide(s, c.weights(), c.opts.Threshold, force, l.mem)
	wrote := tidied || !d.empty()
	if err := writeDecision(ctx, tx, d, wrote); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit assignment: %w", err)
	}

	// Keep what was written, for the drift check.
	l.snap, l.mem = s.after(d), l.mem.after(d)
	if len(d.Moves) > 0 {
		c.m.Rebalances.Inc()
	}
	c.m.Takeovers.Add(float64(t.Orphaned))
	if wrote {
		c.log.Info("assignment written", "live", d.Live, "assigned", len(d.Grants), "moves", len(d.Moves),
			"cancelled", len(d.Cancel))
	}
	return nil
}

// watchLive keeps one watcher on each live peer, and none on others.
func (l *leader) watchLive(live map[int32]instanceRow) {
	for p := range live {
		if _, ok := l.watchers[p]; !ok && p != l.id {
			l.watch(p)
		}
	}
	for p, stop := range l.watchers {
		if _, ok := live[p]; !ok {
			stop()
			delete(l.watchers, p)
		}
	}
}

// writeTidying writes t in tx and adds to s the cluster rows it inserted
// and the allocation tags it refreshed. It reports whether it changed
// anything.
func (l *leader) writeTidying(ctx context.Context, tx pgx.Tx, s *snapshot, t tidying) (bool, error) {
	if len(t.Dead) > 0 {
		// ON DELETE SET NULL clears their clusters' owner; ON DELETE
		// CASCADE drops their handovers.
		if _, err := tx.Exec(ctx, "DELETE FROM cuesched.instance WHERE id = ANY($1)", t.Dead); err != nil {
			return false, fmt.Errorf("remove dead instances %v: %w", t.Dead, err)
		}
		l.c.log.Info("removed dead instances", "instances", t.Dead, "clusters", t.Orphaned)
	}
	if !t.Sync {
		return len(t.Dead) > 0, nil
	}
	for _, k := range t.Skipped {
		l.c.log.Warn("cluster key skipped: not a valid key", "key", k)
	}
	if len(t.Gone) > 0 {
		if _, err := tx.Exec(ctx, "DELETE FROM cuesched.cluster WHERE id = ANY($1)", t.Gone); err != nil {
			return false, fmt.Errorf("delete clusters gone: %w", err)
		}
	}
	added, err := addClusters(ctx, tx, t.Add)
	if err != nil {
		return false, err
	}
	s.Clusters = append(s.Clusters, added...)
	retagged, err := refreshAllocTags(ctx, tx)
	if err != nil {
		return false, err
	}
	changed := len(t.Dead) > 0 || len(t.Gone) > 0 || len(added) > 0
	for i, r := range s.Clusters {
		if tag, ok := retagged[r.ID]; ok {
			s.Clusters[i].AllocTag = tag
			changed = true
		}
	}
	return changed, nil
}

// addClusters inserts unowned rows for keys and returns them.
func addClusters(ctx context.Context, tx pgx.Tx, keys []cluster.Key) ([]clusterRow, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	var names, facilities, allocs []string
	var kinds, buckets []int32
	for _, k := range keys {
		names, facilities, allocs = append(names, k.String()), append(facilities, k.Facility), append(allocs, k.Alloc)
		kinds, buckets = append(kinds, int32(k.Kind)), append(buckets, int32(k.Bucket))
	}
	rows, err := tx.Query(ctx, `INSERT INTO cuesched.cluster (key, kind, facility, alloc, alloc_tag, bucket)
		SELECT u.key, u.kind, u.facility, NULLIF(u.alloc, ''), a.str_tag, CASE WHEN u.kind = 2 THEN u.bucket END
		FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::int[]) AS u(key, kind, facility, alloc, bucket)
		LEFT JOIN alloc a ON u.kind = 1 AND a.pk_alloc = u.alloc
		ON CONFLICT (key) DO NOTHING
		RETURNING id, kind, facility, COALESCE(alloc, ''), COALESCE(alloc_tag, ''), COALESCE(bucket, 0), epoch`,
		names, kinds, facilities, allocs, buckets)
	if err != nil {
		return nil, fmt.Errorf("add clusters: %w", err)
	}
	added, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (clusterRow, error) {
		var c clusterRow
		err := r.Scan(&c.ID, &c.Kind, &c.Facility, &c.Alloc, &c.AllocTag, &c.Bucket, &c.Epoch)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("add clusters: %w", err)
	}
	return added, nil
}

// refreshAllocTags copies each allocation's tag to its cluster's row and
// returns the tags that changed, by cluster id.
func refreshAllocTags(ctx context.Context, tx pgx.Tx) (map[int32]string, error) {
	rows, err := tx.Query(ctx, `UPDATE cuesched.cluster c SET alloc_tag = a.str_tag FROM alloc a
		WHERE c.kind = 1 AND a.pk_alloc = c.alloc AND c.alloc_tag IS DISTINCT FROM a.str_tag
		RETURNING c.id, COALESCE(c.alloc_tag, '')`)
	if err != nil {
		return nil, fmt.Errorf("refresh allocation tags: %w", err)
	}
	retagged := map[int32]string{}
	var id int32
	var tag string
	_, err = pgx.ForEachRow(rows, []any{&id, &tag}, func() error { retagged[id] = tag; return nil })
	if err != nil {
		return nil, fmt.Errorf("refresh allocation tags: %w", err)
	}
	return retagged, nil
}

// writeDecision writes d in tx, and the notification when wrote is set.
func writeDecision(ctx context.Context, tx pgx.Tx, d decision, wrote bool) error {
	if len(d.Grants) > 0 {
		var ids, to []int32
		for _, g := range d.Grants {
			ids, to = append(ids, g.Cluster), append(to, g.To)
		}
		if _, err := tx.Exec(ctx, `UPDATE cuesched.cluster c SET owner = u.owner, epoch = c.epoch + 1
			FROM unnest($1::int[], $2::int[]) AS u(id, owner) WHERE c.id = u.id AND c.owner IS NULL`,
			ids, to); err != nil {
			return fmt.Errorf("assign clusters: %w", err)
		}
	}
	if len(d.Cancel) > 0 {
		if _, err := tx.Exec(ctx, "DELETE FROM cuesched.handover WHERE cluster = ANY($1)", d.Cancel); err != nil {
			return fmt.Errorf("drop handovers: %w", err)
		}
	}
	if len(d.Moves) > 0 {
		var ids, from, to []int32
		for _, m := range d.Moves {
			ids, from, to = append(ids, m.Cluster), append(from, m.Giver), append(to, m.Receiver)
		}
		// Only while the giver still owns the cluster: a handover may have
		// completed since the read.
		if _, err := tx.Exec(ctx, `INSERT INTO cuesched.handover (cluster, giver, receiver)
			SELECT u.c, u.g, NULLIF(u.r, 0) FROM unnest($1::int[], $2::int[], $3::int[]) AS u(c, g, r)
			JOIN cuesched.cluster c ON c.id = u.c AND c.owner = u.g
			ON CONFLICT (cluster) DO UPDATE SET giver = excluded.giver, receiver = excluded.receiver`,
			ids, from, to); err != nil {
			return fmt.Errorf("ask for handovers: %w", err)
		}
	}
	if wrote {
		if _, err := tx.Exec(ctx, "SELECT pg_notify($1, 'assign')", Channel); err != nil {
			return fmt.Errorf("notify: %w", err)
		}
	}
	return nil
}
