package reservation

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/match"
)

// Hosts is what planning reads of the host cache (cache.Hosts): every host
// of a tag, busy or not, and one host.
type Hosts interface {
	AllHosts(facility, tag string, visit func(match.Host) bool)
	Host(hostID string) (match.Host, bool)
}

// Reader reads the frames running on hosts for planning reservations.
type Reader struct {
	pool  *pgxpool.Pool
	hosts Hosts
}

// NewReader returns a reader over the pool and the host cache.
func NewReader(pool *pgxpool.Pool, hosts Hosts) *Reader {
	return &Reader{pool: pool, hosts: hosts}
}

// Running returns the hosts and their running frames for one planning
// (match.Running), read with ctx. The replica does not carry what a proc's
// end depends on (when it was booked, its memory, its layer's runs), so the
// frames are read from the database, once per tag walked and only by a
// planning that looks for new hosts (match.Reserve): a few times a minute
// while layers wait for room, never per round.
func (r *Reader) Running(ctx context.Context) *Running {
	return &Running{ctx: ctx, r: r, procs: map[string][]match.Proc{}}
}

// Running is match.Running over the host cache and one read of procs.
type Running struct {
	ctx   context.Context
	r     *Reader
	procs map[string][]match.Proc // by pk_host, of the hosts read
	err   error
}

// AllHosts implements match.Running: it reads the procs of every host it
// visits first, in one query.
func (x *Running) AllHosts(facility, tag string, visit func(match.Host) bool) {
	var hs []match.Host
	x.r.hosts.AllHosts(facility, tag, func(h match.Host) bool {
		hs = append(hs, h)
		return true
	})
	var ids []string
	for _, h := range hs {
		if _, ok := x.procs[h.ID]; !ok {
			ids = append(ids, h.ID)
		}
	}
	x.read(ids)
	for _, h := range hs {
		if !visit(h) {
			return
		}
	}
}

// Host implements match.Running.
func (x *Running) Host(hostID string) (match.Host, bool) { return x.r.hosts.Host(hostID) }

// Procs implements match.Running. A host whose procs could not be read has
// none, and with none it never has room it does not have now.
func (x *Running) Procs(hostID string) []match.Proc {
	if _, ok := x.procs[hostID]; !ok {
		x.read([]string{hostID})
	}
	return x.procs[hostID]
}

// Err is the first read that failed.
func (x *Running) Err() error { return x.err }

// procsQuery reads the procs of hosts with when each was booked and the
// mean run of its layer's finished frames, else its job's (Cuebot's
// layer_usage and job_usage), in seconds; 0 unknown.
const procsQuery = `
SELECT p.pk_host, p.int_cores_reserved, p.int_mem_reserved, coalesce(p.int_gpus_reserved, 0),
       coalesce(p.int_gpu_mem_reserved, 0), p.ts_booked,
       coalesce(lu.int_clock_time_success / nullif(lu.int_frame_success_count, 0),
                ju.int_clock_time_success / nullif(ju.int_frame_success_count, 0), 0)
  FROM proc p
  LEFT JOIN layer_usage lu ON lu.pk_layer = p.pk_layer
  LEFT JOIN job_usage ju ON ju.pk_job = p.pk_job
 WHERE p.pk_host = ANY($1::text[])`

func (x *Running) read(ids []string) {
	if len(ids) == 0 {
		return
	}
	for _, id := range ids {
		x.procs[id] = nil
	}
	if x.err != nil {
		return
	}
	rows, err := x.r.pool.Query(x.ctx, procsQuery, ids)
	if err != nil {
		x.err = fmt.Errorf("read the procs of %d hosts: %w", len(ids), err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var host string
		var p match.Proc
		var run int64
		if err := rows.Scan(&host, &p.Size.Cores, &p.Size.Mem, &p.Size.GPUs, &p.Size.GPUMem, &p.Started, &run); err != nil {
			x.err = fmt.Errorf("read the procs of %d hosts: %w", len(ids), err)
			return
		}
		p.Run = time.Duration(run) * time.Second
		x.procs[host] = append(x.procs[host], p)
	}
	if err := rows.Err(); err != nil {
		x.err = fmt.Errorf("read the procs of %d hosts: %w", len(ids), err)
	}
}
