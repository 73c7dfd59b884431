package fakerqd

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/cuesched/cuesched/internal/rqd"
)

func startServer(t *testing.T, opts Options) (*Server, rqd.RqdInterfaceClient) {
	t.Helper()
	s, err := Start("127.0.0.1:0", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	cc, err := grpc.NewClient("passthrough:///"+s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return s, rqd.NewRqdInterfaceClient(cc)
}

func frame(id string, cores int32) *rqd.RqdStaticLaunchFrameRequest {
	return &rqd.RqdStaticLaunchFrameRequest{RunFrame: &rqd.RunFrame{FrameId: id, ResourceId: "proc-" + id, NumCores: cores, LogDir: "/tmp"}}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestLaunchAndAlreadyRunning(t *testing.T) {
	s, c := startServer(t, Options{})
	ctx := ctxT(t)
	if _, err := c.LaunchFrame(ctx, frame("f1", 100)); err != nil {
		t.Fatal(err)
	}
	_, err := c.LaunchFrame(ctx, frame("f1", 100))
	if st := status.Convert(err); st.Code() != codes.Unknown || st.Message() != "Not launching, frame is already running on this proc f1" {
		t.Fatalf("second launch: %v", err)
	}
	ls := s.Launches()
	if len(ls) != 2 || ls[0].Frame.GetResourceId() != "proc-f1" || ls[0].Code != codes.OK || ls[1].Code != codes.Unknown {
		t.Fatalf("launches %+v", ls)
	}
	if got := s.Running(); !slices.Equal(got, []string{"f1"}) {
		t.Fatalf("running %v", got)
	}
}

func TestRQDChecks(t *testing.T) {
	_, rc := startServer(t, Options{Cores: 300})
	ctx := ctxT(t)
	uid0 := frame("u", 100)
	uid0.RunFrame.UidOptional = &rqd.RunFrame_Uid{Uid: 0}
	for _, c := range []struct {
		req  *rqd.RqdStaticLaunchFrameRequest
		code codes.Code
	}{
		{frame("a", 0), codes.Unknown},   // numCores must be > 0
		{uid0, codes.Unknown},            // will not run as uid=0
		{frame("b", 200), codes.OK},      // fits
		{frame("c", 200), codes.Unknown}, // insufficient idle cores
		{frame("d", 100), codes.OK},      // fits beside b
	} {
		if _, err := rc.LaunchFrame(ctx, c.req); status.Code(err) != c.code {
			t.Errorf("frame %s: %v, want %v", c.req.RunFrame.FrameId, err, c.code)
		}
	}
}

// cli sends one launch through a fresh client of s.
func cli(req *rqd.RqdStaticLaunchFrameRequest, ctx context.Context, s *Server, t *testing.T) (*rqd.RqdStaticLaunchFrameResponse, error) {
	cc, err := grpc.NewClient("passthrough:///"+s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	return rqd.NewRqdInterfaceClient(cc).LaunchFrame(ctx, req)
}

func TestScriptOrder(t *testing.T) {
	s, c := startServer(t, Options{})
	ctx := ctxT(t)
	s.Script("", Reply{Action: Refuse, Message: "general"})
	s.Script("f2", Reply{Action: Refuse, Message: "for f2", Code: codes.FailedPrecondition})
	_, err := c.LaunchFrame(ctx, frame("f2", 100))
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition || st.Message() != "for f2" {
		t.Fatalf("f2: %v", err)
	}
	_, err = c.LaunchFrame(ctx, frame("f1", 100))
	if st := status.Convert(err); st.Code() != codes.Unknown || st.Message() != "general" {
		t.Fatalf("f1: %v", err)
	}
	if _, err := c.LaunchFrame(ctx, frame("f1", 100)); err != nil {
		t.Fatalf("f1 again: %v", err)
	}
	s.SetDefault(Reply{Action: Refuse})
	if _, err := c.LaunchFrame(ctx, frame("f3", 100)); status.Code(err) != codes.Unknown {
		t.Fatalf("f3 with a refusing default: %v", err)
	}
}

func TestHangUntilDeadline(t *testing.T) {
	s, c := startServer(t, Options{})
	s.Script("f1", Reply{Action: Hang, TakesEffect: true})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.LaunchFrame(ctx, frame("f1", 100))
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("hang: %v", err)
	}
	if !s.IsRunning("f1") {
		t.Fatal("a hang that takes effect must start the frame")
	}
}

func TestDropConnection(t *testing.T) {
	s, c := startServer(t, Options{})
	s.Script("f1", Reply{Action: Drop})
	_, err := c.LaunchFrame(ctxT(t), frame("f1", 100))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("drop: %v", err)
	}
	if s.IsRunning("f1") {
		t.Fatal("a drop without effect started the frame")
	}
	// The client reconnects and the next call goes through.
	if _, err := c.LaunchFrame(ctxT(t), frame("f1", 100)); err != nil {
		t.Fatalf("after drop: %v", err)
	}
}

func TestKill(t *testing.T) {
	s, c := startServer(t, Options{})
	ctx := ctxT(t)
	if _, err := c.LaunchFrame(ctx, frame("f1", 100)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.KillRunningFrame(ctx, &rqd.RqdStaticKillRunningFrameRequest{FrameId: "f1"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("kill without a reason: %v", err)
	}
	if _, err := c.KillRunningFrame(ctx, &rqd.RqdStaticKillRunningFrameRequest{FrameId: "f1", Message: "why"}); err != nil {
		t.Fatalf("kill: %v", err)
	}
	if s.IsRunning("f1") {
		t.Fatal("killed frame still running")
	}
	if _, err := c.KillRunningFrame(ctx, &rqd.RqdStaticKillRunningFrameRequest{FrameId: "f1", Message: "why"}); status.Code(err) != codes.NotFound {
		t.Fatalf("kill of a frame not running: %v", err)
	}
	ks := s.Kills()
	if len(ks) != 3 || !ks[1].WasRunning || ks[2].WasRunning || ks[1].Message != "why" {
		t.Fatalf("kills %+v", ks)
	}

	py, pc := startServer(t, Options{PythonKill: true})
	if _, err := pc.KillRunningFrame(ctx, &rqd.RqdStaticKillRunningFrameRequest{FrameId: "nope"}); err != nil {
		t.Fatalf("python kill of a frame not running: %v", err)
	}
	if err := py.WaitKills(ctx, 1); err != nil {
		t.Fatal(err)
	}
}

func TestCompletion(t *testing.T) {
	done := make(chan string, 2)
	s, c := startServer(t, Options{
		CompleteAfter: time.Millisecond,
		OnComplete:    func(addr string, rf *rqd.RunFrame) { done <- rf.GetFrameId() },
	})
	ctx := ctxT(t)
	if _, err := c.LaunchFrame(ctx, frame("f1", 100)); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-done:
		if id != "f1" {
			t.Fatalf("completed %s", id)
		}
	case <-ctx.Done():
		t.Fatal("no completion")
	}
	if err := s.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	// Relaunching a completed frame works.
	if _, err := c.LaunchFrame(ctx, frame("f1", 100)); err != nil {
		t.Fatal(err)
	}
	<-done
}

// A launch's own CompleteAfter overrides the server's.
func TestCompleteAfterPerLaunch(t *testing.T) {
	done := make(chan string, 2)
	s, c := startServer(t, Options{
		CompleteAfter: time.Hour,
		OnComplete:    func(addr string, rf *rqd.RunFrame) { done <- rf.GetFrameId() },
	})
	s.Script("f1", Reply{Action: Accept, CompleteAfter: time.Millisecond})
	ctx := ctxT(t)
	if _, err := c.LaunchFrame(ctx, frame("f1", 100)); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-done:
		if id != "f1" {
			t.Fatalf("completed %s", id)
		}
	case <-ctx.Done():
		t.Fatal("no completion")
	}
}

// Options.RunTime gives each launch its own run, by what RunFrame says
// (a test's drawn durations, by job and frame name); a launch's script
// still comes first, and a RunTime of 0 leaves Options.CompleteAfter.
func TestRunTimePerFrame(t *testing.T) {
	done := make(chan string, 3)
	s, c := startServer(t, Options{
		CompleteAfter: time.Hour,
		RunTime: func(rf *rqd.RunFrame) time.Duration {
			if rf.GetFrameName() == "0001-fast" {
				return time.Millisecond
			}
			return 0
		},
		OnComplete: func(addr string, rf *rqd.RunFrame) { done <- rf.GetFrameId() },
	})
	s.Script("f3", Reply{Action: Accept, CompleteAfter: time.Hour})
	ctx := ctxT(t)
	for id, name := range map[string]string{"f1": "0001-fast", "f2": "0001-slow", "f3": "0001-fast"} {
		req := frame(id, 100)
		req.RunFrame.FrameName = name
		if _, err := c.LaunchFrame(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case id := <-done:
		if id != "f1" {
			t.Fatalf("completed %s first, want f1", id)
		}
	case <-ctx.Done():
		t.Fatal("no completion")
	}
	if !s.IsRunning("f2") || !s.IsRunning("f3") {
		t.Fatalf("running %v, want f2 (CompleteAfter) and f3 (its script)", s.Running())
	}
}

func TestCompleteByHand(t *testing.T) {
	var got []string
	s, c := startServer(t, Options{OnComplete: func(_ string, rf *rqd.RunFrame) { got = append(got, rf.GetFrameId()) }})
	if _, err := c.LaunchFrame(ctxT(t), frame("f1", 100)); err != nil {
		t.Fatal(err)
	}
	if !s.Complete("f1") || s.Complete("f1") || s.IsRunning("f1") {
		t.Fatal("Complete")
	}
	if !slices.Equal(got, []string{"f1"}) {
		t.Fatalf("completed %v", got)
	}
}

func TestWaitLaunchesHonoursContext(t *testing.T) {
	s, _ := startServer(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.WaitLaunches(ctx, 1); err == nil {
		t.Fatal("WaitLaunches returned without launches")
	}
}

func TestFarm(t *testing.T) {
	addrs := []string{LoopbackAddr(0, 0), LoopbackAddr(1, 0), LoopbackAddr(300, 0)}
	if addrs[0] != "127.1.0.1:0" || addrs[2] != "127.1.1.47:0" {
		t.Fatalf("addresses %v", addrs)
	}
	f, err := StartFarm(addrs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx := ctxT(t)
	waited := make(chan error, 1)
	go func() { waited <- f.WaitLaunches(ctx, 3) }()
	for i, s := range f.Servers() {
		if f.Server(addrs[i]) != s || f.Server(s.Addr()) != s {
			t.Fatalf("server %d not found by address", i)
		}
		if _, err := cli(frame("f", 100), ctx, s, t); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	if f.Launches() != 3 {
		t.Fatalf("%d launches", f.Launches())
	}
}

func TestStartFarmError(t *testing.T) {
	s, _ := startServer(t, Options{})
	if _, err := StartFarm([]string{"127.0.0.1:0", s.Addr()}, Options{}); err == nil {
		t.Fatal("second listener on a taken address")
	}
}

func TestCloseEndsHang(t *testing.T) {
	s, c := startServer(t, Options{})
	s.Script("", Reply{Action: Hang})
	errc := make(chan error, 1)
	go func() {
		_, err := c.LaunchFrame(context.Background(), frame("f1", 100))
		errc <- err
	}()
	if err := s.WaitLaunches(ctxT(t), 1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s.Close()
	if err := <-errc; err == nil {
		t.Fatal("hung call succeeded")
	}
}

// Runs records every start of a frame with how it ended: completed, killed,
// started by a dropped launch that took effect, refused relaunches not at
// all, and one still running when the server closes stays open. Cleared
// scripts answer nothing.
func TestRuns(t *testing.T) {
	s, c := startServer(t, Options{})
	ctx := ctxT(t)
	if _, err := c.LaunchFrame(ctx, frame("f1", 100)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.LaunchFrame(ctx, frame("f1", 100)); err == nil {
		t.Fatal("second launch of a running frame accepted")
	}
	if !s.Complete("f1") {
		t.Fatal("f1 not running")
	}
	s.Script("f2", Reply{Action: Drop, TakesEffect: true})
	if _, err := c.LaunchFrame(ctx, frame("f2", 100)); status.Code(err) != codes.Unavailable {
		t.Fatalf("dropped launch: %v", err)
	}
	if _, err := c.KillRunningFrame(ctx, &rqd.RqdStaticKillRunningFrameRequest{FrameId: "f2", Message: "why"}); err != nil {
		t.Fatalf("kill: %v", err)
	}
	s.Script("f3", Reply{Action: Refuse})
	s.Script("", Reply{Action: Refuse})
	s.ClearScripts()
	if _, err := c.LaunchFrame(ctx, frame("f3", 100)); err != nil {
		t.Fatalf("launch after the scripts were cleared: %v", err)
	}
	s.Close()
	rs := s.Runs()
	if len(rs) != 3 {
		t.Fatalf("runs %+v, want 3", rs)
	}
	for i, want := range []struct {
		id          string
		ended, kill bool
	}{{"f1", true, false}, {"f2", true, true}, {"f3", false, false}} {
		r := rs[i]
		if r.Frame.GetFrameId() != want.id || r.End.IsZero() == want.ended || r.Killed != want.kill ||
			(want.ended && r.End.Before(r.Start)) {
			t.Errorf("run %d: %s from %v to %v killed %v, want %+v", i, r.Frame.GetFrameId(), r.Start, r.End, r.Killed, want)
		}
	}
}
