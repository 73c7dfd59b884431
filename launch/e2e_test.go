package launch

import (
	"strconv"
	"testing"
	"time"

	"github.com/cuesched/cuesched/dispatch"
	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/booktest"
	"github.com/cuesched/cuesched/internal/testworld/fakerqd"
	"github.com/cuesched/cuesched/internal/testworld/seed"
)

// The stress farm (seed.SuiteStress) booked end to end: every frame booked, launched
// exactly once on its host's fake RQD with the right resource_id, frame_id,
// num_cores, command and environment, every outbox row marked launched, and
// the audit clean.
func TestBookPeerStressEndToEnd(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, 5*time.Minute)
	start := time.Now()
	f := seed.SuiteStress(1)
	frames := f.FrameCount()
	db := booktest.LoadFarm(t, f)
	v := booktest.ReadView(ctx, t, db.Pool)
	names := make([]string, len(v.Hosts))
	for i, h := range v.Hosts {
		names[i] = h.Name
	}
	farm, port := rqdFarm(t, names, fakerqd.Options{})
	settled := newSettledLog()
	rqd := newRQD(t, port, 10*time.Second)
	l := runLauncher(t, Config{Pool: db.Pool, RQD: rqd, OnSettled: settled.add})
	b := newBooker(db.Pool, dispatch.BookerConfig{Launcher: l, HostAllowed: rqd.Allowed})

	ps := booktest.FirstFit(v, nil)
	if len(ps) != frames {
		t.Fatalf("%d placements for %d frames", len(ps), frames)
	}
	ids, batches := booktest.ByTag(ps)
	loaded := time.Now()
	booked := 0
	for _, id := range ids {
		res, err := b.Book(ctx, dispatch.Cluster{ID: id}, batches[id])
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Dropped) != 0 || res.Busy {
			t.Fatalf("cluster %d: dropped %d (%v), busy %v", id, len(res.Dropped), res.Dropped[0], res.Busy)
		}
		booked += len(res.Booked)
	}
	if booked != frames {
		t.Fatalf("booked %d", booked)
	}
	bookedAt := time.Now()
	for _, s := range settled.wait(ctx, t, frames) {
		if s.Result != SettledLaunched {
			t.Fatalf("%+v", s)
		}
	}
	t.Logf("seeded and planned in %v, booked in %v, all launched %v after the last commit",
		loaded.Sub(start).Round(time.Millisecond), bookedAt.Sub(loaded).Round(time.Millisecond),
		time.Since(bookedAt).Round(time.Millisecond))

	type proc struct {
		id, host, frameName, layerName, jobName string
		cores, mem                              int64
		number                                  int
	}
	procs := map[string]proc{}
	rows, err := db.Pool.Query(ctx, `SELECT p.pk_frame, p.pk_proc, h.str_name, f.str_name, l.str_name, j.str_name,
			p.int_cores_reserved, p.int_mem_reserved, f.int_number
		FROM proc p JOIN host h USING (pk_host) JOIN frame f ON f.pk_frame = p.pk_frame
		JOIN layer l ON l.pk_layer = f.pk_layer JOIN job j ON j.pk_job = f.pk_job`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var frame string
		var p proc
		if err := rows.Scan(&frame, &p.id, &p.host, &p.frameName, &p.layerName, &p.jobName, &p.cores, &p.mem, &p.number); err != nil {
			t.Fatal(err)
		}
		procs[frame] = p
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(procs) != frames {
		t.Fatalf("%d procs", len(procs))
	}
	launched := map[string]bool{}
	for _, s := range farm.Servers() {
		for _, call := range s.Launches() {
			rf := call.Frame
			p, ok := procs[rf.GetFrameId()]
			switch {
			case !ok:
				t.Fatalf("launched unknown frame %s", rf.GetFrameId())
			case launched[rf.GetFrameId()]:
				t.Fatalf("frame %s launched twice", p.frameName)
			case call.Code != 0:
				t.Fatalf("launch of %s answered %v %s", p.frameName, call.Code, call.Message)
			}
			launched[rf.GetFrameId()] = true
			env := rf.GetEnvironment()
			want := map[string]string{
				"CUE_FRAME": p.frameName, "CUE_LAYER": p.layerName, "CUE_JOB": p.jobName,
				"CUE_THREADS": strconv.FormatInt(p.cores/100, 10), "CUE_MEMORY": strconv.FormatInt(p.mem, 10),
				"CUE_IFRAME": strconv.Itoa(p.number), "CUE_SHOW": "stress", "CUE_FRAME_ID": rf.GetFrameId(),
			}
			for k, v := range want {
				if env[k] != v {
					t.Fatalf("frame %s: %s=%q, want %q", p.frameName, k, env[k], v)
				}
			}
			if rf.GetResourceId() != p.id || int64(rf.GetNumCores()) != p.cores ||
				rf.GetCommand() != "echo "+strconv.Itoa(p.number) || s.Addr() != p.host+":"+strconv.Itoa(port) ||
				rf.GetJobName() != p.jobName || rf.GetLogDir() == "" {
				t.Fatalf("frame %s on %s: resource %s cores %d command %q job %s, want proc %s on %s cores %d",
					p.frameName, s.Addr(), rf.GetResourceId(), rf.GetNumCores(), rf.GetCommand(), rf.GetJobName(),
					p.id, p.host, p.cores)
			}
		}
	}
	if len(launched) != frames {
		t.Fatalf("%d frames launched", len(launched))
	}
	var marked int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM cuesched.launch_outbox WHERE state = 'launched' AND attempts = 1`).
		Scan(&marked); err != nil {
		t.Fatal(err)
	}
	if marked != frames {
		t.Errorf("%d outbox rows marked launched", marked)
	}
	audittest.Clean(t, db.Pool)
}
