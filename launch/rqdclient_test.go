package launch

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cuesched/cuesched/internal/rqd"
	"github.com/cuesched/cuesched/internal/testworld/fakerqd"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1700000000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newClient(t *testing.T, cfg RQDConfig) *RQDClient {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := NewRQDClient(cfg)
	t.Cleanup(c.Close)
	return c
}

func startFake(t *testing.T, opts fakerqd.Options) *fakerqd.Server {
	t.Helper()
	s, err := fakerqd.Start("127.0.0.1:0", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// closedAddr is an address where nothing listens: connections are refused.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// silentAddr accepts TCP connections and never speaks: the gRPC connection
// never becomes ready, like a host that has stopped answering.
func silentAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
	})
	return l.Addr().String()
}

func runFrame(id string) *rqd.RunFrame {
	return &rqd.RunFrame{FrameId: id, ResourceId: "proc-" + id, NumCores: 100, LogDir: "/logs"}
}

func TestLaunchOutcomes(t *testing.T) {
	fake := startFake(t, fakerqd.Options{})
	fake.Script("refused", fakerqd.Reply{Action: fakerqd.Refuse, Message: "Not launching, insufficient idle cores"})
	fake.Script("exists", fakerqd.Reply{Action: fakerqd.Refuse, Code: codes.AlreadyExists, Message: "frame exists"})
	fake.Script("hang", fakerqd.Reply{Action: fakerqd.Hang})
	fake.Script("drop", fakerqd.Reply{Action: fakerqd.Drop, TakesEffect: true})
	c := newClient(t, RQDConfig{CallTimeout: 300 * time.Millisecond})
	ctx := testCtx(t)
	if r := c.Launch(ctx, fake.Addr(), runFrame("dup")); r.Outcome != Launched {
		t.Fatalf("first launch: %+v", r)
	}
	for _, tc := range []struct {
		name, host, frame string
		want              Outcome
		sent              bool
		code              codes.Code // codes.OK with an error: any code
		msg               string
	}{
		{"accepted", fake.Addr(), "ok", Launched, true, codes.OK, ""},
		{"already running", fake.Addr(), "dup", AlreadyRunning, true, codes.Unknown, "frame is already running"},
		{"already exists", fake.Addr(), "exists", AlreadyRunning, true, codes.AlreadyExists, "frame exists"},
		{"rqd refusal", fake.Addr(), "refused", Refused, true, codes.Unknown, "insufficient idle cores"},
		{"connection refused", closedAddr(t), "x", Refused, false, codes.Unavailable, ""},
		// DEADLINE_EXCEEDED, or UNAVAILABLE when the connect attempt times out
		// first: either way nothing was sent.
		{"never ready", silentAddr(t), "x", Refused, false, codes.OK, ""},
		{"deadline after send", fake.Addr(), "hang", Ambiguous, true, codes.DeadlineExceeded, ""},
		{"connection dropped after send", fake.Addr(), "drop", Ambiguous, true, codes.Unavailable, ""},
		{"bad address", "host:port:x", "x", Refused, false, codes.InvalidArgument, ""},
	} {
		r := c.Launch(ctx, tc.host, runFrame(tc.frame))
		codeOK := r.Code == tc.code || tc.code == codes.OK && tc.want != Launched
		if r.Outcome != tc.want || r.Sent != tc.sent || !codeOK {
			t.Errorf("%s: outcome %v sent %v code %v (%v), want %v %v %v", tc.name, r.Outcome, r.Sent, r.Code, r.Err, tc.want, tc.sent, tc.code)
		}
		if (r.Err == nil) != (tc.want == Launched) || r.Err != nil && !strings.Contains(r.Err.Error(), tc.msg) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, r.Err, tc.msg)
		}
	}
	// The dropped launch took effect: a kill finds it.
	if r := c.kill(ctx, fake.Addr(), "drop", "ambiguous launch"); r.Outcome != killed {
		t.Fatalf("kill after ambiguous launch: %+v", r)
	}
	// The fake saw exactly the calls that were sent.
	if n := len(fake.Launches()); n != 7 {
		t.Errorf("fake received %d launches, want 7", n)
	}
}

func TestLaunchCarriesRunFrame(t *testing.T) {
	fake := startFake(t, fakerqd.Options{})
	c := newClient(t, RQDConfig{})
	rf, err := buildRunFrame(baseSpec())
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Launch(testCtx(t), fake.Addr(), rf); r.Outcome != Launched {
		t.Fatal(r.Err)
	}
	got := fake.Launches()[0].Frame
	if got.GetResourceId() != "proc-1" || got.GetNumCores() != 400 || got.GetUid() != 1000 ||
		got.GetCommand() != rf.Command || got.GetEnvironment()["CUE_FRAME_ID"] != "frame-7" {
		t.Fatalf("fake received %v", got)
	}
}

func TestKillOutcomes(t *testing.T) {
	fake := startFake(t, fakerqd.Options{})
	py := startFake(t, fakerqd.Options{PythonKill: true})
	fake.ScriptKill("precondition", fakerqd.Reply{Action: fakerqd.Refuse, Code: codes.FailedPrecondition, Message: "no pid"})
	fake.ScriptKill("hang", fakerqd.Reply{Action: fakerqd.Hang})
	fake.ScriptKill("drop", fakerqd.Reply{Action: fakerqd.Drop})
	fake.ScriptKill("gone", fakerqd.Reply{Action: fakerqd.Refuse, Message: "Could not find frame with id gone"})
	c := newClient(t, RQDConfig{CallTimeout: 300 * time.Millisecond})
	ctx := testCtx(t)
	if r := c.Launch(ctx, fake.Addr(), runFrame("running")); r.Outcome != Launched {
		t.Fatal(r.Err)
	}
	for _, tc := range []struct {
		name, host, frame string
		want              killOutcome
	}{
		{"running", fake.Addr(), "running", killed},
		{"not running (rust rqd)", fake.Addr(), "running", notRunning},
		{"not running by message", fake.Addr(), "gone", notRunning},
		{"not running (python rqd)", py.Addr(), "nope", killed},
		{"rqd error", fake.Addr(), "precondition", killError},
		{"deadline after send", fake.Addr(), "hang", killUnreachable},
		{"dropped", fake.Addr(), "drop", killUnreachable},
		{"connection refused", closedAddr(t), "x", killUnreachable},
	} {
		r := c.kill(ctx, tc.host, tc.frame, "")
		if r.Outcome != tc.want {
			t.Errorf("%s: %v (%v), want %v", tc.name, r.Outcome, r.Err, tc.want)
		}
	}
	if fake.IsRunning("running") {
		t.Error("killed frame still running")
	}
	for _, k := range fake.Kills() {
		if k.Message == "" {
			t.Error("kill sent without a reason")
		}
	}
}

func TestClassify(t *testing.T) {
	st := func(c codes.Code, msg string) error { return status.Error(c, msg) }
	for _, tc := range []struct {
		err             error
		sent, gotStatus bool
		want            Outcome
	}{
		{nil, true, true, Launched},
		{st(codes.Unknown, "Not launching, frame is already running on this proc x"), true, true, AlreadyRunning},
		{st(codes.Unknown, "insufficient idle cores"), true, true, Refused},
		{st(codes.FailedPrecondition, "Not launching, host HardwareState is not Up"), true, true, Refused},
		{st(codes.ResourceExhausted, "busy"), true, true, Refused},
		{st(codes.DeadlineExceeded, "server deadline"), true, true, Ambiguous},
		{st(codes.Unavailable, "proxy reset"), true, true, Ambiguous},
		{st(codes.Internal, "bad response"), true, true, Ambiguous},
		{st(codes.Canceled, ""), true, true, Ambiguous},
		{st(codes.Unavailable, "connection refused"), false, false, Refused},
		{st(codes.DeadlineExceeded, "waiting for connection"), false, false, Refused},
		{st(codes.Unavailable, "EOF"), true, false, Ambiguous},
		{st(codes.DeadlineExceeded, ""), true, false, Ambiguous},
		{st(codes.Unknown, "frame is already running"), true, false, Ambiguous}, // not RQD's word
	} {
		if got := classifyLaunch(tc.err, tc.sent, tc.gotStatus); got != tc.want {
			t.Errorf("classifyLaunch(%v, sent %v, status %v) = %v, want %v", tc.err, tc.sent, tc.gotStatus, got, tc.want)
		}
	}
	for _, tc := range []struct {
		err             error
		sent, gotStatus bool
		want            killOutcome
	}{
		{nil, true, true, killed},
		{st(codes.NotFound, "x"), true, true, notRunning},
		{st(codes.Unknown, "Could not find frame with id x to kill"), true, true, notRunning},
		{st(codes.Unknown, "boom"), true, true, killError},
		{st(codes.DeadlineExceeded, ""), true, true, killUnreachable},
		{st(codes.Unavailable, ""), false, false, killUnreachable},
		{st(codes.Unavailable, ""), true, false, killUnreachable},
	} {
		if got := classifyKill(tc.err, tc.sent, tc.gotStatus); got != tc.want {
			t.Errorf("classifyKill(%v, sent %v, status %v) = %v, want %v", tc.err, tc.sent, tc.gotStatus, got, tc.want)
		}
	}
}

func TestTarget(t *testing.T) {
	c := &RQDClient{cfg: RQDConfig{Port: 8444}}
	for in, want := range map[string]string{
		"render01":       "render01:8444",
		"10.0.0.5":       "10.0.0.5:8444",
		"127.1.0.1:9000": "127.1.0.1:9000",
		"::1":            "[::1]:8444",
		"[::1]":          "[::1]:8444",
		"[::1]:9":        "[::1]:9",
	} {
		if got, err := c.target(in); err != nil || got != want {
			t.Errorf("target(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "host:port:x", "h:0", "h:99999", "h:x", ":8444", "[]", "[zz::1]"} {
		if got, err := c.target(bad); err == nil {
			t.Errorf("target(%q) = %q, want an error", bad, got)
		}
	}
}

// When an open breaker's cooldown passes, OnHostAllowed says so (the
// host index offers the host again and its clusters are woken); a failure
// while half open re-opens it and the hook runs again after the next
// cooldown.
func TestBreakerHalfOpenHook(t *testing.T) {
	fake := startFake(t, fakerqd.Options{})
	half := make(chan string, 4)
	c := newClient(t, RQDConfig{
		BreakerFailures: 2, BreakerCooldown: 50 * time.Millisecond,
		Hooks: RQDHooks{OnHostAllowed: func(h string) { half <- h }},
	})
	ctx := testCtx(t)
	host := fake.Addr()
	refuse := func(n int) {
		for range n {
			fake.Script("", fakerqd.Reply{Action: fakerqd.Refuse, Message: "Not launching, rqd is lockNimby"})
			if r := c.Launch(ctx, host, runFrame("f")); r.Outcome != Refused {
				t.Fatalf("scripted refusal: %+v", r)
			}
		}
	}
	waitHalfOpen := func() {
		t.Helper()
		select {
		case h := <-half:
			if h != host {
				t.Fatalf("half open: %s, want %s", h, host)
			}
		case <-ctx.Done():
			t.Fatal("the breaker's cooldown passed without OnHostAllowed")
		}
		if !c.Allowed(host) {
			t.Fatal("OnHostAllowed ran while the breaker refuses the host")
		}
	}
	refuse(2)
	if c.Allowed(host) {
		t.Fatal("breaker closed after 2 failures of 2")
	}
	waitHalfOpen()
	refuse(1)
	if c.Allowed(host) {
		t.Fatal("a failure while half open did not re-open the breaker")
	}
	waitHalfOpen()
	if r := c.Launch(ctx, host, runFrame("ok")); r.Outcome != Launched {
		t.Fatal(r.Err)
	}
	if c.tripped.Load() != 0 {
		t.Fatalf("%d breakers counted as tripped after the host's success", c.tripped.Load())
	}
}

// A breaker closed by a success before its cooldown (a kill or a status
// call reaching the host's new RQD) offers the host again at once: the hook
// runs then, as it would at the cooldown's end, or the clusters that
// matching left the host out of would wait for the hour-long cooldown, or
// forever once its timer is stopped.
func TestBreakerClosedBySuccessRunsHook(t *testing.T) {
	t.Parallel()
	fake := startFake(t, fakerqd.Options{})
	back := make(chan string, 4)
	c := newClient(t, RQDConfig{
		BreakerFailures: 2, BreakerCooldown: time.Hour,
		Hooks: RQDHooks{OnHostAllowed: func(h string) { back <- h }},
	})
	ctx := testCtx(t)
	host := fake.Addr()
	for range 2 {
		fake.Script("", fakerqd.Reply{Action: fakerqd.Refuse, Message: "Not launching, rqd is lockNimby"})
		if r := c.Launch(ctx, host, runFrame("f")); r.Outcome != Refused {
			t.Fatalf("scripted refusal: %+v", r)
		}
	}
	if c.Allowed(host) {
		t.Fatal("breaker closed after 2 failures of 2")
	}
	if r := c.kill(ctx, host, "not-running", ""); r.Outcome != notRunning {
		t.Fatalf("kill of a frame the host does not run: %+v", r)
	}
	if !c.Allowed(host) {
		t.Fatal("the host's answer did not close its breaker")
	}
	select {
	case h := <-back:
		if h != host {
			t.Fatalf("hook ran for %s, want %s", h, host)
		}
	case <-ctx.Done():
		t.Fatal("a success closed the breaker without OnHostAllowed: the host's clusters are never woken")
	}
}

func TestBreaker(t *testing.T) {
	clock := newFakeClock()
	var opened []string
	var mu sync.Mutex
	fake := startFake(t, fakerqd.Options{})
	logs := newLogWatch()
	c := newClient(t, RQDConfig{
		BreakerFailures: 3, BreakerCooldown: time.Minute, Now: clock.Now, Logger: slog.New(logs),
		Hooks: RQDHooks{OnBreakerOpen: func(h string) { mu.Lock(); opened = append(opened, h); mu.Unlock() }},
	})
	// The breaker's lines so far: one when it opens and one when it
	// closes, none for the failures between.
	lines := func(wantOpen, wantClosed int) {
		t.Helper()
		logs.mu.Lock()
		defer logs.mu.Unlock()
		var open, closed int
		for _, m := range logs.msgs {
			open += btoi(m == "rqd host breaker open")
			closed += btoi(m == "rqd host breaker closed")
		}
		if open != wantOpen || closed != wantClosed {
			t.Fatalf("logged the breaker open %d and closed %d times, want %d and %d: %q",
				open, closed, wantOpen, wantClosed, logs.msgs)
		}
	}
	ctx := testCtx(t)
	host := fake.Addr()
	refuse := func(n int) {
		for range n {
			fake.Script("", fakerqd.Reply{Action: fakerqd.Refuse, Message: "Not launching, rqd is lockNimby"})
			if r := c.Launch(ctx, host, runFrame("f")); r.Outcome != Refused {
				t.Fatalf("scripted refusal: %+v", r)
			}
		}
	}
	refuse(2)
	if !c.Allowed(host) {
		t.Fatal("breaker open after 2 failures of 3")
	}
	// A success resets the count.
	if r := c.Launch(ctx, host, runFrame("ok1")); r.Outcome != Launched {
		t.Fatal(r.Err)
	}
	refuse(2)
	if !c.Allowed(host) {
		t.Fatal("breaker open although a success came between")
	}
	refuse(1)
	if c.Allowed(host) {
		t.Fatal("breaker closed after 3 consecutive failures")
	}
	// Calls already under way when it opened fail too.
	refuse(2)
	lines(1, 0)
	if !c.Allowed("other") {
		t.Fatal("another host is skipped")
	}
	clock.Advance(time.Minute - time.Second)
	if c.Allowed(host) {
		t.Fatal("breaker closed before the cool-down ended")
	}
	clock.Advance(time.Second)
	if !c.Allowed(host) {
		t.Fatal("breaker still open after the cool-down")
	}
	// Half open: one more failure opens it again at once.
	refuse(1)
	if c.Allowed(host) {
		t.Fatal("a failure after the cool-down did not re-open the breaker")
	}
	lines(1, 0)
	clock.Advance(time.Minute)
	// "already running" is a success.
	if r := c.Launch(ctx, host, runFrame("ok1")); r.Outcome != AlreadyRunning {
		t.Fatal(r.Err)
	}
	lines(1, 1)
	refuse(1)
	if !c.Allowed(host) {
		t.Fatal("a success did not close the breaker")
	}
	lines(1, 1)
	mu.Lock()
	defer mu.Unlock()
	if len(opened) != 1 || opened[0] != host {
		t.Fatalf("breaker opened %v, want once", opened)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestBreakerUnreachableHost(t *testing.T) {
	clock := newFakeClock()
	c := newClient(t, RQDConfig{BreakerFailures: 2, Now: clock.Now})
	host := closedAddr(t)
	for range 2 {
		if r := c.kill(testCtx(t), host, "f", "why"); r.Outcome != killUnreachable {
			t.Fatalf("kill on a closed port: %+v", r)
		}
	}
	if c.Allowed(host) {
		t.Fatal("unreachable host still allowed")
	}
}

// A caller giving up says nothing about the host.
func TestBreakerIgnoresCaller(t *testing.T) {
	c := newClient(t, RQDConfig{BreakerFailures: 1})
	fake := startFake(t, fakerqd.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := c.Launch(ctx, fake.Addr(), runFrame("f"))
	if r.Outcome != Refused || r.Sent {
		t.Fatalf("launch with a cancelled context: %+v", r)
	}
	if !c.Allowed(fake.Addr()) {
		t.Fatal("a cancelled caller opened the breaker")
	}
}

func TestHooks(t *testing.T) {
	var mu sync.Mutex
	var launches []Outcome
	var kills []killOutcome
	var failures []error
	fake := startFake(t, fakerqd.Options{})
	c := newClient(t, RQDConfig{Hooks: RQDHooks{
		OnLaunch:  func(_ string, r Result) { mu.Lock(); launches = append(launches, r.Outcome); mu.Unlock() },
		OnKill:    func(_ string, r killResult) { mu.Lock(); kills = append(kills, r.Outcome); mu.Unlock() },
		OnFailure: func(_ string, err error) { mu.Lock(); failures = append(failures, err); mu.Unlock() },
	}})
	ctx := testCtx(t)
	c.Launch(ctx, fake.Addr(), runFrame("f"))
	c.Launch(ctx, fake.Addr(), runFrame("f"))
	c.kill(ctx, fake.Addr(), "f", "")
	fake.Script("g", fakerqd.Reply{Action: fakerqd.Refuse, Message: "Not launching, rqd is lockNimby"})
	c.Launch(ctx, fake.Addr(), runFrame("g"))
	mu.Lock()
	defer mu.Unlock()
	if len(launches) != 3 || launches[0] != Launched || launches[1] != AlreadyRunning || launches[2] != Refused ||
		len(kills) != 1 || kills[0] != killed {
		t.Fatalf("hooks saw %v %v", launches, kills)
	}
	if len(failures) != 1 || !strings.Contains(failures[0].Error(), "lockNimby") {
		t.Fatalf("OnFailure saw %v, want the refusal alone", failures)
	}
}

func TestConnectionCacheAndExpiry(t *testing.T) {
	clock := newFakeClock()
	a := startFake(t, fakerqd.Options{})
	b := startFake(t, fakerqd.Options{})
	c := newClient(t, RQDConfig{IdleTimeout: time.Minute, Now: clock.Now})
	ctx := testCtx(t)
	for i, h := range []string{a.Addr(), a.Addr(), b.Addr()} {
		if r := c.Launch(ctx, h, runFrame(string(rune('p'+i)))); r.Outcome != Launched {
			t.Fatal(r.Err)
		}
	}
	if n := c.connCount(); n != 2 {
		t.Fatalf("%d connections for 2 hosts", n)
	}
	clock.Advance(30 * time.Second)
	if r := c.Launch(ctx, a.Addr(), runFrame("again")); r.Outcome != Launched {
		t.Fatal(r.Err)
	}
	clock.Advance(30 * time.Second)
	if n := c.sweep(); n != 1 || c.connCount() != 1 {
		t.Fatalf("sweep closed %d, %d left; want b's closed and a's kept", n, c.connCount())
	}
	clock.Advance(30 * time.Second)
	if n := c.sweep(); n != 1 || c.connCount() != 0 {
		t.Fatalf("sweep closed %d, %d left", n, c.connCount())
	}
	// An expired host is dialled again on use.
	if r := c.Launch(ctx, b.Addr(), runFrame("back")); r.Outcome != Launched {
		t.Fatal(r.Err)
	}
	if c.connCount() != 1 {
		t.Fatal("no connection after re-dial")
	}
}

func TestSweepKeepsBusyConnection(t *testing.T) {
	clock := newFakeClock()
	fake := startFake(t, fakerqd.Options{})
	fake.Script("slow", fakerqd.Reply{Action: fakerqd.Hang})
	c := newClient(t, RQDConfig{IdleTimeout: time.Minute, Now: clock.Now})
	ctx, cancel := context.WithCancel(testCtx(t))
	done := make(chan Result, 1)
	go func() { done <- c.Launch(ctx, fake.Addr(), runFrame("slow")) }()
	if err := fake.WaitLaunches(testCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	if n := c.sweep(); n != 0 {
		t.Fatalf("sweep closed %d connections in use", n)
	}
	cancel()
	if r := <-done; r.Outcome != Ambiguous {
		t.Fatalf("cancelled hung launch: %+v", r)
	}
	clock.Advance(time.Hour)
	if n := c.sweep(); n != 1 {
		t.Fatalf("sweep closed %d idle connections, want 1", n)
	}
}

func TestClose(t *testing.T) {
	fake := startFake(t, fakerqd.Options{})
	c := NewRQDClient(RQDConfig{})
	if r := c.Launch(testCtx(t), fake.Addr(), runFrame("f")); r.Outcome != Launched {
		t.Fatal(r.Err)
	}
	c.Close()
	c.Close()
	r := c.Launch(testCtx(t), fake.Addr(), runFrame("g"))
	if r.Outcome != Refused || r.Sent || !errors.Is(r.Err, errRQDClientClosed) {
		t.Fatalf("launch after close: %+v", r)
	}
	if c.connCount() != 0 {
		t.Fatal("connections left after close")
	}
}

func TestTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	fake := startFake(t, fakerqd.Options{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	ctx := testCtx(t)
	c := newClient(t, RQDConfig{TLS: &tls.Config{RootCAs: pool, ServerName: "rqd.test"}})
	if r := c.Launch(ctx, fake.Addr(), runFrame("f")); r.Outcome != Launched {
		t.Fatalf("TLS launch: %v", r.Err)
	}
	// A plaintext client gets no verdict from a TLS server and sent nothing.
	plain := newClient(t, RQDConfig{CallTimeout: 300 * time.Millisecond})
	if r := plain.Launch(ctx, fake.Addr(), runFrame("g")); r.Outcome != Refused || r.Sent {
		t.Fatalf("plaintext launch on TLS: %+v", r)
	}
}

func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "rqd.test"},
		DNSNames:     []string{"rqd.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

func TestOutcomeStrings(t *testing.T) {
	for o, want := range map[Outcome]string{Launched: "launched", AlreadyRunning: "already_running", Refused: "refused", Ambiguous: "ambiguous"} {
		if o.String() != want {
			t.Errorf("%d: %q", int(o), o.String())
		}
	}
	for o, want := range map[killOutcome]string{killed: "killed", notRunning: "not_running", killUnreachable: "unreachable", killError: "error"} {
		if o.String() != want {
			t.Errorf("%d: %q", int(o), o.String())
		}
	}
}

func TestFarmHosts(t *testing.T) {
	addrs := []string{fakerqd.LoopbackAddr(10, 0), fakerqd.LoopbackAddr(11, 0), fakerqd.LoopbackAddr(12, 0)}
	farm, err := fakerqd.StartFarm(addrs, fakerqd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer farm.Close()
	c := newClient(t, RQDConfig{})
	ctx := testCtx(t)
	for i, s := range farm.Servers() {
		if r := c.Launch(ctx, s.Addr(), runFrame(string(rune('a'+i)))); r.Outcome != Launched {
			t.Fatal(r.Err)
		}
	}
	if err := farm.WaitLaunches(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if c.connCount() != 3 {
		t.Fatalf("%d connections for 3 hosts", c.connCount())
	}
}

// A host that goes away after a launch never yields Launched, and a kill of
// its frame never claims success.
func TestHostGone(t *testing.T) {
	fake, err := fakerqd.Start("127.0.0.1:0", fakerqd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, RQDConfig{CallTimeout: 300 * time.Millisecond})
	ctx := testCtx(t)
	if r := c.Launch(ctx, fake.Addr(), runFrame("f")); r.Outcome != Launched {
		t.Fatal(r.Err)
	}
	fake.Close()
	for range 3 {
		if r := c.Launch(ctx, fake.Addr(), runFrame("g")); r.Outcome != Refused && r.Outcome != Ambiguous {
			t.Fatalf("launch on a stopped host: %+v", r)
		}
		if r := c.kill(ctx, fake.Addr(), "f", "x"); r.Outcome != killUnreachable {
			t.Fatalf("kill on a stopped host: %+v", r)
		}
	}
	if c.Allowed(fake.Addr()) {
		t.Fatal("stopped host still allowed")
	}
}

// BenchmarkLaunch is one LaunchFrame round trip on a cached loopback
// connection, fake RQD included.
func BenchmarkLaunch(b *testing.B) {
	fake, err := fakerqd.Start("127.0.0.1:0", fakerqd.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer fake.Close()
	c := NewRQDClient(RQDConfig{Logger: slog.New(slog.DiscardHandler)})
	defer c.Close()
	ctx := context.Background()
	ids := make([]string, b.N)
	for i := range ids {
		ids[i] = "f" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if r := c.Launch(ctx, fake.Addr(), runFrame(ids[i])); r.Outcome != Launched {
			b.Fatal(r.Err)
		}
	}
}
