// Package writefloor is the benchmarks' write floor (DESIGN.md, "Definitions
// the issues share"): a booking's write set (package writeset) for given
// placements, issued as plain set-based SQL with no locks, re-checks or
// outbox, so that what cuesched books can be compared with what the same
// writes cost bare, in the same run. It belongs to the tests only.
package writefloor

import (
	"context"
	"crypto/rand"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/dispatch/writeset"
	"github.com/cuesched/cuesched/match"
)

// Write issues the write set for ps, size frames per transaction, each
// transaction one pipelined round trip (BEGIN, the eight writes, COMMIT), on
// one connection: with size 500 the write floor, with size 1 the
// one-frame-per-transaction baseline. Each placement needs the frame's ID
// and version as the database has it, the host's ID, name and allocation,
// the layer's IDs (layer, job, show, folder, department) and the size.
func Write(ctx context.Context, pool *pgxpool.Pool, ps []match.Placement, size int) error {
	if size < 1 {
		return fmt.Errorf("write floor: %d frames per transaction; give at least 1", size)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("write floor: %w", err)
	}
	defer conn.Release()
	for i := 0; i < len(ps); i += size {
		chunk := ps[i:min(i+size, len(ps))]
		b := &pgx.Batch{}
		b.Queue("BEGIN")
		queue(b, chunk)
		b.Queue("COMMIT")
		if err := conn.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("write floor: frames %d-%d: %w", i, i+len(chunk), err)
		}
	}
	return nil
}

// queue queues the write set for ps in the lock order, each counter raised
// once per key by the cores and GPUs booked under it.
func queue(b *pgx.Batch, ps []match.Placement) {
	n := len(ps)
	frames, hostNames, procs, hostIDs := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	shows, layerIDs, jobIDs := make([]string, n), make([]string, n), make([]string, n)
	versions, cores32, gpus32 := make([]int32, n), make([]int32, n), make([]int32, n)
	cores, mem, gpuMem := make([]int64, n), make([]int64, n), make([]int64, n)
	var hosts, layers, jobs, folders writeset.Sums[string]
	var subs, points writeset.Sums[[2]string]
	for i, p := range ps {
		l, sz := p.Layer, p.Size
		frames[i], hostNames[i], procs[i], hostIDs[i] = p.Frame.ID, p.Host.Name, newUUID(), p.Host.ID
		shows[i], layerIDs[i], jobIDs[i] = l.ShowID, l.ID, l.JobID
		versions[i], cores32[i], gpus32[i] = p.Frame.Version, int32(sz.Cores), int32(sz.GPUs)
		cores[i], mem[i], gpuMem[i] = sz.Cores, sz.Mem, sz.GPUMem
		counted := match.Resources{Cores: sz.Cores, GPUs: sz.GPUs}
		hosts.Add(p.Host.ID, sz)
		subs.Add([2]string{l.ShowID, p.Host.Alloc}, counted)
		layers.Add(l.ID, counted)
		jobs.Add(l.JobID, counted)
		folders.Add(l.FolderID, counted)
		points.Add([2]string{l.ShowID, l.DeptID}, counted)
	}
	b.Queue(writeset.StartFrames, frames, versions, hostNames, cores32, mem, gpus32, gpuMem)
	b.Queue(writeset.InsertProcs, procs, hostIDs, shows, layerIDs, jobIDs, frames, cores, mem, gpus32, gpuMem)
	hc, hm, hg, hgm := hosts.Columns()
	b.Queue(writeset.TakeHosts, hosts.Keys, hc, hm, hg, hgm)
	subShows, subAllocs := split(subs.Keys)
	sc, _, sg, _ := subs.Columns()
	b.Queue(writeset.RaiseSubscriptions, subShows, subAllocs, sc, sg)
	lc, _, lg, _ := layers.Columns()
	b.Queue(writeset.RaiseLayers, layers.Keys, lc, lg)
	jc, _, jg, _ := jobs.Columns()
	b.Queue(writeset.RaiseJobs, jobs.Keys, jc, jg)
	fc, _, fg, _ := folders.Columns()
	b.Queue(writeset.RaiseFolders, folders.Keys, fc, fg)
	ptShows, ptDepts := split(points.Keys)
	pc, _, pg, _ := points.Columns()
	b.Queue(writeset.RaisePoints, ptShows, ptDepts, pc, pg)
}

// split turns pair keys into their two columns.
func split(keys [][2]string) (first, second []string) {
	for _, k := range keys {
		first, second = append(first, k[0]), append(second, k[1])
	}
	return
}

// newUUID is a random (version 4) UUID in text form, a new proc's key.
func newUUID() string {
	var u [16]byte
	_, _ = rand.Read(u[:]) // crypto/rand.Read never fails
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
