package seed

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Seeded holds the keys of what a Farm created, by name, and launches more
// jobs with the same deterministic key stream.
type Seeded struct {
	Pool       *pgxpool.Pool
	mu         sync.Mutex
	src        *rand.PCG // rng's source, whose state On copies
	rng        *rand.Rand
	Allocs     map[string]string // alloc name -> pk_alloc
	Hosts      map[string]string // host name -> pk_host
	Shows      map[string]string // show name -> pk_show
	Folders    map[string]string // "show/folder" (root: "show/") -> pk_folder
	Limits     map[string]string // limit name -> pk_limit_record
	Jobs       map[string]JobKeys
	facilities map[string]string // facility name -> pk_facility
	depts      map[string]string // dept name -> pk_dept
}

// JobKeys are the keys of one launched job.
type JobKeys struct {
	ID     string
	Layers map[string]string // layer name -> pk_layer
	Frames map[string]string // frame name (0001-layer) -> pk_frame
}

// NewID returns the next deterministic key, formatted as a UUID.
func (s *Seeded) NewID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.newIDLocked()
}

func (s *Seeded) newIDLocked() string {
	a, b := s.rng.Uint64(), s.rng.Uint64()
	// Version 4 / variant 1 bits, so the keys look like what Cuebot writes.
	a = a&^(0xf<<12) | 0x4<<12
	b = b&^(0x3<<62) | 0x2<<62
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", a>>32, (a>>16)&0xffff, a&0xffff, b>>48, b&0xffffffffffff)
}

// Load creates the farm in the database and launches its jobs.
func Load(ctx context.Context, pool *pgxpool.Pool, f *Farm, seed uint64) (*Seeded, error) {
	src := rand.NewPCG(seed, 0xc0ffee)
	s := &Seeded{
		Pool:       pool,
		src:        src,
		rng:        rand.New(src),
		Allocs:     map[string]string{},
		Hosts:      map[string]string{},
		Shows:      map[string]string{},
		Folders:    map[string]string{},
		Limits:     map[string]string{},
		Jobs:       map[string]JobKeys{},
		facilities: map[string]string{},
		depts:      map[string]string{},
	}
	if err := s.readFixed(ctx); err != nil {
		return nil, err
	}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := s.loadAllocations(ctx, tx, f.Allocations); err != nil {
			return err
		}
		if err := s.loadShows(ctx, tx, f.Shows); err != nil {
			return err
		}
		if err := s.loadFolders(ctx, tx, f.Folders); err != nil {
			return err
		}
		if err := s.loadLimits(ctx, tx, f.Limits); err != nil {
			return err
		}
		return s.loadHosts(ctx, tx, f.Hosts)
	})
	if err != nil {
		return nil, err
	}
	for _, j := range f.Jobs {
		if _, err := s.Launch(ctx, j); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// On returns a copy of s that writes through pool, for a database cloned
// from the one s seeded (a template): the same keys, and the key stream goes
// on from where s stands, as s's own would.
func (s *Seeded) On(pool *pgxpool.Pool) (*Seeded, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	state, err := s.src.MarshalBinary()
	src := &rand.PCG{}
	if err == nil {
		err = src.UnmarshalBinary(state)
	}
	if err != nil {
		return nil, fmt.Errorf("seed: copy key stream: %w", err)
	}
	return &Seeded{
		Pool: pool, src: src, rng: rand.New(src),
		Allocs: maps.Clone(s.Allocs), Hosts: maps.Clone(s.Hosts), Shows: maps.Clone(s.Shows),
		Folders: maps.Clone(s.Folders), Limits: maps.Clone(s.Limits), Jobs: maps.Clone(s.Jobs),
		facilities: maps.Clone(s.facilities), depts: maps.Clone(s.depts),
	}, nil
}

func (s *Seeded) readFixed(ctx context.Context) error {
	for _, q := range []struct {
		sql string
		m   map[string]string
	}{
		{"SELECT str_name, pk_facility FROM facility", s.facilities},
		{"SELECT str_name, pk_dept FROM dept", s.depts},
		{"SELECT str_name, pk_alloc FROM alloc", s.Allocs},
		{"SELECT str_name, pk_show FROM show", s.Shows},
		{"SELECT s.str_name || '/', f.pk_folder FROM folder f JOIN show s USING (pk_show) WHERE f.pk_parent_folder IS NULL", s.Folders},
	} {
		rows, err := s.Pool.Query(ctx, q.sql)
		if err != nil {
			return fmt.Errorf("seed: read %q: %w", q.sql, err)
		}
		for rows.Next() {
			var k, v string
			if err := rows.Scan(&k, &v); err != nil {
				rows.Close()
				return fmt.Errorf("seed: read %q: %w", q.sql, err)
			}
			q.m[k] = v
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("seed: read %q: %w", q.sql, err)
		}
	}
	return nil
}

func (s *Seeded) facilityOf(allocName string) (string, error) {
	fac, _, ok := strings.Cut(allocName, ".")
	id, found := s.facilities[fac]
	if !ok || !found {
		return "", fmt.Errorf("seed: allocation %q: name must be facility.name with an existing facility", allocName)
	}
	return id, nil
}

func (s *Seeded) loadAllocations(ctx context.Context, tx pgx.Tx, allocs []Allocation) error {
	for _, a := range allocs {
		if _, ok := s.Allocs[a.Name]; ok {
			continue
		}
		fac, err := s.facilityOf(a.Name)
		if err != nil {
			return err
		}
		id := s.NewID()
		if _, err := tx.Exec(ctx, `INSERT INTO alloc (pk_alloc, str_name, str_tag, pk_facility) VALUES ($1, $2, $3, $4)`,
			id, a.Name, a.Tag, fac); err != nil {
			return fmt.Errorf("seed: allocation %s: %w", a.Name, err)
		}
		s.Allocs[a.Name] = id
	}
	return nil
}

func (s *Seeded) loadShows(ctx context.Context, tx pgx.Tx, shows []Show) error {
	deptNames := make([]string, 0, len(s.depts))
	for n := range s.depts {
		deptNames = append(deptNames, n)
	}
	sort.Strings(deptNames)
	for _, sh := range shows {
		id, exists := s.Shows[sh.Name]
		if !exists {
			id = s.NewID()
			if _, err := tx.Exec(ctx, `INSERT INTO show (pk_show, str_name, b_scheduler_managed, b_active) VALUES ($1, $2, $3, $4)`,
				id, sh.Name, sh.Managed, !sh.Inactive); err != nil {
				return fmt.Errorf("seed: show %s: %w", sh.Name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO show_stats (pk_show) VALUES ($1)`, id); err != nil {
				return fmt.Errorf("seed: show %s stats: %w", sh.Name, err)
			}
			root := s.NewID()
			if _, err := tx.Exec(ctx, `INSERT INTO folder (pk_folder, pk_show, str_name, pk_dept) VALUES ($1, $2, $3, $4)`,
				root, id, sh.Name, s.depts["Unknown"]); err != nil {
				return fmt.Errorf("seed: show %s root folder: %w", sh.Name, err)
			}
			// One point per department, as Cuebot's department configs give.
			for _, d := range deptNames {
				if _, err := tx.Exec(ctx, `INSERT INTO point (pk_point, pk_dept, pk_show) VALUES ($1, $2, $3)`,
					s.NewID(), s.depts[d], id); err != nil {
					return fmt.Errorf("seed: show %s point %s: %w", sh.Name, d, err)
				}
			}
			s.Shows[sh.Name] = id
			s.Folders[sh.Name+"/"] = root
		} else if _, err := tx.Exec(ctx, `UPDATE show SET b_scheduler_managed = $2, b_active = $3 WHERE pk_show = $1`,
			id, sh.Managed, !sh.Inactive); err != nil {
			return fmt.Errorf("seed: show %s: %w", sh.Name, err)
		}
		for _, sub := range sh.Subscriptions {
			alloc, ok := s.Allocs[sub.Alloc]
			if !ok {
				return fmt.Errorf("seed: show %s subscribes to unknown allocation %q", sh.Name, sub.Alloc)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO subscription (pk_subscription, pk_alloc, pk_show, int_size, int_burst)
				VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (pk_show, pk_alloc) DO UPDATE SET int_size = excluded.int_size, int_burst = excluded.int_burst`,
				s.NewID(), alloc, id, sub.Size, sub.Burst); err != nil {
				return fmt.Errorf("seed: subscription %s/%s: %w", sh.Name, sub.Alloc, err)
			}
		}
	}
	return nil
}

func (s *Seeded) loadFolders(ctx context.Context, tx pgx.Tx, folders []Folder) error {
	for _, fo := range folders {
		show, ok := s.Shows[fo.Show]
		if !ok {
			return fmt.Errorf("seed: folder %s: unknown show %q", fo.Name, fo.Show)
		}
		id := s.NewID()
		if _, err := tx.Exec(ctx, `INSERT INTO folder (pk_folder, pk_parent_folder, pk_show, str_name, pk_dept) VALUES ($1, $2, $3, $4, $5)`,
			id, s.Folders[fo.Show+"/"], show, fo.Name, s.depts["Unknown"]); err != nil {
			return fmt.Errorf("seed: folder %s/%s: %w", fo.Show, fo.Name, err)
		}
		if _, err := tx.Exec(ctx, `UPDATE folder_resource SET int_max_cores = $2, int_max_gpus = $3 WHERE pk_folder = $1`,
			id, fo.MaxCores, fo.MaxGPUs); err != nil {
			return fmt.Errorf("seed: folder %s/%s caps: %w", fo.Show, fo.Name, err)
		}
		s.Folders[fo.Show+"/"+fo.Name] = id
	}
	return nil
}

func (s *Seeded) loadLimits(ctx context.Context, tx pgx.Tx, limits []Limit) error {
	for _, l := range limits {
		id := s.NewID()
		if _, err := tx.Exec(ctx, `INSERT INTO limit_record (pk_limit_record, str_name, int_max_value) VALUES ($1, $2, $3)`,
			id, l.Name, l.Max); err != nil {
			return fmt.Errorf("seed: limit %s: %w", l.Name, err)
		}
		s.Limits[l.Name] = id
	}
	return nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func (s *Seeded) loadHosts(ctx context.Context, tx pgx.Tx, hosts []Host) error {
	if len(hosts) == 0 {
		return nil
	}
	allocTags := map[string]string{}
	rows, err := tx.Query(ctx, `SELECT pk_alloc, coalesce(str_tag, '') FROM alloc`)
	if err != nil {
		return fmt.Errorf("seed: read allocation tags: %w", err)
	}
	for rows.Next() {
		var id, tag string
		if err := rows.Scan(&id, &tag); err != nil {
			rows.Close()
			return fmt.Errorf("seed: read allocation tags: %w", err)
		}
		allocTags[id] = tag
	}
	rows.Close()
	now := time.Now()
	var hostRows, statRows, tagRows [][]any
	for _, h := range hosts {
		alloc, ok := s.Allocs[h.Alloc]
		if !ok {
			return fmt.Errorf("seed: host %s: unknown allocation %q", h.Name, h.Alloc)
		}
		id := s.NewID()
		s.Hosts[h.Name] = id
		type tag struct{ name, kind string }
		tags := []tag{{allocTags[alloc], "ALLOC"}, {h.Name, "HOSTNAME"}}
		for _, t := range h.ManualTags {
			tags = append(tags, tag{t, "MANUAL"})
		}
		for _, t := range h.HardwareTag {
			tags = append(tags, tag{t, "HARDWARE"})
		}
		var names []string
		for _, t := range tags {
			names = append(names, t.name)
			tagRows = append(tagRows, []any{s.NewID(), id, t.name, t.kind, t.kind == "ALLOC" || t.kind == "HOSTNAME"})
		}
		hostRows = append(hostRows, []any{id, alloc, h.Name, orDefault(h.Lock, "OPEN"),
			h.Cores, h.Cores, h.Mem, h.Mem, h.GPUs, h.GPUs, h.GPUMem, h.GPUMem,
			strings.Join(names, " "), h.ThreadMode})
		statRows = append(statRows, []any{s.NewID(), id, h.Mem, orDefault(h.MemFree, h.Mem),
			int64(100 * GB), orDefault(h.TempFree, int64(100*GB)), now.Add(-h.PingAge),
			orDefault(h.State, "UP"), orDefault(h.OS, "linux"), h.GPUMem, h.GPUMem})
	}
	copies := []struct {
		table string
		cols  []string
		rows  [][]any
	}{
		{"host", []string{"pk_host", "pk_alloc", "str_name", "str_lock_state", "int_cores", "int_cores_idle",
			"int_mem", "int_mem_idle", "int_gpus", "int_gpus_idle", "int_gpu_mem", "int_gpu_mem_idle",
			"str_tags", "int_thread_mode"}, hostRows},
		{"host_stat", []string{"pk_host_stat", "pk_host", "int_mem_total", "int_mem_free", "int_mcp_total",
			"int_mcp_free", "ts_ping", "str_state", "str_os", "int_gpu_mem_total", "int_gpu_mem_free"}, statRows},
		{"host_tag", []string{"pk_host_tag", "pk_host", "str_tag", "str_tag_type", "b_constant"}, tagRows},
	}
	for _, c := range copies {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{c.table}, c.cols, pgx.CopyFromRows(c.rows)); err != nil {
			return fmt.Errorf("seed: copy %d rows into %s: %w", len(c.rows), c.table, err)
		}
	}
	return nil
}
