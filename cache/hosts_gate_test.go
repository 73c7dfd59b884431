package cache

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cuesched/cuesched/internal/rqd"
	"github.com/cuesched/cuesched/internal/testworld/fakerqd"
	"github.com/cuesched/cuesched/launch"
	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/match/matchtest"
)

// gateSet refuses the host names it holds.
type gateSet struct {
	mu      sync.Mutex
	refused map[string]bool
}

func (g *gateSet) Allowed(name string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.refused[name]
}

func (g *gateSet) set(name string, refused bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.refused[name] = refused
}

// A host the gate refuses is walked by neither Walk nor WalkUncontested,
// and is walked again once the gate allows it.
func TestGateHidesHosts(t *testing.T) {
	f := newFake(nil, 0)
	f.allocs(t)
	for _, id := range []string{"h1", "h2"} {
		m := baseHost(id, "a1")
		m.tags["t-"+id] = "general"
		f.addHost(t, m)
	}
	g := &gateSet{refused: map[string]bool{}}
	f.r.hosts.SetGate(g)
	walked := func(uncontested bool) []string {
		var ids []string
		visit := func(h match.Host) bool { ids = append(ids, h.ID); return true }
		if uncontested {
			f.r.hosts.WalkUncontested("local", "general", match.Resources{}, nil, visit)
		} else {
			f.r.hosts.Walk("local", "general", match.Resources{}, nil, visit)
		}
		return ids
	}
	g.set("name-h1", true)
	for _, unc := range []bool{false, true} {
		if got := walked(unc); len(got) != 1 || got[0] != "h2" {
			t.Fatalf("uncontested %v: walked %v with h1 refused, want [h2]", unc, got)
		}
	}
	g.set("name-h1", false)
	if got := walked(false); len(got) != 2 {
		t.Fatalf("walked %v once h1 is allowed again, want both", got)
	}
	if h, ok := f.r.hosts.HostNamed("name-h2"); !ok || h.ID != "h2" {
		t.Fatalf("HostNamed(name-h2) = %+v, %v", h, ok)
	}
	checkIndex(t, f.r.hosts)
}

// With an RQD client's breaker as the gate, a host whose RQD refuses
// launches gets no placements while its breaker is open (no placement the
// booking's re-check would drop as host-breaker), and gets them again once
// the cooldown has passed (OnHostAllowed, which wakes its clusters).
func TestBreakerKeepsHostOutOfMatching(t *testing.T) {
	srv, err := fakerqd.Start("127.0.0.1:0", fakerqd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	hostName, portStr, err := net.SplitHostPort(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		t.Fatal(err)
	}
	halfOpen := make(chan string, 4)
	client := launch.NewRQDClient(launch.RQDConfig{
		Port: port, BreakerFailures: 3, BreakerCooldown: 200 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
		Hooks: launch.RQDHooks{OnHostAllowed: func(h string) { halfOpen <- h }},
	})
	t.Cleanup(client.Close)

	f := newFake(nil, 0)
	f.allocs(t)
	m := baseHost("h1", "a1")
	m.name = hostName
	m.tags["t1"] = "general"
	f.addHost(t, m)
	f.r.hosts.SetGate(client)
	caps := matchtest.NewCaps()
	caps.Subs[matchtest.SubKey{Show: "s", Alloc: "a1"}] = match.Subscription{Size: 1000, Burst: 1 << 30}
	plan := func() int {
		l := &match.Layer{ID: "l", JobID: "j", ShowID: "s", FolderID: "f", Facility: "local", Priority: 1,
			Tags: []string{"general"}, Min: match.Resources{Cores: 100, Mem: gb}, Frames: []match.Frame{{ID: "f1"}}}
		res := match.Plan([]*match.Layer{l}, f.r.hosts, caps, match.Options{Allocs: []string{"a1"}})
		for _, p := range res.Placements {
			f.r.hosts.Return(p.Host.ID, p.Size) // nothing is booked here
		}
		return len(res.Placements)
	}
	if plan() != 1 {
		t.Fatal("the host is not placed on before its RQD refuses")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv.SetDefault(fakerqd.Reply{Action: fakerqd.Refuse, Message: "Not launching, rqd is lockNimby"})
	for range 3 {
		client.Launch(ctx, hostName, &rqd.RunFrame{FrameId: "x", JobId: "j", Command: "true"})
	}
	if client.Allowed(hostName) {
		t.Fatal("the breaker did not open after 3 refusals")
	}
	// Round after round while the breaker is open: every placement here
	// would be a drop.
	placed := 0
	for range 100 {
		placed += plan()
	}
	if placed != 0 {
		t.Fatalf("%d placements on a host whose breaker is open", placed)
	}
	select {
	case h := <-halfOpen:
		if h != hostName {
			t.Fatalf("half open %s, want %s", h, hostName)
		}
	case <-ctx.Done():
		t.Fatal("the breaker's cooldown never passed")
	}
	if plan() != 1 {
		t.Fatal("the host is not placed on after its breaker's cooldown")
	}
}
