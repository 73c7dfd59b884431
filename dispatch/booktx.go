package dispatch

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/dispatch/writeset"
	"github.com/cuesched/cuesched/match"
)

// The booking's lock-and-read statements, sent in one pipeline in the lock
// order of DESIGN.md (host, host_stat, layer_stat, job_stat, frame with its
// job, then the counters: subscription, layer_resource, job_resource,
// folder_resource, point), each table's rows in key order, then
// limit_record, which only bookings lock (after everything else, so no cycle
// forms with anyone). PostgreSQL locks the rows of a `SELECT ... ORDER BY
// ... FOR UPDATE` in the sorted order.
//
// Every row whose value the re-check reads is locked, host_stat and job
// (shared) too: a change Cuebot commits to one of them (a host taken DOWN,
// a job killed or paused) then either waits for the booking to commit or is
// seen by it, never committed between the booking's read and its commit.
// Cuebot writes each of the two alone in its transaction, so these share
// locks form no cycle with it.
const (
	sqlLockHosts = `
		SELECT h.pk_host, h.str_name, h.pk_alloc, h.str_lock_state,
		       h.int_cores_idle, h.int_mem_idle, h.int_gpus_idle, h.int_gpu_mem_idle
		  FROM host h
		 WHERE h.pk_host = ANY($1)
		 ORDER BY h.pk_host FOR UPDATE OF h`
	// A host without a host_stat row keeps the empty state: not UP.
	sqlLockHostStats = `
		SELECT pk_host, str_state FROM host_stat WHERE pk_host = ANY($1) ORDER BY pk_host_stat FOR SHARE`
	sqlLockLayerStats = `SELECT 1 FROM layer_stat WHERE pk_layer = ANY($1) ORDER BY pk_layer_stat FOR UPDATE`
	sqlLockJobStats   = `SELECT 1 FROM job_stat WHERE pk_job = ANY($1) ORDER BY pk_job_stat FOR UPDATE`
	sqlLockFrames     = `
		SELECT f.pk_frame, f.pk_layer, f.pk_job, f.str_state, f.int_version, greatest(f.ts_eligible, f.ts_stopped),
		       l.ts_start_after IS NULL OR l.ts_start_after <= current_timestamp,
		       j.str_state, j.b_paused, s.b_scheduler_managed AND s.b_active, j.pk_show, s.str_name,
		       j.pk_folder, j.pk_dept
		  FROM frame f
		  JOIN layer l ON l.pk_layer = f.pk_layer
		  JOIN job j ON j.pk_job = f.pk_job
		  JOIN show s ON s.pk_show = j.pk_show
		 WHERE f.pk_frame = ANY($1)
		 ORDER BY f.pk_frame FOR UPDATE OF f FOR SHARE OF j`
	sqlLockSubscriptions = `
		SELECT s.pk_show, s.pk_alloc, s.int_cores, s.int_burst
		  FROM subscription s JOIN unnest($1::text[], $2::text[]) k(show, alloc) ON s.pk_show = k.show AND s.pk_alloc = k.alloc
		 ORDER BY s.pk_subscription FOR UPDATE OF s`
	sqlLockLayerResources = `SELECT 1 FROM layer_resource WHERE pk_layer = ANY($1) ORDER BY pk_layer_resource FOR UPDATE`
	sqlLockJobResources   = `
		SELECT pk_job, int_cores, int_max_cores, int_gpus, int_max_gpus
		  FROM job_resource WHERE pk_job = ANY($1) ORDER BY pk_job_resource FOR UPDATE`
	sqlLockFolderResources = `
		SELECT pk_folder, int_cores, int_max_cores, int_gpus, int_max_gpus
		  FROM folder_resource WHERE pk_folder = ANY($1) ORDER BY pk_folder_resource FOR UPDATE`
	sqlLockPoints = `
		SELECT 1 FROM point p JOIN unnest($1::text[], $2::text[]) k(show, dept) ON p.pk_show = k.show AND p.pk_dept = k.dept
		 ORDER BY p.pk_point FOR UPDATE OF p`
	sqlLockLimits = `
		SELECT 1 FROM limit_record
		 WHERE pk_limit_record IN (SELECT pk_limit_record FROM layer_limit WHERE pk_layer = ANY($1))
		 ORDER BY pk_limit_record FOR UPDATE`
	// A separate statement after the limit locks, so that its snapshot sees
	// every booking that held them before us. A NULL maximum lets nothing
	// run, as Cuebot's comparison with it fails.
	sqlReadLimits = `
		SELECT ll.pk_layer, lr.pk_limit_record, coalesce(lr.int_max_value, 0),
		       (SELECT coalesce(sum(ls.int_running_count), 0)::bigint
		          FROM layer_limit l2 JOIN layer_stat ls ON ls.pk_layer = l2.pk_layer
		         WHERE l2.pk_limit_record = lr.pk_limit_record)
		  FROM layer_limit ll JOIN limit_record lr ON lr.pk_limit_record = ll.pk_limit_record
		 WHERE ll.pk_layer = ANY($1)`
)

// queueLockAndRead queues on b the statements that lock the batch's rows in
// the lock order and read what the re-check needs; the state they fill is
// complete once b's results are read without error.
func queueLockAndRead(b *pgx.Batch, ps []match.Placement) *lockedState {
	var hosts, layers, jobs, frames, folders []string
	var subShows, subAllocs, ptShows, ptDepts []string
	subSeen, ptSeen := map[showAlloc]bool{}, map[showDept]bool{}
	for _, p := range ps {
		if p.Layer == nil {
			continue
		}
		l := p.Layer
		hosts, layers, jobs = append(hosts, p.Host.ID), append(layers, l.ID), append(jobs, l.JobID)
		frames, folders = append(frames, p.Frame.ID), append(folders, l.FolderID)
		if k := (showAlloc{l.ShowID, p.Host.Alloc}); !subSeen[k] {
			subSeen[k] = true
			subShows, subAllocs = append(subShows, k.show), append(subAllocs, k.alloc)
		}
		if k := (showDept{l.ShowID, l.DeptID}); !ptSeen[k] {
			ptSeen[k] = true
			ptShows, ptDepts = append(ptShows, k.show), append(ptDepts, k.dept)
		}
	}
	hosts, layers, jobs = sortedUnique(hosts), sortedUnique(layers), sortedUnique(jobs)
	frames, folders = sortedUnique(frames), sortedUnique(folders)

	st := newLockedState()
	b.Queue(sqlLockHosts, hosts).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var id string
			var h lockedHost
			if err := rows.Scan(&id, &h.name, &h.alloc, &h.lock,
				&h.idle.Cores, &h.idle.Mem, &h.idle.GPUs, &h.idle.GPUMem); err != nil {
				return fmt.Errorf("lock hosts: %w", err)
			}
			st.hosts[id] = h
		}
		return rows.Err()
	})
	b.Queue(sqlLockHostStats, hosts).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var id, state string
			if err := rows.Scan(&id, &state); err != nil {
				return fmt.Errorf("lock host_stat: %w", err)
			}
			if h, ok := st.hosts[id]; ok {
				h.state = state
				st.hosts[id] = h
			}
		}
		return rows.Err()
	})
	b.Queue(sqlLockLayerStats, layers)
	b.Queue(sqlLockJobStats, jobs)
	b.Queue(sqlLockFrames, frames).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var id string
			var f lockedFrame
			var eligible *time.Time
			if err := rows.Scan(&id, &f.layer, &f.job, &f.state, &f.version, &eligible, &f.startOK,
				&f.jobState, &f.paused, &f.showOK, &f.show, &f.showName, &f.folder, &f.dept); err != nil {
				return fmt.Errorf("lock frames: %w", err)
			}
			if eligible != nil {
				f.eligible = *eligible
			}
			st.frames[id] = f
		}
		return rows.Err()
	})
	b.Queue(sqlLockSubscriptions, subShows, subAllocs).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var k showAlloc
			var s subRow
			if err := rows.Scan(&k.show, &k.alloc, &s.cores, &s.burst); err != nil {
				return fmt.Errorf("lock subscriptions: %w", err)
			}
			st.subs[k] = s
		}
		return rows.Err()
	})
	b.Queue(sqlLockLayerResources, layers)
	capRows := func(what string, into map[string]capRow) func(pgx.Rows) error {
		return func(rows pgx.Rows) error {
			for rows.Next() {
				var id string
				var c capRow
				if err := rows.Scan(&id, &c.cores, &c.maxCores, &c.gpus, &c.maxGPUs); err != nil {
					return fmt.Errorf("lock %s: %w", what, err)
				}
				into[id] = c
			}
			return rows.Err()
		}
	}
	b.Queue(sqlLockJobResources, jobs).Query(capRows("job_resource", st.jobs))
	b.Queue(sqlLockFolderResources, folders).Query(capRows("folder_resource", st.folders))
	b.Queue(sqlLockPoints, ptShows, ptDepts)
	b.Queue(sqlLockLimits, layers)
	b.Queue(sqlReadLimits, layers).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var layer, limit string
			var l limitRow
			if err := rows.Scan(&layer, &limit, &l.max, &l.running); err != nil {
				return fmt.Errorf("read limits: %w", err)
			}
			st.limits[limit] = l
			st.layerLimits[layer] = append(st.layerLimits[layer], limit)
		}
		return rows.Err()
	})
	b.Queue(sqlReadReservations, hosts).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var id string
			var r reservedHost
			var start *time.Time
			if err := rows.Scan(&id, &r.layer, &r.layerName, &start, &r.made); err != nil {
				return fmt.Errorf("read reservations: %w", err)
			}
			if start != nil {
				r.start = *start
			}
			st.reserved[id] = r
		}
		return rows.Err()
	})
	b.Queue(`SELECT now()`).QueryRow(func(row pgx.Row) error { return row.Scan(&st.now) })
	return st
}

// sqlReadReservations reads the reservations of the batch's hosts
// (migration 0014), unlocked: a reservation written after this read was
// planned without this booking's frame, which may make it late; a late
// reservation is dropped after its margin like any other.
const sqlReadReservations = `
		SELECT host_id, layer_id, layer_name, starts_at, created_at FROM cuesched.reservation WHERE host_id = ANY($1::text[])`

// The booking's writes (package writeset), in the lock order. Every row
// they touch is locked already, so none of them waits, and the guard
// triggers find exactly what the re-check checked.
const (
	sqlStartFrames        = writeset.StartFrames
	sqlInsertProcs        = writeset.InsertProcs
	sqlTakeHosts          = writeset.TakeHosts
	sqlRaiseSubscriptions = writeset.RaiseSubscriptions
	sqlRaiseLayers        = writeset.RaiseLayers
	sqlRaiseJobs          = writeset.RaiseJobs
	sqlRaiseFolders       = writeset.RaiseFolders
	sqlRaisePoints        = writeset.RaisePoints
	// The launch outbox row of each booking: cuesched's own, not part of
	// the write floor.
	sqlInsertOutbox = `
		INSERT INTO cuesched.launch_outbox (proc_id, frame_id, frame_version, host_id, host_name, cluster_id, state)
		SELECT b.proc, b.frame, b.version, b.host, b.host_name, b.cluster, $7
		  FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[], $6::int4[])
		       AS b(proc, frame, version, host, host_name, cluster)`
)

// write issues the booking's write set for the kept placements in one round
// trip and checks that every statement touched the rows the re-check
// promised.
func (b *Booker) write(ctx context.Context, conn *pgxpool.Conn, kept []keptPlacement) error {
	n := len(kept)
	frames, hostNames, procs, hostIDs := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	shows, layerIDs, jobIDs := make([]string, n), make([]string, n), make([]string, n)
	versions, nextVersions, clusters := make([]int32, n), make([]int32, n), make([]int32, n)
	cores32, gpus32 := make([]int32, n), make([]int32, n) // frame.int_cores and int_gpus are integer
	cores, mem, gpuMem := make([]int64, n), make([]int64, n), make([]int64, n)
	var hosts, layers, jobs, folders writeset.Sums[string]
	var subs writeset.Sums[showAlloc]
	var points writeset.Sums[showDept]
	for i, k := range kept {
		p, l, sz := k.p, k.p.Layer, k.p.Size
		frames[i], hostNames[i], procs[i], hostIDs[i] = p.Frame.ID, k.hostName, k.procID, p.Host.ID
		shows[i], layerIDs[i], jobIDs[i] = l.ShowID, l.ID, l.JobID
		versions[i], nextVersions[i], clusters[i] = k.version, k.version+1, k.cluster
		cores32[i], gpus32[i] = int32(sz.Cores), int32(sz.GPUs) // range checked by recheck
		cores[i], mem[i], gpuMem[i] = sz.Cores, sz.Mem, sz.GPUMem
		counted := match.Resources{Cores: sz.Cores, GPUs: sz.GPUs} // what the counters hold
		hosts.Add(p.Host.ID, sz)
		subs.Add(showAlloc{l.ShowID, k.alloc}, counted)
		layers.Add(l.ID, counted)
		jobs.Add(l.JobID, counted)
		folders.Add(l.FolderID, counted)
		points.Add(showDept{l.ShowID, l.DeptID}, counted)
	}
	state := "pending"
	if b.cfg.DryRun {
		state = "dry"
	}

	bt := &pgx.Batch{}
	expect := func(what string, want int) func(pgconn.CommandTag) error {
		return func(ct pgconn.CommandTag) error {
			if got := int(ct.RowsAffected()); got != want {
				return fmt.Errorf("%s: %d rows, expected %d: %w", what, got, want, errMismatch)
			}
			return nil
		}
	}
	bt.Queue(sqlStartFrames, frames, versions, hostNames, cores32, mem, gpus32, gpuMem).Exec(expect("start frames", n))
	bt.Queue(sqlInsertProcs, procs, hostIDs, shows, layerIDs, jobIDs, frames, cores, mem, gpus32, gpuMem).
		Exec(expect("insert procs", n))
	hc, hm, hg, hgm := hosts.Columns()
	bt.Queue(sqlTakeHosts, hosts.Keys, hc, hm, hg, hgm).Exec(expect("take host resources", len(hosts.Keys)))
	subShows, subAllocs := make([]string, len(subs.Keys)), make([]string, len(subs.Keys))
	for i, k := range subs.Keys {
		subShows[i], subAllocs[i] = k.show, k.alloc
	}
	sc, _, sg, _ := subs.Columns()
	bt.Queue(sqlRaiseSubscriptions, subShows, subAllocs, sc, sg).Exec(expect("raise subscriptions", len(subs.Keys)))
	lc, _, lg, _ := layers.Columns()
	bt.Queue(sqlRaiseLayers, layers.Keys, lc, lg)
	jc, _, jg, _ := jobs.Columns()
	bt.Queue(sqlRaiseJobs, jobs.Keys, jc, jg).Exec(expect("raise jobs", len(jobs.Keys)))
	fc, _, fg, _ := folders.Columns()
	bt.Queue(sqlRaiseFolders, folders.Keys, fc, fg)
	ptShows, ptDepts := make([]string, len(points.Keys)), make([]string, len(points.Keys))
	for i, k := range points.Keys {
		ptShows[i], ptDepts[i] = k.show, k.dept
	}
	pc, _, pg, _ := points.Columns()
	bt.Queue(sqlRaisePoints, ptShows, ptDepts, pc, pg)
	bt.Queue(sqlInsertOutbox, procs, frames, nextVersions, hostIDs, hostNames, clusters, state).Exec(expect("write outbox", n))
	if err := conn.SendBatch(ctx, bt).Close(); err != nil {
		return fmt.Errorf("write bookings: %w", err)
	}
	return nil
}
