// Package writeset holds the statements of a booking's write set (DESIGN.md,
// "What a booking writes"), each one set-based statement over arrays, in the
// lock order. The Booker runs them after its locks and re-check; the
// benchmarks' write floor (internal/writefloor) runs the same text bare, so
// the two always measure one write set.
package writeset

import "github.com/cuesched/cuesched/match"

const (
	// StartFrames starts each WAITING frame of the version read on its host.
	StartFrames = `
		UPDATE frame f
		   SET str_state = 'RUNNING', str_host = b.host_name, int_cores = b.cores, int_mem_reserved = b.mem,
		       int_gpus = b.gpus, int_gpu_mem_reserved = b.gpu_mem, ts_started = current_timestamp,
		       ts_updated = current_timestamp, ts_stopped = NULL, int_version = f.int_version + 1,
		       int_retries = CASE WHEN f.int_exit_status IN (-1, 256, 286, 299, 301, 302, 399) THEN f.int_retries
		                          ELSE f.int_retries + 1 END
		  FROM unnest($1::text[], $2::int4[], $3::text[], $4::int4[], $5::int8[], $6::int4[], $7::int8[])
		       AS b(frame, version, host_name, cores, mem, gpus, gpu_mem)
		 WHERE f.pk_frame = b.frame AND f.str_state = 'WAITING' AND f.int_version = b.version
		   AND NOT EXISTS (SELECT FROM layer l WHERE l.pk_layer = f.pk_layer AND l.ts_start_after > current_timestamp)`
	// InsertProcs inserts the procs, one a frame.
	InsertProcs = `
		INSERT INTO proc (pk_proc, pk_host, pk_show, pk_layer, pk_job, pk_frame, int_cores_reserved, int_mem_reserved,
		                  int_mem_pre_reserved, int_gpus_reserved, int_gpu_mem_reserved, int_gpu_mem_pre_reserved,
		                  int_mem_used, b_local)
		SELECT b.proc, b.host, b.show, b.layer, b.job, b.frame, b.cores, b.mem, b.mem, b.gpus, b.gpu_mem, b.gpu_mem,
		       262144, false
		  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::int8[],
		              $9::int4[], $10::int8[]) AS b(proc, host, show, layer, job, frame, cores, mem, gpus, gpu_mem)
		ON CONFLICT (pk_frame) DO NOTHING`
	// TakeHosts takes each host's booked resources from its idle ones.
	TakeHosts = `
		UPDATE host h
		   SET int_cores_idle = h.int_cores_idle - b.cores, int_mem_idle = h.int_mem_idle - b.mem,
		       int_gpus_idle = h.int_gpus_idle - b.gpus, int_gpu_mem_idle = h.int_gpu_mem_idle - b.gpu_mem
		  FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[]) AS b(host, cores, mem, gpus, gpu_mem)
		 WHERE h.pk_host = b.host`
	// RaiseSubscriptions raises the subscriptions (show x allocation) by the cores and GPUs booked.
	RaiseSubscriptions = `
		UPDATE subscription s SET int_cores = s.int_cores + b.cores, int_gpus = s.int_gpus + b.gpus
		  FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[]) AS b(show, alloc, cores, gpus)
		 WHERE s.pk_show = b.show AND s.pk_alloc = b.alloc`
	// RaiseLayers raises layer_resource likewise.
	RaiseLayers = `
		UPDATE layer_resource r SET int_cores = r.int_cores + b.cores, int_gpus = r.int_gpus + b.gpus
		  FROM unnest($1::text[], $2::int8[], $3::int8[]) AS b(id, cores, gpus) WHERE r.pk_layer = b.id`
	// RaiseJobs raises job_resource likewise.
	RaiseJobs = `
		UPDATE job_resource r SET int_cores = r.int_cores + b.cores, int_gpus = r.int_gpus + b.gpus
		  FROM unnest($1::text[], $2::int8[], $3::int8[]) AS b(id, cores, gpus) WHERE r.pk_job = b.id`
	// RaiseFolders raises folder_resource likewise.
	RaiseFolders = `
		UPDATE folder_resource r SET int_cores = r.int_cores + b.cores, int_gpus = r.int_gpus + b.gpus
		  FROM unnest($1::text[], $2::int8[], $3::int8[]) AS b(id, cores, gpus) WHERE r.pk_folder = b.id`
	// RaisePoints raises point (show x department) likewise.
	RaisePoints = `
		UPDATE point p SET int_cores = p.int_cores + b.cores, int_gpus = p.int_gpus + b.gpus
		  FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[]) AS b(show, dept, cores, gpus)
		 WHERE p.pk_show = b.show AND p.pk_dept = b.dept`
)

// Sums adds resources per key and lists the keys in first-seen order: the
// arrays the write set's statements take (hosts' reservations, the
// counters' cores and GPUs).
type Sums[K comparable] struct {
	Keys []K
	by   map[K]match.Resources
}

// Add adds r to key k.
func (s *Sums[K]) Add(k K, r match.Resources) {
	if s.by == nil {
		s.by = map[K]match.Resources{}
	}
	if _, ok := s.by[k]; !ok {
		s.Keys = append(s.Keys, k)
	}
	s.by[k] = s.by[k].Add(r)
}

// Columns are the sums in the order of Keys, one array per resource.
func (s *Sums[K]) Columns() (cores, mem, gpus, gpuMem []int64) {
	for _, k := range s.Keys {
		r := s.by[k]
		cores, mem, gpus, gpuMem = append(cores, r.Cores), append(mem, r.Mem), append(gpus, r.GPUs), append(gpuMem, r.GPUMem)
	}
	return
}
