package launch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/cuesched/cuesched/internal/rqd"
)

// Defaults of RQDConfig.
const (
	defaultRQDPort         = 8444
	defaultRQDCallTimeout  = 10 * time.Second
	defaultRQDIdleTimeout  = 5 * time.Minute
	defaultBreakerFailures = 3
	defaultBreakerCooldown = 30 * time.Second
)

// defaultKillMessage is sent when a kill has no reason: OpenCue's Rust RQD
// refuses a kill without one.
const defaultKillMessage = "killed by cuesched"

// errRQDClientClosed is the error of calls made after Close.
var errRQDClientClosed = errors.New("rqd client closed")

// RQDConfig configures an RQDClient. Zero fields take the defaults above.
type RQDConfig struct {
	Port        int           // RQD's port, for host addresses without one
	TLS         *tls.Config   // nil: plaintext, as RQD serves by default
	CallTimeout time.Duration // deadline of every call (a caller's earlier deadline wins)
	IdleTimeout time.Duration // a host's connection unused this long is closed
	// BreakerFailures consecutive failures open a host's breaker: Allowed
	// reports false for BreakerCooldown, then one more failure re-opens it
	// and a success closes it.
	BreakerFailures int
	BreakerCooldown time.Duration
	Hooks           RQDHooks
	Logger          *slog.Logger     // nil: slog.Default()
	Now             func() time.Time // clock of idle expiry and the breaker; nil: time.Now
}

// RQDHooks lets the owner count calls (metrics) without this package
// registering anything. Each hook is optional and must not block.
type RQDHooks struct {
	OnLaunch func(host string, r Result)
	OnKill   func(host string, r killResult)
	// OnFailure runs for every call that counts against the host's breaker
	// (a launch refused or unanswered, a kill that found the host
	// unreachable), with why: the owner logs them per host and interval,
	// as this client does not.
	OnFailure func(host string, err error)
	// OnBreakerOpen runs when a host's breaker opens, once until a success
	// closes it again (not for failures while it is open or half open).
	OnBreakerOpen func(host string)
	// OnHostAllowed runs when Allowed reports a host again after its
	// breaker was open: its cooldown passed (not after Close), or a call
	// that reached the host closed it sooner. The host's work is woken by
	// it: matching left the host out, and nothing else says it is back.
	OnHostAllowed func(host string)
}

// Outcome classifies a LaunchFrame call by what it means for the
// booking.
type Outcome int

const (
	// Launched: RQD accepted the frame.
	Launched Outcome = iota
	// AlreadyRunning: RQD refused because it already runs this frame. The
	// frame IS running there: never release the booking.
	AlreadyRunning
	// Refused: the frame is definitely not running: the request never left
	// (connection refused, host unreachable, client closed) or RQD answered
	// with a refusal ("insufficient idle cores", ...). The booking may be
	// released.
	Refused
	// Ambiguous: the request was sent and no verdict came back (deadline,
	// broken connection): the frame may be running. Kill it before releasing.
	Ambiguous
)

func (o Outcome) String() string {
	switch o {
	case Launched:
		return "launched"
	case AlreadyRunning:
		return "already_running"
	case Refused:
		return "refused"
	case Ambiguous:
		return "ambiguous"
	}
	return "Outcome(" + strconv.Itoa(int(o)) + ")"
}

// killOutcome classifies a KillRunningFrame call.
type killOutcome int

const (
	// killed: RQD acknowledged the kill. The Python RQD acknowledges a kill of
	// a frame it does not run in the same way, so this also means "not
	// running (any more)".
	killed killOutcome = iota
	// notRunning: RQD answered NOT_FOUND (the Rust RQD) or said it could not
	// find the frame.
	notRunning
	// killUnreachable: no verdict: the request was not sent, or was sent and
	// no answer came (deadline, broken connection).
	killUnreachable
	// killError: RQD answered with another error; the frame may still run.
	killError
)

func (o killOutcome) String() string {
	switch o {
	case killed:
		return "killed"
	case notRunning:
		return "not_running"
	case killUnreachable:
		return "unreachable"
	case killError:
		return "error"
	}
	return "killOutcome(" + strconv.Itoa(int(o)) + ")"
}

// Result is the outcome of one Launch and what it was based on.
type Result struct {
	Outcome Outcome
	Sent    bool       // the request was handed to a connection to the host
	Code    codes.Code // the call's gRPC status code
	Err     error      // nil when Launched; otherwise why, with RQD's message
	Elapsed time.Duration
}

// killResult is the outcome of one kill.
type killResult struct {
	Outcome killOutcome
	Sent    bool
	Code    codes.Code
	Err     error
	Elapsed time.Duration
}

// RQDClient launches and kills frames on RQD hosts. It caches one gRPC
// connection per host address, closes connections left idle, and keeps a
// circuit breaker per host. It is safe for concurrent use; Close stops it.
//
// Telling "not sent" from "sent" (the difference between releasing a booking
// and first killing a possibly running frame) is done per call, not per
// connection: a connection that was ready a moment ago may have broken just
// before this call was written, so "the connection was ever ready" proves
// nothing. Every call carries a tracker that a gRPC stats handler marks when
// the transport queues the call's headers (stats.OutHeader: from then on RQD
// may see the request) and when a status arrives from the peer
// (stats.InTrailer: RQD's verdict, not a local error). Calls use
// WaitForReady(false), so a host whose connection is in transient failure
// fails at once with UNAVAILABLE instead of waiting out the deadline; a call
// still waiting for a connection when its deadline passes was not sent
// either. So:
//   - no headers queued: nothing left this process; definite (Refused);
//   - a status from RQD: its verdict, except DEADLINE_EXCEEDED, CANCELLED,
//     UNAVAILABLE, INTERNAL and DATA_LOSS, which a server or proxy sends while
//     the handler may still run, or which a local failure after the answer
//     produces (Ambiguous);
//   - headers queued and no status: Ambiguous.
//
// Errors only ever move towards Ambiguous, which costs a kill and never a
// double-rendered frame.
type RQDClient struct {
	cfg   RQDConfig
	creds credentials.TransportCredentials
	log   *slog.Logger

	mu      sync.Mutex
	conns   map[string]*rqdConn // by dial target host:port
	breaker map[string]*breakerState
	closed  bool
	// tripped counts the breakers that have opened and not closed since, so
	// Allowed, asked for every host a walk of the host index visits, answers
	// without the lock while none has.
	tripped atomic.Int32

	stop chan struct{}
	done chan struct{}
}

type rqdConn struct {
	cc       *grpc.ClientConn
	stub     rqd.RqdInterfaceClient
	inflight int
	lastUsed time.Time
}

type breakerState struct {
	failures  int
	openUntil time.Time   // zero until the breaker first opens
	openedAt  time.Time   // when it opened, for the line that says it closed
	halfOpen  *time.Timer // fires OnHostAllowed; nil without the hook
}

// NewRQDClient returns a client and starts its idle-connection janitor.
func NewRQDClient(cfg RQDConfig) *RQDClient {
	if cfg.Port <= 0 {
		cfg.Port = defaultRQDPort
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = defaultRQDCallTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = defaultRQDIdleTimeout
	}
	if cfg.BreakerFailures <= 0 {
		cfg.BreakerFailures = defaultBreakerFailures
	}
	if cfg.BreakerCooldown <= 0 {
		cfg.BreakerCooldown = defaultBreakerCooldown
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &RQDClient{
		cfg:     cfg,
		log:     cfg.Logger,
		conns:   map[string]*rqdConn{},
		breaker: map[string]*breakerState{},
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if cfg.TLS != nil {
		c.creds = credentials.NewTLS(cfg.TLS)
	} else {
		c.creds = insecure.NewCredentials()
	}
	go c.janitor(max(cfg.IdleTimeout/2, time.Second))
	return c
}

// OnHostAllowed sets RQDHooks.OnHostAllowed, for a listener built
// after the client (the loop). Breakers opened before keep no timer.
func (c *RQDClient) OnHostAllowed(fn func(host string)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cfg.Hooks.OnHostAllowed = fn
}

// Close stops the janitor and closes every connection; calls still running
// end with an error. Later calls return errRQDClientClosed.
func (c *RQDClient) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	conns := c.conns
	c.conns = map[string]*rqdConn{}
	for _, b := range c.breaker {
		b.stopTimer()
	}
	c.mu.Unlock()
	close(c.stop)
	<-c.done
	for target, e := range conns {
		if err := e.cc.Close(); err != nil {
			c.log.Debug("close rqd connection", "host", target, "err", err)
		}
	}
}

// Launch sends one frame to the RQD at hostAddr (a host name or address,
// with or without a port) and classifies the answer.
func (c *RQDClient) Launch(ctx context.Context, hostAddr string, rf *rqd.RunFrame) Result {
	start := time.Now()
	code, sent, gotStatus, noBreaker, err := c.call(ctx, hostAddr, func(ctx context.Context, stub rqd.RqdInterfaceClient) error {
		_, err := stub.LaunchFrame(ctx, &rqd.RqdStaticLaunchFrameRequest{RunFrame: rf}, grpc.WaitForReady(false))
		return err
	})
	r := Result{Outcome: classifyLaunch(err, sent, gotStatus), Sent: sent, Code: code, Elapsed: time.Since(start)}
	if err != nil {
		r.Err = fmt.Errorf("launch frame %s on %s: %s: %w", rf.GetFrameId(), hostAddr, r.Outcome, err)
	}
	if !noBreaker {
		c.note(hostAddr, r.Outcome == Launched || r.Outcome == AlreadyRunning, r.Err)
	}
	if h := c.cfg.Hooks.OnLaunch; h != nil {
		h(hostAddr, r)
	}
	return r
}

// kill asks the RQD at hostAddr to kill a frame and classifies the answer.
// An empty message is replaced by a default reason (RQD may require one).
func (c *RQDClient) kill(ctx context.Context, hostAddr, frameID, message string) killResult {
	if message == "" {
		message = defaultKillMessage
	}
	start := time.Now()
	code, sent, gotStatus, noBreaker, err := c.call(ctx, hostAddr, func(ctx context.Context, stub rqd.RqdInterfaceClient) error {
		_, err := stub.KillRunningFrame(ctx, &rqd.RqdStaticKillRunningFrameRequest{FrameId: frameID, Message: message}, grpc.WaitForReady(false))
		return err
	})
	r := killResult{Outcome: classifyKill(err, sent, gotStatus), Sent: sent, Code: code, Elapsed: time.Since(start)}
	if err != nil {
		r.Err = fmt.Errorf("kill frame %s on %s: %s: %w", frameID, hostAddr, r.Outcome, err)
	}
	if !noBreaker && r.Outcome != killError {
		c.note(hostAddr, r.Outcome != killUnreachable, r.Err)
	}
	if h := c.cfg.Hooks.OnKill; h != nil {
		h(hostAddr, r)
	}
	return r
}

// running asks the RQD at hostAddr which frames it runs now (ReportStatus)
// and returns the resource id each was launched with, by frame id. A host
// that does not answer says nothing about the host's breaker: the launch or
// kill that follows does.
func (c *RQDClient) running(ctx context.Context, hostAddr string) (map[string]string, error) {
	var resp *rqd.RqdStaticReportStatusResponse
	_, _, _, _, err := c.call(ctx, hostAddr, func(ctx context.Context, stub rqd.RqdInterfaceClient) error {
		var err error
		resp, err = stub.ReportStatus(ctx, &rqd.RqdStaticReportStatusRequest{}, grpc.WaitForReady(false))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("report status of %s: %w", hostAddr, err)
	}
	frames := resp.GetHostReport().GetFrames()
	out := make(map[string]string, len(frames))
	for _, f := range frames {
		out[f.GetFrameId()] = f.GetResourceId()
	}
	return out, nil
}

// call runs one RPC on the host's cached connection under the call deadline
// and reports its status code, whether the request was sent, whether a status
// came from the peer, and whether the result says nothing about the host
// (the caller's own context ended, the client is closed, the address is bad),
// so that the breaker ignores it.
func (c *RQDClient) call(ctx context.Context, hostAddr string, rpc func(context.Context, rqd.RqdInterfaceClient) error) (code codes.Code, sent, gotStatus, noBreaker bool, err error) {
	e, err := c.acquire(hostAddr)
	if err != nil {
		code := codes.InvalidArgument
		if errors.Is(err, errRQDClientClosed) {
			code = codes.Canceled
		}
		return code, false, false, true, err
	}
	defer c.release(e)
	tr := &callTracker{}
	cctx, cancel := context.WithTimeout(context.WithValue(ctx, callTrackerKey{}, tr), c.cfg.CallTimeout)
	defer cancel()
	err = rpc(cctx, e.stub)
	return status.Code(err), tr.sent.Load(), tr.gotStatus.Load(), ctx.Err() != nil, err
}

func classifyLaunch(err error, sent, gotStatus bool) Outcome {
	if err == nil {
		return Launched
	}
	st := status.Convert(err)
	switch {
	case gotStatus && (st.Code() == codes.AlreadyExists || strings.Contains(strings.ToLower(st.Message()), "already running")):
		return AlreadyRunning
	case gotStatus && unsettled(st.Code()):
		return Ambiguous
	case gotStatus, !sent:
		return Refused
	}
	return Ambiguous
}

func classifyKill(err error, sent, gotStatus bool) killOutcome {
	if err == nil {
		return killed
	}
	st := status.Convert(err)
	switch {
	case gotStatus && (st.Code() == codes.NotFound || strings.Contains(strings.ToLower(st.Message()), "could not find frame")):
		return notRunning
	case gotStatus && unsettled(st.Code()):
		return killUnreachable
	case gotStatus:
		return killError
	}
	return killUnreachable
}

// unsettled codes leave open whether the handler ran, even when they come
// from the peer.
func unsettled(c codes.Code) bool {
	switch c {
	case codes.DeadlineExceeded, codes.Canceled, codes.Unavailable, codes.Internal, codes.DataLoss:
		return true
	}
	return false
}

// target is the dial address of a host: its own port if it names one, else
// the configured RQD port.
func (c *RQDClient) target(hostAddr string) (string, error) {
	host, port, err := net.SplitHostPort(hostAddr)
	if err != nil {
		host, port = strings.TrimSuffix(strings.TrimPrefix(hostAddr, "["), "]"), strconv.Itoa(c.cfg.Port)
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return "", fmt.Errorf("host address %q: bad port", hostAddr)
	}
	if host == "" || strings.Contains(host, ":") && net.ParseIP(host) == nil {
		return "", fmt.Errorf("host address %q: bad host", hostAddr)
	}
	return net.JoinHostPort(host, port), nil
}

// acquire returns the host's connection, dialing lazily, and holds it in use
// until release.
func (c *RQDClient) acquire(hostAddr string) (*rqdConn, error) {
	target, err := c.target(hostAddr)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errRQDClientClosed
	}
	e := c.conns[target]
	if e == nil {
		// passthrough: the address goes to the dialer as it is, resolved
		// at each connect, without gRPC's DNS resolver and its re-resolution
		// rate limit.
		cc, err := grpc.NewClient("passthrough:///"+target,
			grpc.WithTransportCredentials(c.creds),
			grpc.WithStatsHandler(callStats{}),
			// Reconnect soon after a host comes back; gRPC's default backoff
			// grows to two minutes.
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
				MinConnectTimeout: c.cfg.CallTimeout,
			}),
		)
		if err != nil {
			return nil, fmt.Errorf("rqd connection to %s: %w", target, err)
		}
		e = &rqdConn{cc: cc, stub: rqd.NewRqdInterfaceClient(cc)}
		c.conns[target] = e
	}
	e.inflight++
	e.lastUsed = c.cfg.Now()
	return e, nil
}

func (c *RQDClient) release(e *rqdConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.inflight--
	e.lastUsed = c.cfg.Now()
}

// connCount is the number of cached host connections.
func (c *RQDClient) connCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}

func (c *RQDClient) janitor(every time.Duration) {
	defer close(c.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.sweep()
		}
	}
}

// sweep closes the connections that have been idle for IdleTimeout and
// returns how many it closed. A connection in use is never closed.
func (c *RQDClient) sweep() int {
	c.mu.Lock()
	now := c.cfg.Now()
	var idle []*grpc.ClientConn
	for target, e := range c.conns {
		if e.inflight == 0 && now.Sub(e.lastUsed) >= c.cfg.IdleTimeout {
			idle = append(idle, e.cc)
			delete(c.conns, target)
		}
	}
	c.mu.Unlock()
	for _, cc := range idle {
		if err := cc.Close(); err != nil {
			c.log.Debug("close idle rqd connection", "err", err)
		}
	}
	return len(idle)
}

// Allowed reports whether booking should use the host: false while its
// breaker is open.
func (c *RQDClient) Allowed(hostAddr string) bool {
	if c.tripped.Load() == 0 {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.breaker[hostAddr]
	return b == nil || !c.cfg.Now().Before(b.openUntil)
}

// note feeds one call's result (err: why it failed) to the host's breaker.
// The breaker is logged when it opens and when it closes, never for the
// failures between: those are counted (RQDHooks) and summarized by the
// owner.
func (c *RQDClient) note(hostAddr string, ok bool, err error) {
	if ok {
		c.mu.Lock()
		var openFor time.Duration
		b := c.breaker[hostAddr]
		wasOpen := b != nil && !b.openUntil.IsZero()
		if b != nil {
			b.stopTimer()
			if wasOpen {
				c.tripped.Add(-1)
				openFor = c.cfg.Now().Sub(b.openedAt)
			}
			delete(c.breaker, hostAddr)
		}
		allowed := c.cfg.Hooks.OnHostAllowed
		c.mu.Unlock()
		if wasOpen {
			c.log.Info("rqd host breaker closed", "host", hostAddr, "open_for", openFor)
			// Closed before its cooldown, its timer stopped: only this
			// tells matching's clusters the host is offered again.
			if allowed != nil {
				allowed(hostAddr)
			}
		}
		return
	}
	if h := c.cfg.Hooks.OnFailure; h != nil {
		h(hostAddr, err)
	}
	c.mu.Lock()
	b := c.breaker[hostAddr]
	if b == nil {
		b = &breakerState{}
		c.breaker[hostAddr] = b
	}
	b.failures++
	if b.failures < c.cfg.BreakerFailures {
		c.mu.Unlock()
		return
	}
	now := c.cfg.Now()
	opened := b.openUntil.IsZero()
	if opened {
		c.tripped.Add(1)
		b.openedAt = now
	}
	b.openUntil = now.Add(c.cfg.BreakerCooldown)
	if h := c.cfg.Hooks.OnHostAllowed; h != nil && !c.closed {
		b.stopTimer()
		b.halfOpen = time.AfterFunc(c.cfg.BreakerCooldown, func() { h(hostAddr) })
	}
	failures := b.failures
	c.mu.Unlock()
	if opened {
		c.log.Warn("rqd host breaker open", "host", hostAddr, "failures", failures, "cooldown", c.cfg.BreakerCooldown,
			"err", err)
		if h := c.cfg.Hooks.OnBreakerOpen; h != nil {
			h(hostAddr)
		}
	}
}

func (b *breakerState) stopTimer() {
	if b.halfOpen != nil {
		b.halfOpen.Stop()
		b.halfOpen = nil
	}
}

// callTracker records, for one call, what the transport did with it.
type callTracker struct {
	sent      atomic.Bool // headers queued on a connection: RQD may see the call
	gotStatus atomic.Bool // a status arrived from the peer
}

type callTrackerKey struct{}

// callStats is the gRPC stats handler that fills each call's tracker.
type callStats struct{}

func (callStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (callStats) HandleRPC(ctx context.Context, s stats.RPCStats) {
	tr, _ := ctx.Value(callTrackerKey{}).(*callTracker)
	if tr == nil {
		return
	}
	switch s.(type) {
	case *stats.OutHeader:
		tr.sent.Store(true)
	case *stats.InTrailer:
		tr.gotStatus.Store(true)
	}
}

func (callStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (callStats) HandleConn(context.Context, stats.ConnStats) {}
