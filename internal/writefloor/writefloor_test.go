package writefloor_test

import (
	"strings"
	"testing"

	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/internal/writefloor"
	"github.com/cuesched/cuesched/match"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// The floor's writes leave the database as a booking would: every frame
// written runs, on a proc, and hosts and counters agree with the procs, in
// transactions of any size.
func TestWriteLeavesTheDatabaseConsistent(t *testing.T) {
	for _, size := range []int{1, 7, 500} {
		db := pgtest.NewDB(t)
		if _, err := seed.Load(t.Context(), db.Pool, seed.Stress(3, 20, 4), 3); err != nil {
			t.Fatal(err)
		}
		// First fit of each waiting frame at its layer's minimum, by the
		// hosts' idle capacity as the database has it.
		type host struct {
			h    match.Host
			idle match.Resources
		}
		var hosts []*host
		rows, err := db.Pool.Query(t.Context(), `SELECT pk_host, str_name, pk_alloc, int_cores_idle, int_mem_idle
			FROM host ORDER BY pk_host`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			h := &host{}
			if err := rows.Scan(&h.h.ID, &h.h.Name, &h.h.Alloc, &h.idle.Cores, &h.idle.Mem); err != nil {
				t.Fatal(err)
			}
			hosts = append(hosts, h)
		}
		rows.Close()
		rows, err = db.Pool.Query(t.Context(), `SELECT f.pk_frame, f.int_version, l.pk_layer, l.pk_job, j.pk_show,
				j.pk_folder, j.pk_dept, l.int_cores_min, l.int_mem_min
			FROM frame f JOIN layer l USING (pk_layer) JOIN job j ON j.pk_job = l.pk_job
			WHERE f.str_state = 'WAITING' ORDER BY f.pk_frame`)
		if err != nil {
			t.Fatal(err)
		}
		var ps []match.Placement
		for rows.Next() {
			p := match.Placement{Layer: &match.Layer{}}
			l := p.Layer
			if err := rows.Scan(&p.Frame.ID, &p.Frame.Version, &l.ID, &l.JobID, &l.ShowID, &l.FolderID, &l.DeptID,
				&p.Size.Cores, &p.Size.Mem); err != nil {
				t.Fatal(err)
			}
			for _, h := range hosts {
				if h.idle.Cores >= p.Size.Cores && h.idle.Mem >= p.Size.Mem {
					h.idle = h.idle.Sub(p.Size)
					p.Host = h.h
					ps = append(ps, p)
					break
				}
			}
		}
		rows.Close()
		if len(ps) < 20 {
			t.Fatalf("only %d placements to write", len(ps))
		}

		if err := writefloor.Write(t.Context(), db.Pool, ps, size); err != nil {
			t.Fatalf("%d frames a transaction: %v", size, err)
		}
		var running int
		if err := db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM frame f JOIN proc p USING (pk_frame)
			WHERE f.str_state = 'RUNNING'`).Scan(&running); err != nil {
			t.Fatal(err)
		}
		if running != len(ps) {
			t.Errorf("%d frames a transaction: %d frames running on a proc, want %d", size, running, len(ps))
		}
		audittest.Clean(t, db.Pool)
	}
}

func TestWriteRefusesAnEmptyTransaction(t *testing.T) {
	err := writefloor.Write(t.Context(), nil, nil, 0)
	if err == nil || !strings.Contains(err.Error(), "give at least 1") {
		t.Fatalf("got %v, want an error saying to give at least 1 frame a transaction", err)
	}
}
