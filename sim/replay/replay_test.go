package replay_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/sim"
	"github.com/cuesched/cuesched/sim/replay"
	"github.com/cuesched/cuesched/sim/workload"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// run is one finished run of a frame as frame_history records it: its
// start and stop in seconds before the database's clock.
type run struct {
	start, stop int64
	cores       int64
	used        int64 // KB
	exit        int
	alloc       string // alloc name; "" for NULL
}

// hist is a frame and its runs, oldest first; an open run (stop 0) is one
// still going.
type hist struct {
	name string
	runs []run
}

// history is a seeded farm and its history, and what a replay of it must
// give.
type history struct {
	now  int64                       // the database's clock when it was seeded
	want map[string][]workload.Frame // job/layer -> frames replayed, in order
	tags map[string][]string         // job/layer -> tags
}

const gb = workload.GB

// seedHistory seeds, as the database's owner, a farm (three allocations,
// two of one facility tagged alike in another, a manual tag) and its
// history: job "old" before the window, job "paint" of two layers gone from
// the live tables (one ran in two allocations, given more cores than it
// asked), job "live" whose layer still exists with tags of its own, and job
// "busy" whose only frame is still running.
func seedHistory(t *testing.T, pool *pgxpool.Pool) *history {
	t.Helper()
	ctx := context.Background()
	s, err := seed.Load(ctx, pool, &seed.Farm{
		Allocations: []seed.Allocation{{Name: "local.big", Tag: "big"}, {Name: "cloud.big", Tag: "big"}},
		Hosts: []seed.Host{
			{Name: "h1", Alloc: "local.general", Cores: 1600, Mem: 64 * gb},
			{Name: "h2", Alloc: "local.general", Cores: 1600, Mem: 64 * gb, ManualTags: []string{"fast"}},
			{Name: "h3", Alloc: "local.big", Cores: 3200, Mem: 128 * gb, ManualTags: []string{"fast"}},
			{Name: "h4", Alloc: "cloud.big", Cores: 800, Mem: 32 * gb},
		},
		Shows: []seed.Show{
			{Name: "alpha", Subscriptions: []seed.Subscription{{Alloc: "local.general", Size: 2000, Burst: 4000},
				{Alloc: "local.big", Size: 1000, Burst: 3000}}},
			{Name: "idle", Subscriptions: []seed.Subscription{{Alloc: "local.general", Size: 500, Burst: 500}}},
		},
	}, 3)
	if err != nil {
		t.Fatal(err)
	}
	var now int64
	if err := pool.QueryRow(ctx, `SELECT extract(epoch FROM now())::bigint`).Scan(&now); err != nil {
		t.Fatal(err)
	}
	// "live" is launched for its live layer; its history rows come from
	// Cuebot's launch triggers.
	live, err := s.Launch(ctx, seed.Job{Name: "live", Show: "alpha", Layers: []seed.Layer{{Name: "sim", Frames: 2,
		Cores: 200, Mem: 4 * gb, Tags: "Fast", Threadable: true, Services: "houdini, sim"}}})
	if err != nil {
		t.Fatal(err)
	}
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`UPDATE job_history SET int_ts_started = $2 WHERE pk_job = $1`, live.ID, now-2*3600)
	h := &history{now: now, want: map[string][]workload.Frame{}, tags: map[string][]string{}}
	job := func(name string, ago int64) string {
		id := s.NewID()
		exec(`INSERT INTO job_history (pk_job, pk_show, str_name, str_shot, str_user, pk_facility, pk_dept,
				int_ts_started, dt_last_modified)
			SELECT $1, $2, $3, 'shot', 'artist', pk_facility, pk_dept, $4, current_date FROM job WHERE pk_job = $5`,
			id, s.Shows["alpha"], name, now-ago, live.ID)
		return id
	}
	layer := func(jobID, name string, cores, mem int64) string {
		id := s.NewID()
		exec(`INSERT INTO layer_history (pk_layer, pk_job, str_name, str_type, int_cores_min, int_mem_min,
				str_services, dt_last_modified)
			VALUES ($1, $2, $3, 'Render', $4, $5, 'maya', current_date)`, id, jobID, name, cores, mem)
		return id
	}
	frames := func(jobID, layerID string, fs ...hist) {
		for _, f := range fs {
			id := s.NewID()
			for _, r := range f.runs {
				var alloc any
				if r.alloc != "" {
					alloc = s.Allocs[r.alloc]
				}
				stop := int64(0)
				if r.stop != 0 {
					stop = now - r.stop
				}
				exec(`INSERT INTO frame_history (pk_frame, pk_layer, pk_job, str_name, str_state, int_mem_reserved,
						int_mem_max_used, int_cores, int_exit_status, pk_alloc, int_ts_started, int_ts_stopped,
						dt_last_modified)
					VALUES ($1, $2, $3, $4, 'SUCCEEDED', $5, $6, $7, $8, $9, $10, $11, current_date)`,
					id, layerID, jobID, f.name, 4*gb, r.used, r.cores, r.exit, alloc, now-r.start, stop)
			}
		}
	}
	old := job("old", 8*24*3600)
	frames(old, layer(old, "render", 100, 2*gb), hist{"0001-render", []run{{8*24*3600 - 10, 8*24*3600 - 600, 100, gb, 0, "local.general"}}})

	paint := job("paint", 3*3600)
	// Frames are replayed in the order they first started, not by name.
	frames(paint, layer(paint, "render", 100, 2*gb),
		hist{"0002-render", []run{{3*3600 - 5, 3*3600 - 605, 100, gb, 0, "local.general"}}},
		hist{"0001-render", []run{
			{3*3600 - 10, 3*3600 - 310, 100, 3 * gb, 33, "local.general"}, // killed for its memory
			{3*3600 - 400, 3*3600 - 1300, 100, 3 * gb / 2, 0, "local.general"},
		}},
		hist{"0003-render", []run{{3*3600 - 20, 3*3600 - 1220, 100, 2 * gb, 0, "local.general"}}})
	frames(paint, layer(paint, "comp", 100, gb),
		hist{"0001-comp", []run{{3*3600 - 2000, 3*3600 - 2090, 200, gb / 2, 0, "local.general"}}},
		hist{"0002-comp", []run{{3*3600 - 2001, 3*3600 - 2001 - 45, 100, gb / 4, 0, "local.big"}}})
	// comp first ran later than render: it comes second.
	h.want["paint/render"] = []workload.Frame{{Runtime: 600 * time.Second, Used: gb},
		{Runtime: 900 * time.Second, Used: 3 * gb / 2}, {Runtime: 1200 * time.Second, Used: 2 * gb}}
	h.tags["paint/render"] = []string{"general"}
	h.want["paint/comp"] = []workload.Frame{{Runtime: 90 * time.Second, Used: gb / 2}, {Runtime: 45 * time.Second, Used: gb / 4}}
	h.tags["paint/comp"] = []string{"big", "general"}

	frames(live.ID, live.Layers["sim"],
		hist{"0001-sim", []run{{2*3600 - 30, 2*3600 - 30 - 1800, 200, 3 * gb, 0, "local.general"}}},
		hist{"0002-sim", []run{{2*3600 - 31, 2*3600 - 31 - 2400, 800, 5 * gb / 2, 1, "local.general"}}})
	h.want["live/sim"] = []workload.Frame{{Runtime: 1800 * time.Second, Used: 3 * gb},
		{Runtime: 2400 * time.Second, Used: 5 * gb / 2}}
	h.tags["live/sim"] = []string{"fast"} // the live layer's, not its frames' allocation's

	busy := job("busy", 3600)
	frames(busy, layer(busy, "render", 100, gb), hist{"0001-render", []run{{3000, 0, 100, 0, -1, "local.general"}}})
	return h
}

// A replay reproduces the seeded history: jobs of the window in arrival
// order, layers and frames in the order they ran, each frame's recorded
// duration and memory use, tags from the live layer or the allocations its
// frames ran in, the hosts and allocations as they are, the subscriptions
// of the shows replayed; the simulator then runs every frame once, for its
// recorded duration; a window without a finished frame is ErrEmpty. It
// does so as the database's owner with cuesched's
// migrations, and on a database holding only Cuebot's schema as a role
// that may SELECT only the tables a replay reads.
func TestReplayReproducesHistory(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		tpl  pgtest.Template
		role bool
	}{{"migrated", pgtest.Full, false}, {"cuebot only, select-only role", pgtest.Cuebot, true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := pgtest.NewDB(t, tc.tpl)
			h := seedHistory(t, db.Pool)
			pool := db.Pool
			if tc.role {
				role := db.NewRole(t, "replay", `CREATE ROLE %[1]s LOGIN NOSUPERUSER; GRANT SELECT ON `+
					strings.Join(replay.Tables, ", ")+` TO %[1]s`)
				var err error
				if pool, err = pgxpool.New(ctx, db.DSN+" user="+role); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(pool.Close)
			}
			got, err := replay.Read(ctx, pool, replay.Options{Since: 7 * 24 * time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			checkHistory(t, h, got)
			checkRun(t, got.Farm)
			// The last 90 minutes hold only busy, whose frame still runs.
			_, err = replay.Read(ctx, pool, replay.Options{Since: 90 * time.Minute})
			if !errors.Is(err, replay.ErrEmpty) || strings.Contains(err.Error(), "\n") {
				t.Errorf("a window of 90 minutes: %v, want ErrEmpty in one line", err)
			}
		})
	}
}

func checkHistory(t *testing.T, h *history, got *replay.History) {
	t.Helper()
	f := got.Farm
	var jobs []string
	for _, j := range f.Jobs {
		jobs = append(jobs, fmt.Sprintf("%s@%v", j.ID, j.Arrive))
		if j.Show != "alpha" || j.Facility != "local" || slices.ContainsFunc(j.Layers, func(l workload.Layer) bool { return l.After != -1 }) {
			t.Errorf("job %s: show %q, facility %q, layers %+v: want alpha, local, no dependencies", j.ID, j.Show, j.Facility, j.Layers)
		}
	}
	if want := []string{"paint@0s", "live@1h0m0s"}; !slices.Equal(jobs, want) {
		t.Errorf("jobs %v, want %v (old is before the window, busy's only frame still runs)", jobs, want)
	}
	seen := 0
	for _, j := range f.Jobs {
		for _, l := range j.Layers {
			key := j.ID + "/" + l.Name
			seen++
			if !slices.Equal(l.Frames, h.want[key]) {
				t.Errorf("%s: frames %+v, want %+v", key, l.Frames, h.want[key])
			}
			if !slices.Equal(l.Tags, h.tags[key]) {
				t.Errorf("%s: tags %q, want %q", key, l.Tags, h.tags[key])
			}
		}
	}
	if seen != len(h.want) || f.Jobs[0].Layers[0].Name != "render" {
		t.Errorf("%d layers replayed, want %d, paint's render first: %+v", seen, len(h.want), f.Jobs)
	}
	if comp := f.Jobs[0].Layers[1]; comp.Cores != 100 || comp.Mem != gb || !comp.Threadable || !slices.Equal(comp.Services, []string{"maya"}) {
		t.Errorf("paint/comp %+v: want 1 core, 1 GB, threadable (a frame ran on 2 cores), services maya", comp)
	}
	if render := f.Jobs[0].Layers[0]; render.Threadable {
		t.Errorf("paint/render threadable: none of its frames ran on more cores than it asked")
	}
	if sim := f.Jobs[1].Layers[0]; sim.Cores != 200 || sim.Mem != 4*gb || !sim.Threadable || !slices.Equal(sim.Services, []string{"houdini", "sim"}) {
		t.Errorf("live/sim %+v: want 2 cores, 4 GB, threadable, services houdini and sim", sim)
	}
	if f.Frames != 7 || got.Jobs != 2 || got.Layers != 3 || got.Attempts != 8 || got.MemoryKills != 1 || got.Running != 1 || got.Untagged != 0 {
		t.Errorf("frames %d, jobs %d, layers %d, runs %d, killed %d, running %d, untagged %d: want 7, 2, 3, 8, 1, 1, 0",
			f.Frames, got.Jobs, got.Layers, got.Attempts, got.MemoryKills, got.Running, got.Untagged)
	}
	if d := got.To.Sub(got.From); d != 7*24*time.Hour || !got.First.Equal(time.Unix(h.now-3*3600, 0)) {
		t.Errorf("window %v..%v, first %v: want 7 days, the first arrival paint's", got.From, got.To, got.First)
	}
	var hosts []string
	for _, x := range f.Hosts {
		hosts = append(hosts, fmt.Sprintf("%s %s/%s %d %d %q", x.ID, x.Facility, x.Alloc, x.Cores, x.Mem, x.Tags))
	}
	wantHosts := []string{
		`h1 local/local.general 1600 67108864 ["general" "h1"]`,
		`h2 local/local.general 1600 67108864 ["fast" "general" "h2"]`,
		`h3 local/local.big 3200 134217728 ["big" "fast" "h3"]`,
		`h4 cloud/cloud.big 800 33554432 ["big" "h4"]`,
	}
	if !slices.Equal(hosts, wantHosts) {
		t.Errorf("hosts:\n%s\nwant:\n%s", strings.Join(hosts, "\n"), strings.Join(wantHosts, "\n"))
	}
	if i := slices.IndexFunc(f.Allocs, func(a workload.Alloc) bool { return a.ID == "cloud.big" }); i < 0 ||
		f.Allocs[i] != (workload.Alloc{ID: "cloud.big", Facility: "cloud", Tag: "big"}) {
		t.Errorf("allocations %+v: want cloud.big of facility cloud, tagged big", f.Allocs)
	}
	want := []workload.Sub{{Show: "alpha", Alloc: "local.big", Size: 1000, Burst: 3000},
		{Show: "alpha", Alloc: "local.general", Size: 2000, Burst: 4000}}
	if !slices.Equal(f.Subs, want) {
		t.Errorf("subscriptions %+v, want %+v (the show idle has no job in the window)", f.Subs, want)
	}
}

// checkRun runs the farm in the simulator: with hosts to spare, every frame
// starts when its job arrives, runs once, and stops after its recorded
// duration.
func checkRun(t *testing.T, f *workload.Farm) {
	t.Helper()
	type key struct {
		job, layer string
		frame      int
	}
	runs := map[key][]sim.FrameRun{}
	rep, err := sim.RunFarm("replay", f, sim.Options{OnStop: func(r sim.FrameRun) {
		k := key{r.Job, r.Layer, r.Frame}
		runs[k] = append(runs[k], r)
	}}, []sim.Variant{{Label: "default", TagPressure: 0.5}})
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range f.Jobs {
		for _, l := range j.Layers {
			for i, fr := range l.Frames {
				rs := runs[key{j.ID, l.Name, i}]
				if len(rs) != 1 || rs[0].Killed || rs[0].Start != j.Arrive || rs[0].Stop-rs[0].Start != fr.Runtime {
					t.Errorf("%s/%s frame %d ran %+v: want once, from its job's arrival %v for %v", j.ID, l.Name, i, rs,
						j.Arrive, fr.Runtime)
				}
			}
		}
	}
	if res := rep.Variants[0]; len(runs) != f.Frames || res.FramesBooked != int64(f.Frames) || res.OOMKills != 0 || res.DrainS == nil {
		t.Errorf("%d frames ran, report %+v: want the %d frames booked once each, drained", len(runs), res, f.Frames)
	}
}
