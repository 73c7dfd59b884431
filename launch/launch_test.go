package launch

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/cuesched/cuesched/counters"
	"github.com/cuesched/cuesched/dispatch"
	rqdpb "github.com/cuesched/cuesched/internal/rqd"
	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/booktest"
	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/fakerqd"
)

// launchRig is a small farm with a fake RQD per host, a booker and a
// running launcher.
type launchRig struct {
	db      *booktest.Seeded
	farm    *fakerqd.Farm
	port    int
	rqd     *RQDClient
	booker  *dispatch.Booker
	l       *Launcher
	m       *Metrics
	settled *settledLog
}

func newLaunchRig(t *testing.T, hosts, frames int, callTimeout time.Duration, lcfg Config) *launchRig {
	t.Helper()
	r := &launchRig{db: booktest.LoadFarm(t, booktest.SmallFarm(hosts, 800, 1, 1, frames, 100)), settled: newSettledLog()}
	names := make([]string, hosts)
	for i := range names {
		names[i] = seedName(i)
	}
	r.farm, r.port = rqdFarm(t, names, fakerqd.Options{})
	r.rqd = newRQD(t, r.port, callTimeout)
	r.m = NewMetrics(nil)
	lcfg.Pool, lcfg.RQD, lcfg.OnSettled, lcfg.Metrics = r.db.Pool, r.rqd, r.settled.add, r.m
	r.l = runLauncher(t, lcfg)
	r.booker = newBooker(r.db.Pool, dispatch.BookerConfig{Launcher: r.l, HostAllowed: r.rqd.Allowed})
	return r
}

func (r *launchRig) server(host string) *fakerqd.Server {
	return r.farm.Server(host + ":" + itoa(r.port))
}

func (r *launchRig) book(ctx context.Context, t *testing.T) []dispatch.Booking {
	t.Helper()
	ps := booktest.FirstFit(booktest.ReadView(ctx, t, r.db.Pool), nil)
	res, err := r.booker.Book(ctx, testCluster, ps)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Booked) != len(ps) {
		t.Fatalf("booked %d of %d: %v", len(res.Booked), len(ps), res.Dropped)
	}
	return res.Booked
}

func outboxState(ctx context.Context, t *testing.T, r *launchRig, proc string) string {
	t.Helper()
	var st string
	err := r.db.Pool.QueryRow(ctx, `SELECT coalesce((SELECT state FROM cuesched.launch_outbox WHERE proc_id = $1), 'none')`, proc).Scan(&st)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Every kind of launch failure ends as DESIGN.md says, the audit stays
// clean, and a released frame is booked (and launched) again.
func TestLaunchFailures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		script   func(s *fakerqd.Server, frame string)
		stop     bool // the host's RQD is down: connection refused
		result   SettledResult
		reason   string
		kills    int  // kills the host received
		running  bool // the frame runs on the host at the end
		unsure   bool // ambiguous: killing goes on past the first try
		giveUpMs int
	}{
		{name: "accepted", result: SettledLaunched, running: true},
		{name: "connection refused", stop: true, result: SettledReleased, reason: "refused"},
		{name: "rqd refusal", script: func(s *fakerqd.Server, f string) {
			s.Script(f, fakerqd.Reply{Action: fakerqd.Refuse, Message: "Not launching, insufficient idle cores"})
		}, result: SettledReleased, reason: "refused"},
		{name: "already running", script: func(s *fakerqd.Server, f string) {
			s.Script(f, fakerqd.Reply{Action: fakerqd.Refuse, Code: codes.Unknown,
				Message: "Not launching, frame is already running on this proc " + f})
		}, result: SettledLaunched, reason: "already-running"},
		{name: "deadline after send, not started", script: func(s *fakerqd.Server, f string) {
			s.Script(f, fakerqd.Reply{Action: fakerqd.Hang})
		}, result: SettledReleased, reason: "killed", kills: 1},
		{name: "deadline after send, started", script: func(s *fakerqd.Server, f string) {
			s.Script(f, fakerqd.Reply{Action: fakerqd.Hang, TakesEffect: true})
		}, result: SettledReleased, reason: "killed", kills: 1},
		{name: "connection dropped after send", script: func(s *fakerqd.Server, f string) {
			s.Script(f, fakerqd.Reply{Action: fakerqd.Drop, TakesEffect: true})
		}, result: SettledReleased, reason: "killed", kills: 1},
		{name: "host unreachable for kills", script: func(s *fakerqd.Server, f string) {
			s.Script(f, fakerqd.Reply{Action: fakerqd.Hang, TakesEffect: true})
			s.ScriptKill(f, fakerqd.Reply{Action: fakerqd.Hang}, fakerqd.Reply{Action: fakerqd.Hang},
				fakerqd.Reply{Action: fakerqd.Hang}, fakerqd.Reply{Action: fakerqd.Hang})
		}, result: SettledReleased, reason: "unreachable", unsure: true, giveUpMs: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxFor(t, time.Minute)
			giveUp := time.Hour
			if tc.giveUpMs > 0 {
				giveUp = time.Duration(tc.giveUpMs) * time.Millisecond
			}
			// The call deadline is what the hanging cases wait; an answered
			// call on loopback takes far less, on a loaded machine too.
			r := newLaunchRig(t, 1, 1, time.Second, Config{KillRetry: time.Millisecond, KillGiveUp: giveUp})
			host := seedName(0)
			srv := r.server(host)
			ps := booktest.FirstFit(booktest.ReadView(ctx, t, r.db.Pool), nil)
			frame := ps[0].Frame.ID
			if tc.script != nil {
				tc.script(srv, frame)
			}
			if tc.stop {
				srv.Close()
			}
			bk := r.book(ctx, t)[0]
			got := r.settled.wait(ctx, t, 1)[0]
			if got.Result != tc.result || got.Reason != tc.reason || got.ProcID != bk.ProcID || got.FrameID != frame {
				t.Fatalf("settled %+v, want %s (%s) for proc %s", got, tc.result, tc.reason, bk.ProcID)
			}
			if !tc.stop {
				if n := len(srv.Kills()); n < tc.kills || !tc.unsure && n != tc.kills {
					t.Errorf("%d kills, want %d", n, tc.kills)
				}
				if srv.IsRunning(frame) != tc.running && tc.reason != "unreachable" {
					t.Errorf("frame running on the host: %v", srv.IsRunning(frame))
				}
			}
			switch tc.result {
			case SettledLaunched:
				if st := outboxState(ctx, t, r, bk.ProcID); st != "launched" {
					t.Errorf("outbox %s", st)
				}
			case SettledReleased:
				if got.LayerID != bk.Layer.ID || got.JobID != bk.Layer.JobID {
					t.Errorf("released event %+v", got)
				}
				var state string
				var exit, version int32
				if err := r.db.Pool.QueryRow(ctx, `SELECT str_state, int_exit_status, int_version FROM frame WHERE pk_frame = $1`,
					frame).Scan(&state, &exit, &version); err != nil {
					t.Fatal(err)
				}
				if state != "WAITING" || exit != 299 || version != bk.Version+1 {
					t.Errorf("frame %s exit %d version %d", state, exit, version)
				}
				if st := outboxState(ctx, t, r, bk.ProcID); st != "none" {
					t.Errorf("outbox row left: %s", st)
				}
				var history int
				if err := r.db.Pool.QueryRow(ctx, `SELECT count(*) FROM frame_history WHERE pk_frame = $1`, frame).Scan(&history); err != nil {
					t.Fatal(err)
				}
				if history != 0 {
					t.Errorf("%d frame_history rows for a cleared booking", history)
				}
				if n := counterValue(t, r.m.compensations.WithLabelValues(tc.reason)); n != 1 {
					t.Errorf("compensations metric %v", n)
				}
				audittest.Clean(t, r.db.Pool)

				// The released frame is bookable again and, now that the
				// host answers, launched.
				if tc.stop {
					return
				}
				if tc.reason == "unreachable" {
					srv.Complete(frame) // the frame the unreachable host ran has ended
				}
				again := r.book(ctx, t)[0]
				if again.Frame.ID != frame || again.Version != version+1 {
					t.Fatalf("booked again %+v", again)
				}
				if s := r.settled.wait(ctx, t, 2)[1]; s.Result != SettledLaunched || s.ProcID != again.ProcID {
					t.Fatalf("second launch %+v", s)
				}
				if !srv.IsRunning(frame) {
					t.Error("frame not running after the second launch")
				}
			}
			audittest.Clean(t, r.db.Pool)
		})
	}
}

// A host whose breaker is open is skipped: placements on it are dropped
// and bookings already made on it are released.
func TestLaunchBreakerOpen(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, time.Minute)
	r := newLaunchRig(t, 1, 2, 500*time.Millisecond, Config{})
	host := seedName(0)
	ps := booktest.FirstFit(booktest.ReadView(ctx, t, r.db.Pool), nil)
	// Open the breaker: three refusals from the host.
	for range defaultBreakerFailures {
		r.server(host).Script("x", fakerqd.Reply{Action: fakerqd.Refuse})
		r.rqd.Launch(ctx, host, runFrame("x"))
	}
	if r.rqd.Allowed(host) {
		t.Fatal("breaker closed")
	}
	// Booked before the breaker was known: released, never sent.
	plain := newBooker(r.db.Pool, dispatch.BookerConfig{Launcher: r.l})
	res, err := plain.Book(ctx, testCluster, ps[:1])
	if err != nil || len(res.Booked) != 1 {
		t.Fatalf("%v %+v", err, res)
	}
	if s := r.settled.wait(ctx, t, 1)[0]; s.Result != SettledReleased || s.Reason != "breaker" {
		t.Fatalf("%+v", s)
	}
	// Booked by a booker that asks the breaker: dropped.
	res, err = r.booker.Book(ctx, testCluster, ps[1:])
	if err != nil || len(res.Booked) != 0 || len(res.Dropped) != 1 || res.Dropped[0].Reason != dispatch.DropHostBreaker {
		t.Fatalf("%v %+v", err, res)
	}
	if n := len(r.server(host).Launches()); n != defaultBreakerFailures {
		t.Errorf("%d launches reached the host", n)
	}
	audittest.Clean(t, r.db.Pool)
}

// A booking whose proc Cuebot released before the launch is not launched.
func TestLaunchGone(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, time.Minute)
	db := booktest.LoadFarm(t, booktest.SmallFarm(1, 800, 1, 1, 1, 100))
	b := newBooker(db.Pool, dispatch.BookerConfig{})
	res, err := b.Book(ctx, testCluster, booktest.FirstFit(booktest.ReadView(ctx, t, db.Pool), nil))
	if err != nil || len(res.Booked) != 1 {
		t.Fatalf("%v %+v", err, res)
	}
	sim := &cuebotsim.Sim{Pool: db.Pool}
	if err := sim.StopFrame(ctx, res.Booked[0].Frame.ID, "DEAD", 1); err != nil {
		t.Fatal(err)
	}
	farm, port := rqdFarm(t, []string{seedName(0)}, fakerqd.Options{})
	settled := newSettledLog()
	l := runLauncher(t, Config{Pool: db.Pool, RQD: newRQD(t, port, time.Second), OnSettled: settled.add})
	l.Submit(res.Booked)
	if s := settled.wait(ctx, t, 1)[0]; s.Result != SettledGone {
		t.Fatalf("%+v", s)
	}
	if farm.Launches() != 0 {
		t.Fatal("launched a frame Cuebot had stopped")
	}
	// Cuebot's second release transaction deletes the proc and, with it,
	// the outbox row.
	if err := sim.DeleteProc(ctx, res.Booked[0].ProcID); err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM cuesched.launch_outbox`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 0 {
		t.Fatalf("%d outbox rows after the proc went", rows)
	}
	if err := recomputeAll(ctx, db); err != nil {
		t.Fatal(err)
	}
	audittest.Clean(t, db.Pool)
}

// A process killed between commit and launch leaves pending rows; the next
// start resolves them: each booked frame launched exactly once, or released.
func TestResolveAfterCrash(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, time.Minute)
	db := booktest.LoadFarm(t, booktest.SmallFarm(3, 800, 2, 2, 5, 100))
	names := []string{seedName(0), seedName(1), seedName(2)}
	farm, port := rqdFarm(t, names, fakerqd.Options{})
	rqd := newRQD(t, port, 500*time.Millisecond)

	// The crashed instance: its launch pool never ran.
	crashed := New(Config{Pool: db.Pool, RQD: rqd, Logger: quiet})
	b := newBooker(db.Pool, dispatch.BookerConfig{Launcher: crashed})
	ps := booktest.FirstFit(booktest.ReadView(ctx, t, db.Pool), nil)
	res, err := b.Book(ctx, testCluster, ps)
	if err != nil || len(res.Booked) != 20 {
		t.Fatalf("%v booked %d", err, len(res.Booked))
	}
	if farm.Launches() != 0 {
		t.Fatal("the crashed launcher launched")
	}
	// One host refuses its first frame: that booking is released instead.
	refused := res.Booked[0]
	farm.Server(refused.HostName+":"+itoa(port)).Script(refused.Frame.ID, fakerqd.Reply{Action: fakerqd.Refuse})
	// One row was unsure (sent, no verdict) when the process died: it is
	// killed, then released.
	unsure := res.Booked[1]
	if _, err := db.Pool.Exec(ctx, `UPDATE cuesched.launch_outbox SET state = 'unsure' WHERE proc_id = $1`, unsure.ProcID); err != nil {
		t.Fatal(err)
	}

	settled := newSettledLog()
	next := runLauncher(t, Config{Pool: db.Pool, RQD: rqd, OnSettled: settled.add, KillRetry: time.Millisecond})
	n, err := next.Resolve(ctx, []int32{testCluster.ID + 1})
	if err != nil || n != 0 {
		t.Fatalf("another cluster's rows: %d %v", n, err)
	}
	n, err = next.Resolve(ctx, []int32{testCluster.ID})
	if err != nil || n != 20 {
		t.Fatalf("resolved %d: %v", n, err)
	}
	// Resolving again while they are in flight queues nothing twice.
	if n, err := next.Resolve(ctx, []int32{testCluster.ID}); err != nil || n != 0 {
		t.Fatalf("resolved again: %d %v", n, err)
	}
	all := settled.wait(ctx, t, 20)
	results := map[string]Settled{}
	for _, s := range all {
		if _, dup := results[s.ProcID]; dup {
			t.Errorf("proc %s settled twice", s.ProcID)
		}
		results[s.ProcID] = s
	}
	launches := map[string]int{}
	for _, s := range farm.Servers() {
		for _, l := range s.Launches() {
			launches[l.Frame.GetFrameId()]++
		}
	}
	for _, bk := range res.Booked {
		s := results[bk.ProcID]
		switch bk.ProcID {
		case refused.ProcID:
			if s.Result != SettledReleased || s.Reason != "refused" || launches[bk.Frame.ID] != 1 {
				t.Errorf("refused booking: %+v, %d launches", s, launches[bk.Frame.ID])
			}
		case unsure.ProcID:
			if s.Result != SettledReleased || s.Reason != "killed" || launches[bk.Frame.ID] != 0 {
				t.Errorf("unsure booking: %+v, %d launches", s, launches[bk.Frame.ID])
			}
		default:
			if s.Result != SettledLaunched || launches[bk.Frame.ID] != 1 {
				t.Errorf("booking of %s: %+v, %d launches", bk.Frame.Name, s, launches[bk.Frame.ID])
			}
		}
	}
	var pending, launched int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state IN ('pending', 'unsure')),
			count(*) FILTER (WHERE state = 'launched') FROM cuesched.launch_outbox`).Scan(&pending, &launched); err != nil {
		t.Fatal(err)
	}
	if pending != 0 || launched != 18 {
		t.Errorf("outbox: %d unresolved, %d launched", pending, launched)
	}
	audittest.Clean(t, db.Pool)
}

// recomputeAll brings every counter of the managed shows back to SUM(proc),
// as the host cache issue will after Cuebot's releases.
func recomputeAll(ctx context.Context, db *booktest.Seeded) error {
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	var shows []string
	for _, id := range db.Seeded.Shows {
		shows = append(shows, id)
	}
	if _, err := counters.RecomputeShows(ctx, tx, shows); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// A launch that goes unanswered after another instance has launched the
// same booking (a stopped owner woken after its peer took the cluster over
// and relaunched its outbox rows) is settled as launched: the frame runs
// under this booking, so it is neither killed nor released.
func TestUnansweredLaunchOfABookingLaunchedElsewhere(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, time.Minute)
	r := newLaunchRig(t, 1, 1, 2*time.Second, Config{KillRetry: time.Millisecond, KillGiveUp: time.Hour})
	host := seedName(0)
	srv := r.server(host)
	bs := r.book(ctx, t)
	srv.Script(bs[0].Frame.ID, fakerqd.Reply{Action: fakerqd.Hang})
	r.l.Submit(bs)
	if err := srv.WaitLaunches(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// The peer's relaunch, accepted and recorded while this call hangs.
	if _, err := r.db.Pool.Exec(ctx, `UPDATE cuesched.launch_outbox SET state = 'launched' WHERE proc_id = $1`,
		bs[0].ProcID); err != nil {
		t.Fatal(err)
	}
	s := r.settled.wait(ctx, t, 1)[0]
	if s.Result != SettledLaunched || s.Reason != "launched-elsewhere" {
		t.Errorf("settled %+v, want launched (launched-elsewhere)", s)
	}
	if ks := srv.Kills(); len(ks) != 0 {
		t.Errorf("killed a frame its booking's other launch runs: %+v", ks)
	}
	if st := outboxState(ctx, t, r, bs[0].ProcID); st != "launched" {
		t.Errorf("outbox state %s, want launched", st)
	}
}

// waitStatuses waits until srv answered at least n ReportStatus calls.
func waitStatuses(ctx context.Context, t *testing.T, srv *fakerqd.Server, n int) {
	t.Helper()
	for srv.Statuses() < n {
		select {
		case <-ctx.Done():
			t.Fatalf("%d status calls, want %d", srv.Statuses(), n)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// A booking the previous owner sent before it died, whose frame ran to its
// end with its completion report still on its way to Cuebot: RQD no longer
// runs it, and would run it again if asked. The next owner asks RQD first
// and, the frame not running, waits for the report (ReportGrace) before
// launching; the completion recorded meanwhile ends the booking, and the
// frame is not launched again.
func TestInheritedBookingThatRanToItsEndIsNotLaunchedAgain(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, time.Minute)
	db := booktest.LoadFarm(t, booktest.SmallFarm(1, 800, 1, 1, 1, 100))
	farm, port := rqdFarm(t, []string{seedName(0)}, fakerqd.Options{})
	rqd := newRQD(t, port, time.Second)
	crashed := New(Config{Pool: db.Pool, RQD: rqd, Logger: quiet})
	res, err := newBooker(db.Pool, dispatch.BookerConfig{Launcher: crashed}).Book(ctx, testCluster,
		booktest.FirstFit(booktest.ReadView(ctx, t, db.Pool), nil))
	if err != nil || len(res.Booked) != 1 {
		t.Fatalf("%v booked %d", err, len(res.Booked))
	}
	b := res.Booked[0]
	srv := farm.Server(b.HostName + ":" + itoa(port))

	settled := newSettledLog()
	next := runLauncher(t, Config{Pool: db.Pool, RQD: rqd, OnSettled: settled.add, KillRetry: 5 * time.Millisecond,
		ReportGrace: time.Hour})
	if n, err := next.Resolve(ctx, []int32{testCluster.ID}); err != nil || n != 1 {
		t.Fatalf("resolved %d: %v", n, err)
	}
	waitStatuses(ctx, t, srv, 1)
	// The report arrives: Cuebot records the completion.
	if err := (&cuebotsim.Sim{Pool: db.Pool, Counters: cuebotsim.CuebotCounters}).Succeed(ctx, b.Frame.ID); err != nil {
		t.Fatal(err)
	}
	if s := settled.wait(ctx, t, 1)[0]; s.Result != SettledGone {
		t.Errorf("settled %+v, want gone", s)
	}
	if ls := srv.Launches(); len(ls) != 0 {
		t.Errorf("the frame that ran to its end was launched again: %d launches", len(ls))
	}
	audittest.Clean(t, db.Pool)
}

// An inherited booking whose frame RQD runs under the booking's own proc is
// kept at once, without waiting for a report and without launching it
// again: were the frame to end between RQD's status and a relaunch, RQD
// would accept the relaunch and the frame would run twice.
func TestInheritedBookingRunningIsKeptAtOnce(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, time.Minute)
	db := booktest.LoadFarm(t, booktest.SmallFarm(1, 800, 1, 1, 1, 100))
	farm, port := rqdFarm(t, []string{seedName(0)}, fakerqd.Options{})
	rqd := newRQD(t, port, time.Second)
	crashed := New(Config{Pool: db.Pool, RQD: rqd, Logger: quiet})
	res, err := newBooker(db.Pool, dispatch.BookerConfig{Launcher: crashed}).Book(ctx, testCluster,
		booktest.FirstFit(booktest.ReadView(ctx, t, db.Pool), nil))
	if err != nil || len(res.Booked) != 1 {
		t.Fatalf("%v booked %d", err, len(res.Booked))
	}
	b := res.Booked[0]
	srv := farm.Server(b.HostName + ":" + itoa(port))
	// The dead owner's launch, accepted: the frame runs.
	if _, err := srv.LaunchFrame(ctx, &rqdpb.RqdStaticLaunchFrameRequest{RunFrame: &rqdpb.RunFrame{
		ResourceId: b.ProcID, FrameId: b.Frame.ID, NumCores: 100}}); err != nil {
		t.Fatal(err)
	}
	settled := newSettledLog()
	next := runLauncher(t, Config{Pool: db.Pool, RQD: rqd, OnSettled: settled.add, ReportGrace: time.Hour})
	if n, err := next.Resolve(ctx, []int32{testCluster.ID}); err != nil || n != 1 {
		t.Fatalf("resolved %d: %v", n, err)
	}
	if s := settled.wait(ctx, t, 1)[0]; s.Result != SettledLaunched || s.Reason != "already-running" {
		t.Errorf("settled %+v, want launched (already-running)", s)
	}
	if ls := srv.Launches(); len(ls) != 1 || !srv.IsRunning(b.Frame.ID) {
		t.Errorf("%d launches, running %v; want the dead owner's launch alone and the frame running", len(ls), srv.Running())
	}
	audittest.Clean(t, db.Pool)
}

// A launch that went unanswered while RQD ran the frame, which then ran to
// its end with its completion report on its way: the kill finds nothing,
// and the booking is released only after ReportGrace, so the completion
// recorded meanwhile wins; releasing at once would put the frame back to
// WAITING to run a second time.
func TestUnansweredLaunchThatRanToItsEndIsNotReleased(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, time.Minute)
	logs := newLogWatch()
	r := newLaunchRig(t, 1, 1, 300*time.Millisecond, Config{KillRetry: 5 * time.Millisecond, KillGiveUp: time.Hour,
		ReportGrace: time.Hour, Logger: slog.New(logs)})
	srv := r.server(seedName(0))
	bs := r.book(ctx, t)
	srv.Script(bs[0].Frame.ID, fakerqd.Reply{Action: fakerqd.Hang, TakesEffect: true, CompleteAfter: time.Millisecond})
	r.l.Submit(bs)
	logs.wait(ctx, t, "frame not running after a launch with no verdict; waiting for its completion report")
	if err := (&cuebotsim.Sim{Pool: r.db.Pool, Counters: cuebotsim.CuebotCounters}).Succeed(ctx, bs[0].Frame.ID); err != nil {
		t.Fatalf("Cuebot records the completion: %v", err)
	}
	if s := r.settled.wait(ctx, t, 1)[0]; s.Result != SettledGone {
		t.Errorf("settled %+v, want gone", s)
	}
	if ls := srv.Launches(); len(ls) != 1 {
		t.Errorf("%d launches, want 1", len(ls))
	}
	audittest.Clean(t, r.db.Pool)
}
