package reservation_test

import (
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/dispatch"
	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/booktest"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/match/matchtest"
	"github.com/cuesched/cuesched/reservation"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// newCluster adds a cluster row (reservations belong to one) and returns
// its id.
func newCluster(t *testing.T, pool *pgxpool.Pool, key string) int32 {
	t.Helper()
	var id int32
	if err := pool.QueryRow(t.Context(), `INSERT INTO cuesched.cluster (key, kind, facility, bucket)
		VALUES ($1, 2, 'local', 0) RETURNING id`, key).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// refusing is a fence that fails, as ownership's does for a cluster owned
// by another instance now.
type refusing struct{}

var errFenced = errors.New("fenced")

func (refusing) Queue(b *pgx.Batch, clusterID int32) {
	b.Queue(`SELECT 1`).QueryRow(func(pgx.Row) error { return errFenced })
}

func hosts(rs []match.Reservation) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Host+":"+r.Layer)
	}
	slices.Sort(out)
	return out
}

// A cluster's owner writes its reservations and reads them back; a host
// another cluster holds stays its; a write behind a fence that fails
// leaves the rows as they were.
func TestSaveLoadAll(t *testing.T) {
	t.Parallel()
	db := booktest.LoadFarm(t, booktest.SmallFarm(3, 1600, 1, 1, 1, 100))
	ctx := t.Context()
	v := booktest.ReadView(ctx, t, db.Pool)
	h := func(i int) match.Host { return v.Hosts[i] }
	c1, c2 := newCluster(t, db.Pool, "t1"), newCluster(t, db.Pool, "t2")
	s := reservation.New(db.Pool, nil)
	start := time.Date(2026, 1, 1, 1, 0, 0, 0, time.UTC)
	one := []match.Reservation{
		{Layer: "wide", LayerName: "job/wide", Host: h(0).ID, HostName: h(0).Name, Start: start},
		{Layer: "wide", LayerName: "job/wide", Host: h(1).ID, HostName: h(1).Name},
	}
	if err := s.Save(ctx, c1, 1, 3, one); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx, c1)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[0].Start.Equal(start) && !got[1].Start.Equal(start) || got[0].Made.IsZero() {
		t.Fatalf("loaded %+v", got)
	}
	// Another cluster's owner cannot take h(0); h(2) is its.
	two := []match.Reservation{{Layer: "other", LayerName: "o", Host: h(0).ID, HostName: h(0).Name},
		{Layer: "other", LayerName: "o", Host: h(2).ID, HostName: h(2).Name}}
	if err := s.Save(ctx, c2, 2, 1, two); err != nil {
		t.Fatal(err)
	}
	all, err := s.All(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{h(0).ID + ":wide", h(1).ID + ":wide", h(2).ID + ":other"}; !slices.Equal(hosts(all), sorted(want)) {
		t.Errorf("all %v, want %v", hosts(all), sorted(want))
	}
	// The owner drops h(1): its row goes.
	if err := s.Save(ctx, c1, 1, 3, one[:1]); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Load(ctx, c1); len(got) != 1 || got[0].Host != h(0).ID {
		t.Errorf("after dropping h1: %+v", got)
	}
	// Fenced: nothing written.
	if err := reservation.New(db.Pool, refusing{}).Save(ctx, c1, 9, 9, nil); !errors.Is(err, errFenced) {
		t.Errorf("a fenced write: %v, want the fence's error", err)
	}
	if got, _ := s.Load(ctx, c1); len(got) != 1 {
		t.Errorf("after a fenced write: %+v", got)
	}
}

func sorted(s []string) []string {
	slices.Sort(s)
	return s
}

// A reservation written by one cluster's owner is honoured by another
// instance: its matching (reading every reservation) leaves the reserved
// host to the reserving layer, and its booking's re-check refuses another
// layer's frame there unless it is a backfill ending before the start,
// while the reserving layer books it. The audit finds nothing wrong.
func TestHonouredByASecondInstance(t *testing.T) {
	t.Parallel()
	db := booktest.LoadFarm(t, booktest.SmallFarm(2, 1600, 1, 2, 2, 100))
	ctx := t.Context()
	v := booktest.ReadView(ctx, t, db.Pool)
	var wide, narrow *match.Layer
	for _, l := range v.Layers {
		switch l.Name {
		case "l0":
			wide = l
		case "l1":
			narrow = l
		}
	}
	caps := matchtest.NewCaps()
	caps.Subs[matchtest.SubKey{Show: narrow.ShowID, Alloc: v.Hosts[0].Alloc}] = match.Subscription{Size: 1 << 20, Burst: 1 << 20}
	offered := slices.Clone(v.Hosts)
	for i := range offered { // the view reads no host report: as the cache offers them
		offered[i].MemFree, offered[i].TempFree, offered[i].TempTotal = offered[i].Idle.Mem, 1<<30, 1<<30
	}
	plan := func(resv []match.Reservation) []match.Placement {
		return match.Plan([]*match.Layer{narrow}, matchtest.NewHosts(offered), caps,
			match.Options{Now: time.Now(), Order: match.OrderStrict, Reservations: match.NewReservationSet(resv)}).Placements
	}
	// Without reservations best fit puts both of l1's frames on one host,
	// h0; the first instance, owner of cluster a, reserves that host for
	// l0 from an hour on.
	ps := plan(nil)
	if len(ps) != 2 || ps[0].Host.ID != ps[1].Host.ID {
		t.Fatalf("without reservations: %v", ps)
	}
	h0, h1 := ps[0].Host, v.Hosts[0]
	if h1.ID == h0.ID {
		h1 = v.Hosts[1]
	}
	ca := newCluster(t, db.Pool, "a")
	var start time.Time
	if err := db.Pool.QueryRow(ctx, `SELECT now() + interval '1 hour'`).Scan(&start); err != nil {
		t.Fatal(err)
	}
	if err := reservation.New(db.Pool, nil).Save(ctx, ca, 1, 1, []match.Reservation{
		{Layer: wide.ID, LayerName: wide.Name, Host: h0.ID, HostName: h0.Name, Start: start}}); err != nil {
		t.Fatal(err)
	}

	// The second instance's matching reads every reservation: l1's frames
	// (run unknown) go to h1.
	all, err := reservation.New(db.Pool, nil).All(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ps = plan(all)
	if len(ps) != 2 {
		t.Fatalf("placed %d frames of l1, want 2", len(ps))
	}
	for _, p := range ps {
		if p.Host.ID != h1.ID || p.Use != match.UseNone {
			t.Errorf("l1's frame %s on %s (use %d), want %s", p.Frame.Name, p.Host.Name, p.Use, h1.Name)
		}
	}

	// Its booking's re-check, for a cluster it owns: l1's frame on h0 is
	// dropped; l0's books (honoured); l1's second frame, expected to run 10
	// minutes, ends before the start and books as a backfill.
	b := dispatch.NewBooker(dispatch.BookerConfig{Pool: db.Pool,
		Logger: slog.New(slog.DiscardHandler)})
	cb := dispatch.Cluster{ID: newCluster(t, db.Pool, "b"), Key: cluster.Key{Kind: cluster.KindTags, Facility: "local"}}
	place := func(l *match.Layer, f int) match.Placement {
		return match.Placement{Layer: l, Frame: l.Frames[f], Host: h0, Size: l.Min}
	}
	br, err := b.Book(ctx, cb, []match.Placement{place(narrow, 0), place(wide, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if len(br.Booked) != 1 || br.Booked[0].Layer != wide || len(br.Dropped) != 1 ||
		br.Dropped[0].Reason != dispatch.DropReserved {
		t.Fatalf("booked %v, dropped %v: want l0 booked and l1 dropped as reserved", br.Booked, br.Dropped)
	}
	backfill := *narrow
	backfill.Runs.Layer = 10 * time.Minute
	br, err = b.Book(ctx, cb, []match.Placement{{Layer: &backfill, Frame: narrow.Frames[1], Host: h0, Size: narrow.Min}})
	if err != nil {
		t.Fatal(err)
	}
	if len(br.Booked) != 1 || len(br.Dropped) != 0 {
		t.Fatalf("the backfill: booked %v, dropped %v", br.Booked, br.Dropped)
	}
	audittest.Clean(t, db.Pool)
}

// hostList is reservation.Hosts over a view's hosts.
type hostList []match.Host

func (l hostList) AllHosts(facility, tag string, visit func(match.Host) bool) {
	for _, h := range l {
		if h.Facility == facility && slices.Contains(h.Tags, tag) && !visit(h) {
			return
		}
	}
}

func (l hostList) Host(id string) (match.Host, bool) {
	i := slices.IndexFunc(l, func(h match.Host) bool { return h.ID == id })
	if i < 0 {
		return match.Host{}, false
	}
	return l[i], true
}

// The frames running on hosts, as planning reads them: each proc's size,
// when it was booked, and the mean run of its layer's finished frames, else
// its job's.
func TestRunningReadsTheProcs(t *testing.T) {
	t.Parallel()
	db := booktest.LoadFarm(t, booktest.SmallFarm(2, 1600, 1, 2, 2, 200))
	ctx := t.Context()
	v := booktest.ReadView(ctx, t, db.Pool)
	ps := booktest.FirstFit(v, nil) // every frame on the first host
	b := dispatch.NewBooker(dispatch.BookerConfig{Pool: db.Pool, Logger: slog.New(slog.DiscardHandler)})
	if br, err := b.Book(ctx, dispatch.Cluster{ID: newCluster(t, db.Pool, "a")}, ps); err != nil || len(br.Booked) != 4 {
		t.Fatalf("booked %v: %v", br.Booked, err)
	}
	l0 := ps[0].Layer
	if _, err := db.Pool.Exec(ctx, `UPDATE layer_usage SET int_clock_time_success = 1800, int_frame_success_count = 3
		WHERE pk_layer = $1`, l0.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO job_usage (pk_job_usage, pk_job, int_clock_time_success, int_frame_success_count)
		VALUES ($1, $1, 7200, 4) ON CONFLICT (pk_job) DO UPDATE SET int_clock_time_success = 7200, int_frame_success_count = 4`,
		l0.JobID); err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Minute)
	x := reservation.NewReader(db.Pool, hostList(v.Hosts)).Running(ctx)
	var visited []string
	x.AllHosts(v.Hosts[0].Facility, "gen", func(h match.Host) bool { visited = append(visited, h.ID); return true })
	if len(visited) != 2 {
		t.Fatalf("visited %v", visited)
	}
	got := x.Procs(ps[0].Host.ID)
	runs := map[time.Duration]int{}
	for _, p := range got {
		if p.Size.Cores != 200 || p.Size.Mem != ps[0].Size.Mem || p.Started.Before(before) {
			t.Errorf("proc %+v", p)
		}
		runs[p.Run]++
	}
	// l0's two frames: its own mean, 10 minutes; l1's: the job's, 30.
	if len(got) != 4 || runs[10*time.Minute] != 2 || runs[30*time.Minute] != 2 || x.Err() != nil {
		t.Errorf("procs %+v (err %v): want two of 10m and two of 30m", got, x.Err())
	}
	if other := x.Procs(v.Hosts[1].ID); len(other) != 0 {
		t.Errorf("the idle host runs %+v", other)
	}
	audittest.Clean(t, db.Pool)
}
