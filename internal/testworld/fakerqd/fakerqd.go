// Package fakerqd is an in-process RQD for tests, the demo and benchmarks: a
// gRPC server speaking RQD's wire protocol (package internal/rqd) that records
// every call, keeps the set of frames it runs, and can be scripted per call or
// per frame to refuse, hang, drop the connection or accept.
//
// It answers as OpenCue's RQD does: refusals are status UNKNOWN with RQD's
// reason as the message, a frame_id it already runs is refused with "frame is
// already running", and killing a frame it does not run is NOT_FOUND (the
// Rust RQD; Options.PythonKill gives the Python RQD's silent success).
package fakerqd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/cuesched/cuesched/internal/rqd"
)

// Action is how the fake answers one call.
type Action int

const (
	// Accept runs the call as RQD would (which may still refuse it: a frame
	// already running, too few idle cores, bad fields).
	Accept Action = iota
	// Refuse answers with an error status (UNKNOWN unless Reply.Code says).
	Refuse
	// Hang never answers: the call blocks until the caller gives up (its
	// deadline) or the server stops.
	Hang
	// Drop closes the caller's connection after receiving the request.
	Drop
)

func (a Action) String() string {
	switch a {
	case Accept:
		return "accept"
	case Refuse:
		return "refuse"
	case Hang:
		return "hang"
	case Drop:
		return "drop"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Reply scripts the answer to one call.
type Reply struct {
	Action  Action
	Code    codes.Code // for Refuse; codes.OK means UNKNOWN, as RQD answers
	Message string     // for Refuse; a default when empty
	// TakesEffect makes a Hang or Drop still do the work: the frame starts
	// (launch) or dies (kill) although the caller sees no answer.
	TakesEffect bool
	// CompleteAfter, when above 0, is how long the frame this launch starts
	// runs, instead of Options.CompleteAfter.
	CompleteAfter time.Duration
}

// Launch is one LaunchFrame call as received, and how it was answered.
type Launch struct {
	Frame   *rqd.RunFrame
	Action  Action
	Code    codes.Code // the status sent (OK when accepted; nothing is sent for Hang and Drop)
	Message string
}

// Run is one run of a frame on this RQD: from the launch that started it
// (accepted, or hung or dropped with TakesEffect) until it completed or was
// killed. A run whose End is zero had not ended when it was read (or never
// will: the server was closed under it, as an RQD that dies mid-frame).
type Run struct {
	Frame      *rqd.RunFrame
	Start, End time.Time
	Killed     bool
}

// Kill is one KillRunningFrame call as received, and how it was answered.
type Kill struct {
	FrameID, Message string
	Action           Action
	Code             codes.Code
	WasRunning       bool
}

// Options configures a fake RQD.
type Options struct {
	// Cores, when above 0, is the host's size in core units: a frame whose
	// num_cores do not fit beside the running ones is refused with
	// "insufficient idle cores".
	Cores int64
	// CompleteAfter, when above 0, ends every started frame after that long
	// and then calls OnComplete (as RQD reports a completion to Cuebot). A
	// killed frame does not complete.
	CompleteAfter time.Duration
	// RunTime, when set, is how long each started frame runs, by what its
	// RunFrame says (a test's durations per job and frame name, known
	// before the frame's key is): a launch's script comes first, and 0
	// leaves CompleteAfter.
	RunTime func(rf *rqd.RunFrame) time.Duration
	// OnComplete is called, without the server's lock, for every frame that
	// completes (after CompleteAfter or through Complete). It must not call
	// Close, which waits for running callbacks.
	OnComplete func(addr string, rf *rqd.RunFrame)
	// PythonKill answers a kill of a frame that is not running with success,
	// as the Python RQD does, instead of NOT_FOUND.
	PythonKill bool
	// TLS, when set, serves TLS instead of plaintext.
	TLS *tls.Config
}

// Server is one fake RQD listening on one address.
type Server struct {
	rqd.UnimplementedRqdInterfaceServer

	opts   Options
	grpc   *grpc.Server
	lis    *trackingListener
	addr   string
	done   chan struct{}
	served chan struct{}
	notify func() // a farm's wake-up, or nil

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced whenever a call is recorded
	launches  []Launch
	kills     []Kill
	runs      []Run
	running   map[string]*runningFrame
	byFrame   map[string][]Reply // launch scripts per frame_id
	anyFrame  []Reply            // launch scripts for whatever comes next
	killFrame map[string][]Reply
	killAny   []Reply
	def       Reply
	statuses  int // ReportStatus calls
	closed    bool
	timers    sync.WaitGroup // completion callbacks scheduled or running
}

type runningFrame struct {
	rf    *rqd.RunFrame
	timer *time.Timer
	run   int // its index in runs
}

// Start listens on addr (host:port; port 0 picks one) and serves until Close.
func Start(addr string, opts Options) (*Server, error) {
	return start(addr, opts, nil)
}

func start(addr string, opts Options, notify func()) (*Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("fake rqd listen %s: %w", addr, err)
	}
	sopts := []grpc.ServerOption{grpc.WaitForHandlers(true)} // Close returns after the last handler
	if opts.TLS != nil {
		sopts = append(sopts, grpc.Creds(credentials.NewTLS(opts.TLS)))
	}
	s := &Server{
		opts:      opts,
		grpc:      grpc.NewServer(sopts...),
		lis:       &trackingListener{Listener: l, conns: map[string]net.Conn{}},
		addr:      l.Addr().String(),
		done:      make(chan struct{}),
		served:    make(chan struct{}),
		notify:    notify,
		changed:   make(chan struct{}),
		running:   map[string]*runningFrame{},
		byFrame:   map[string][]Reply{},
		killFrame: map[string][]Reply{},
	}
	rqd.RegisterRqdInterfaceServer(s.grpc, s)
	go func() {
		defer close(s.served)
		// Serve returns when Close stops the server.
		_ = s.grpc.Serve(s.lis)
	}()
	return s, nil
}

// Addr is the address the server listens on (host:port).
func (s *Server) Addr() string { return s.addr }

// Close stops the server: hung calls return, pending completions are
// dropped, and a completion callback already running is waited for.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	close(s.done)
	for _, r := range s.running {
		s.stopTimer(r)
	}
	s.mu.Unlock()
	s.grpc.Stop()
	<-s.served
	s.timers.Wait()
}

// stopTimer cancels a pending completion; s.mu is held.
func (s *Server) stopTimer(r *runningFrame) {
	if r.timer != nil && r.timer.Stop() {
		s.timers.Done()
	}
	r.timer = nil
}

// Script queues replies for the next LaunchFrame calls of frameID, or of any
// frame when frameID is "". A frame's own queue is used before the general
// one; with both empty the default reply (Accept) applies.
func (s *Server) Script(frameID string, replies ...Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if frameID == "" {
		s.anyFrame = append(s.anyFrame, replies...)
	} else {
		s.byFrame[frameID] = append(s.byFrame[frameID], replies...)
	}
}

// ScriptKill is Script for KillRunningFrame calls.
func (s *Server) ScriptKill(frameID string, replies ...Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if frameID == "" {
		s.killAny = append(s.killAny, replies...)
	} else {
		s.killFrame[frameID] = append(s.killFrame[frameID], replies...)
	}
}

// ClearScripts drops every queued launch and kill reply: the calls that
// follow get the default reply.
func (s *Server) ClearScripts() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.byFrame)
	clear(s.killFrame)
	s.anyFrame, s.killAny = nil, nil
}

// SetDefault sets the reply to launches and kills that no script covers.
func (s *Server) SetDefault(r Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.def = r
}

// next pops the reply for one call; s.mu is held.
func (s *Server) next(perFrame map[string][]Reply, general *[]Reply, frameID string) Reply {
	if q := perFrame[frameID]; len(q) > 0 {
		if len(q) == 1 {
			delete(perFrame, frameID)
		} else {
			perFrame[frameID] = q[1:]
		}
		return q[0]
	}
	if len(*general) > 0 {
		r := (*general)[0]
		*general = (*general)[1:]
		return r
	}
	return s.def
}

// LaunchFrame implements RQD's launch.
func (s *Server) LaunchFrame(ctx context.Context, req *rqd.RqdStaticLaunchFrameRequest) (*rqd.RqdStaticLaunchFrameResponse, error) {
	rf := req.GetRunFrame()
	if rf == nil {
		rf = &rqd.RunFrame{}
	}
	s.mu.Lock()
	r := s.next(s.byFrame, &s.anyFrame, rf.GetFrameId())
	rec := Launch{Frame: rf, Action: r.Action}
	var err error
	switch r.Action {
	case Refuse:
		err = refusal(r, "Not launching, refused by script")
	case Hang, Drop:
		if r.TakesEffect && s.refuseLaunch(rf) == nil {
			s.startFrame(rf, r.CompleteAfter)
		}
	default:
		if err = s.refuseLaunch(rf); err == nil {
			s.startFrame(rf, r.CompleteAfter)
		}
	}
	rec.Code = status.Code(err)
	rec.Message = status.Convert(err).Message()
	s.record(func() { s.launches = append(s.launches, rec) })
	s.mu.Unlock()
	s.wake()

	if merr := s.misbehave(ctx, r.Action); merr != nil {
		return nil, merr
	}
	if err != nil {
		return nil, err
	}
	return &rqd.RqdStaticLaunchFrameResponse{}, nil
}

// refuseLaunch applies RQD's own checks; s.mu is held.
func (s *Server) refuseLaunch(rf *rqd.RunFrame) error {
	if _, ok := s.running[rf.GetFrameId()]; ok {
		return status.Errorf(codes.Unknown, "Not launching, frame is already running on this proc %s", rf.GetFrameId())
	}
	if rf.UidOptional != nil && rf.GetUid() <= 0 {
		return status.Errorf(codes.Unknown, "Not launching, will not run frame as uid=%d", rf.GetUid())
	}
	if rf.GetNumCores() <= 0 {
		return status.Error(codes.Unknown, "Not launching, numCores must be > 0")
	}
	if s.opts.Cores > 0 {
		used := int64(rf.GetNumCores())
		for _, r := range s.running {
			used += int64(r.rf.GetNumCores())
		}
		if used > s.opts.Cores {
			return status.Error(codes.Unknown, "Not launching, insufficient idle cores")
		}
	}
	return nil
}

// startFrame marks rf running and schedules its completion after d (0:
// Options.RunTime's, else Options.CompleteAfter); s.mu is held.
func (s *Server) startFrame(rf *rqd.RunFrame, d time.Duration) {
	r := &runningFrame{rf: rf, run: len(s.runs)}
	s.runs = append(s.runs, Run{Frame: rf, Start: time.Now()})
	s.running[rf.GetFrameId()] = r
	if d <= 0 && s.opts.RunTime != nil {
		d = s.opts.RunTime(rf)
	}
	if d <= 0 {
		d = s.opts.CompleteAfter
	}
	if d > 0 && !s.closed {
		s.timers.Add(1)
		id := rf.GetFrameId()
		r.timer = time.AfterFunc(d, func() {
			defer s.timers.Done()
			s.finish(id, r)
		})
	}
}

// finish ends a running frame and reports its completion, unless it was
// killed or relaunched meanwhile.
func (s *Server) finish(frameID string, r *runningFrame) bool {
	s.mu.Lock()
	if s.running[frameID] != r {
		s.mu.Unlock()
		return false
	}
	delete(s.running, frameID)
	s.record(func() { s.runs[r.run].End = time.Now() })
	s.mu.Unlock()
	s.wake()
	if s.opts.OnComplete != nil {
		s.opts.OnComplete(s.addr, r.rf)
	}
	return true
}

// Complete ends a running frame now, as if its command exited, and calls
// OnComplete. It reports whether the frame was running.
func (s *Server) Complete(frameID string) bool {
	s.mu.Lock()
	r, ok := s.running[frameID]
	if ok {
		s.stopTimer(r)
	}
	s.mu.Unlock()
	return ok && s.finish(frameID, r)
}

// KillRunningFrame implements RQD's kill.
func (s *Server) KillRunningFrame(ctx context.Context, req *rqd.RqdStaticKillRunningFrameRequest) (*rqd.RqdStaticKillRunningFrameResponse, error) {
	id := req.GetFrameId()
	s.mu.Lock()
	r := s.next(s.killFrame, &s.killAny, id)
	run, wasRunning := s.running[id]
	rec := Kill{FrameID: id, Message: req.GetMessage(), Action: r.Action, WasRunning: wasRunning}
	var err error
	kill := false
	switch r.Action {
	case Refuse:
		err = refusal(r, "kill refused by script")
	case Hang, Drop:
		kill = r.TakesEffect && wasRunning
	default:
		switch {
		case !s.opts.PythonKill && req.GetMessage() == "":
			err = status.Errorf(codes.FailedPrecondition, "Could not kill frame %s without a reason (message is empty)", id)
		case wasRunning:
			kill = true
		case !s.opts.PythonKill:
			err = status.Errorf(codes.NotFound, "Could not find frame with id %s to kill", id)
		}
	}
	if kill {
		s.stopTimer(run)
		delete(s.running, id)
		s.runs[run.run].End, s.runs[run.run].Killed = time.Now(), true
	}
	rec.Code = status.Code(err)
	rec.Message = req.GetMessage()
	s.record(func() { s.kills = append(s.kills, rec) })
	s.mu.Unlock()
	s.wake()

	if merr := s.misbehave(ctx, r.Action); merr != nil {
		return nil, merr
	}
	if err != nil {
		return nil, err
	}
	return &rqd.RqdStaticKillRunningFrameResponse{}, nil
}

// ReportStatus implements RQD's status report: the frames running now, with
// the resource ids they were launched with. It answers as the default reply
// says (SetDefault: a host that hangs or refuses everything), no script.
func (s *Server) ReportStatus(ctx context.Context, _ *rqd.RqdStaticReportStatusRequest) (*rqd.RqdStaticReportStatusResponse, error) {
	s.mu.Lock()
	r := s.def
	rep := &rqd.HostReport{}
	for _, id := range slices.Sorted(maps.Keys(s.running)) {
		rep.Frames = append(rep.Frames, &rqd.RunningFrameInfo{FrameId: id, ResourceId: s.running[id].rf.GetResourceId()})
	}
	s.statuses++
	s.mu.Unlock()
	if r.Action == Refuse {
		return nil, refusal(r, "status refused by script")
	}
	if err := s.misbehave(ctx, r.Action); err != nil {
		return nil, err
	}
	return &rqd.RqdStaticReportStatusResponse{HostReport: rep}, nil
}

// Statuses is how many ReportStatus calls were received.
func (s *Server) Statuses() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statuses
}

func refusal(r Reply, def string) error {
	code, msg := r.Code, r.Message
	if code == codes.OK {
		code = codes.Unknown
	}
	if msg == "" {
		msg = def
	}
	return status.Error(code, msg)
}

// misbehave carries out Hang and Drop; nil means answer normally.
func (s *Server) misbehave(ctx context.Context, a Action) error {
	switch a {
	case Hang:
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.done:
			return status.Error(codes.Unavailable, "fake rqd stopped")
		}
	case Drop:
		if p, ok := peer.FromContext(ctx); ok {
			s.lis.drop(p.Addr.String())
		}
		return status.Error(codes.Unavailable, "fake rqd dropped the connection")
	}
	return nil
}

// record applies a change to the log and wakes waiters; s.mu is held.
func (s *Server) record(change func()) {
	change()
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Server) wake() {
	if s.notify != nil {
		s.notify()
	}
}

// Launches returns the LaunchFrame calls received so far, in order.
func (s *Server) Launches() []Launch {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.launches)
}

// Kills returns the KillRunningFrame calls received so far, in order.
func (s *Server) Kills() []Kill {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.kills)
}

// Runs returns every run of a frame so far, in the order they started.
func (s *Server) Runs() []Run {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.runs)
}

// Running returns the ids of the frames running now, sorted.
func (s *Server) Running() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.running))
	for id := range s.running {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// IsRunning reports whether the frame runs here now.
func (s *Server) IsRunning(frameID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.running[frameID]
	return ok
}

// WaitLaunches blocks until at least n LaunchFrame calls were received (any
// answer counts) or ctx ends.
func (s *Server) WaitLaunches(ctx context.Context, n int) error {
	return s.wait(ctx, func() bool { return len(s.launches) >= n })
}

// WaitKills blocks until at least n KillRunningFrame calls were received or
// ctx ends.
func (s *Server) WaitKills(ctx context.Context, n int) error {
	return s.wait(ctx, func() bool { return len(s.kills) >= n })
}

// WaitIdle blocks until no frame runs or ctx ends.
func (s *Server) WaitIdle(ctx context.Context) error {
	return s.wait(ctx, func() bool { return len(s.running) == 0 })
}

func (s *Server) wait(ctx context.Context, done func() bool) error {
	for {
		s.mu.Lock()
		ok, ch := done(), s.changed
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("fake rqd %s: %w", s.addr, ctx.Err())
		}
	}
}

// trackingListener remembers the connections it accepted by remote address,
// so that a handler can drop its caller's connection.
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns map[string]net.Conn
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l}
	l.mu.Lock()
	l.conns[c.RemoteAddr().String()] = tc
	l.mu.Unlock()
	return tc, nil
}

func (l *trackingListener) drop(remote string) {
	l.mu.Lock()
	c := l.conns[remote]
	l.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

type trackedConn struct {
	net.Conn
	l    *trackingListener
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c.RemoteAddr().String())
		c.l.mu.Unlock()
	})
	err := c.Conn.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
