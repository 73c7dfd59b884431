package ownership

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cuesched/cuesched/cluster"
)

// leader is the state of this instance while it leads: one watcher per live
// peer and the tables as last read and written.
type leader struct {
	c         *Coordinator
	ctx       context.Context // the leadership's: watchers live as long
	conn      *pgx.Conn
	id        int32
	watchers  map[int32]context.CancelFunc
	wg        sync.WaitGroup
	dead      chan int32 // a peer's session ended
	failed    chan int32 // a watcher lost its connection: start it again
	snap      *snapshot
	balanced  []int32 // the live instances the last rebalance spread clusters over
	unsettled bool    // the last rebalance asked for moves
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
// far apart that a rebalance is due (hysteresis: it triggers above
// DriftTrigger and rebalances down to Threshold).
func (l *leader) drifted() bool {
	w := l.c.weights()
	if l.snap == nil || w == nil {
		return false
	}
	live := l.snap.live()
	if len(live) < 2 {
		return false
	}
	load := map[int32]int64{}
	var total int64
	for _, it := range l.snap.items(live, w) {
		if it.Owner != 0 && it.Weight > 0 {
			load[it.Owner] += it.Weight
			total += it.Weight
		}
	}
	var top int64
	for _, v := range load {
		top = max(top, v)
	}
	return total > 0 && float64(top) > l.c.opts.DriftTrigger*float64(total)/float64(len(live))
}

// reconcile reads the tables and writes what the assignment needs, in one
// transaction: dead instances removed (their clusters become unowned), the
// cluster set brought to the one SetClusters gave, unowned clusters given
// out, and, when the live instances changed or force is set, moves asked of
// the owners. It notifies when it wrote anything.
func (l *leader) reconcile(ctx context.Context, force bool) error {
	c := l.c
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := readSnapshot(ctx, l.conn)
	if err != nil {
		return err
	}
	live := s.live()
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

	tx, err := l.conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	wrote := false

	var dead []int32
	for _, i := range s.Instances {
		if !i.Live {
			dead = append(dead, i.ID)
		}
	}
	orphaned := 0
	if len(dead) > 0 {
		// ON DELETE SET NULL clears their clusters' owner; ON DELETE
		// CASCADE drops their handovers.
		if _, err := tx.Exec(ctx, "DELETE FROM cuesched.instance WHERE id = ANY($1)", dead); err != nil {
			return fmt.Errorf("remove dead instances %v: %w", dead, err)
		}
		wrote = true
		for i := range s.Clusters {
			if slices.Contains(dead, s.Clusters[i].Owner) {
				s.Clusters[i].Owner = 0
				orphaned++
			}
		}
		s.Handovers = slices.DeleteFunc(s.Handovers, func(h handoverRow) bool {
			return slices.Contains(dead, h.Giver) || slices.Contains(dead, h.Receiver)
		})
		s.Instances = slices.DeleteFunc(s.Instances, func(i instanceRow) bool { return !i.Live })
		c.log.Info("removed dead instances", "instances", dead, "clusters", orphaned)
	}

	if keys, ok := c.desiredClusters(); ok {
		changed, err := l.syncClusters(ctx, tx, s, keys)
		if err != nil {
			return err
		}
		wrote = wrote || changed
	}

	// A request whose giver no longer owns its cluster lost a race with a
	// handover that completed meanwhile: what it meant to do may be undone,
	// so look at the whole balance again, as after the leader's own moves.
	stale := false
	for _, row := range s.Clusters {
		if h, ok := s.handover(row.ID); ok && h.Giver != row.Owner {
			stale = true
		}
	}
	ids := slices.Sorted(maps.Keys(live))
	rebalance := force || l.unsettled || stale || !slices.Equal(ids, l.balanced)
	final := Balance(s.items(live, c.weights()), ids, c.opts.Threshold, rebalance)

	var assignIDs, assignTo, askIDs, askFrom, askTo, dropAsks []int32
	for i, row := range s.Clusters {
		to := final[row.ID]
		h, asked := s.handover(row.ID)
		if row.Owner == 0 {
			if to != 0 {
				assignIDs, assignTo = append(assignIDs, row.ID), append(assignTo, to)
				s.Clusters[i].Owner, s.Clusters[i].Epoch = to, row.Epoch+1
			}
			if asked {
				dropAsks = append(dropAsks, row.ID)
			}
			continue
		}
		switch {
		case to == row.Owner:
			if asked {
				dropAsks = append(dropAsks, row.ID)
			}
		case asked && h.Giver == row.Owner && h.Receiver == to:
		default:
			askIDs, askFrom, askTo = append(askIDs, row.ID), append(askFrom, row.Owner), append(askTo, to)
		}
	}
	if len(assignIDs) > 0 {
		if _, err := tx.Exec(ctx, `UPDATE cuesched.cluster c SET owner = u.owner, epoch = c.epoch + 1
			FROM unnest($1::int[], $2::int[]) AS u(id, owner) WHERE c.id = u.id AND c.owner IS NULL`,
			assignIDs, assignTo); err != nil {
			return fmt.Errorf("assign clusters: %w", err)
		}
	}
	if len(dropAsks) > 0 {
		if _, err := tx.Exec(ctx, "DELETE FROM cuesched.handover WHERE cluster = ANY($1)", dropAsks); err != nil {
			return fmt.Errorf("drop handovers: %w", err)
		}
	}
	if len(askIDs) > 0 {
		// Only while the giver still owns the cluster: a handover may have
		// completed since the read.
		if _, err := tx.Exec(ctx, `INSERT INTO cuesched.handover (cluster, giver, receiver)
			SELECT u.c, u.g, NULLIF(u.r, 0) FROM unnest($1::int[], $2::int[], $3::int[]) AS u(c, g, r)
			JOIN cuesched.cluster c ON c.id = u.c AND c.owner = u.g
			ON CONFLICT (cluster) DO UPDATE SET giver = excluded.giver, receiver = excluded.receiver`,
			askIDs, askFrom, askTo); err != nil {
			return fmt.Errorf("ask for handovers: %w", err)
		}
	}
	wrote = wrote || len(assignIDs) > 0 || len(dropAsks) > 0 || len(askIDs) > 0
	if wrote {
		if _, err := tx.Exec(ctx, "SELECT pg_notify($1, 'assign')", Channel); err != nil {
			return fmt.Errorf("notify: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit assignment: %w", err)
	}

	// Keep what was written, for the drift check.
	s.Handovers = slices.DeleteFunc(s.Handovers, func(h handoverRow) bool { return slices.Contains(dropAsks, h.Cluster) })
	for i, id := range askIDs {
		s.Handovers = slices.DeleteFunc(s.Handovers, func(h handoverRow) bool { return h.Cluster == id })
		s.Handovers = append(s.Handovers, handoverRow{Cluster: id, Giver: askFrom[i], Receiver: askTo[i]})
	}
	l.snap = s
	if rebalance {
		l.balanced = ids
		// Once the moves are done, check the balance again with what they
		// left: a move may have raced a completing handover.
		l.unsettled = len(askIDs) > 0
	}
	if len(askIDs) > 0 {
		c.m.Rebalances.Inc()
	}
	c.m.Takeovers.Add(float64(orphaned))
	if wrote {
		c.log.Info("assignment written", "live", ids, "assigned", len(assignIDs), "moves", len(askIDs),
			"cancelled", len(dropAsks))
	}
	return nil
}

// syncClusters brings the cluster rows to keys: rows for new keys (unowned),
// none for keys gone, and allocation tags refreshed. It updates s.
func (l *leader) syncClusters(ctx context.Context, tx pgx.Tx, s *snapshot, keys []cluster.Key) (bool, error) {
	want := map[string]cluster.Key{}
	for _, k := range keys {
		if (k.Kind == cluster.KindAlloc && k.Alloc == "") || (k.Kind != cluster.KindAlloc && k.Kind != cluster.KindTags) {
			l.c.log.Warn("cluster key skipped: not a valid key", "key", k)
			continue
		}
		want[k.String()] = k
	}
	have := map[string]bool{}
	var gone []int32
	for _, row := range s.Clusters {
		k := row.key().String()
		have[k] = true
		if _, ok := want[k]; !ok {
			gone = append(gone, row.ID)
		}
	}
	var names, facilities, allocs []string
	var kinds, buckets []int32
	for _, name := range slices.Sorted(maps.Keys(want)) {
		if have[name] {
			continue
		}
		k := want[name]
		names, facilities, allocs = append(names, name), append(facilities, k.Facility), append(allocs, k.Alloc)
		kinds, buckets = append(kinds, int32(k.Kind)), append(buckets, int32(k.Bucket))
	}
	changed := false
	if len(gone) > 0 {
		if _, err := tx.Exec(ctx, "DELETE FROM cuesched.cluster WHERE id = ANY($1)", gone); err != nil {
			return false, fmt.Errorf("delete clusters gone: %w", err)
		}
		s.Clusters = slices.DeleteFunc(s.Clusters, func(r clusterRow) bool { return slices.Contains(gone, r.ID) })
		s.Handovers = slices.DeleteFunc(s.Handovers, func(h handoverRow) bool { return slices.Contains(gone, h.Cluster) })
		changed = true
	}
	if len(names) > 0 {
		rows, err := tx.Query(ctx, `INSERT INTO cuesched.cluster (key, kind, facility, alloc, alloc_tag, bucket)
			SELECT u.key, u.kind, u.facility, NULLIF(u.alloc, ''), a.str_tag, CASE WHEN u.kind = 2 THEN u.bucket END
			FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::int[]) AS u(key, kind, facility, alloc, bucket)
			LEFT JOIN alloc a ON u.kind = 1 AND a.pk_alloc = u.alloc
			ON CONFLICT (key) DO NOTHING
			RETURNING id, kind, facility, COALESCE(alloc, ''), COALESCE(alloc_tag, ''), COALESCE(bucket, 0), epoch`,
			names, kinds, facilities, allocs, buckets)
		if err != nil {
			return false, fmt.Errorf("add clusters: %w", err)
		}
		added, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (clusterRow, error) {
			var c clusterRow
			err := r.Scan(&c.ID, &c.Kind, &c.Facility, &c.Alloc, &c.AllocTag, &c.Bucket, &c.Epoch)
			return c, err
		})
		if err != nil {
			return false, fmt.Errorf("add clusters: %w", err)
		}
		s.Clusters = append(s.Clusters, added...)
		changed = changed || len(added) > 0
	}
	rows, err := tx.Query(ctx, `UPDATE cuesched.cluster c SET alloc_tag = a.str_tag FROM alloc a
		WHERE c.kind = 1 AND a.pk_alloc = c.alloc AND c.alloc_tag IS DISTINCT FROM a.str_tag
		RETURNING c.id, COALESCE(c.alloc_tag, '')`)
	if err != nil {
		return false, fmt.Errorf("refresh allocation tags: %w", err)
	}
	retagged := map[int32]string{}
	var id int32
	var tag string
	_, err = pgx.ForEachRow(rows, []any{&id, &tag}, func() error { retagged[id] = tag; return nil })
	if err != nil {
		return false, fmt.Errorf("refresh allocation tags: %w", err)
	}
	for i, r := range s.Clusters {
		if t, ok := retagged[r.ID]; ok {
			s.Clusters[i].AllocTag = t
			changed = true
		}
	}
	return changed, nil
}
