package fakerqd

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
)

// Farm is a set of fake RQDs, one per host address.
type Farm struct {
	servers []*Server
	byAddr  map[string]*Server

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever any server records a call
}

// StartFarm starts one fake RQD on each address, all with the same options.
// On an error it stops those already started.
func StartFarm(addrs []string, opts Options) (*Farm, error) {
	f := &Farm{byAddr: make(map[string]*Server, len(addrs)), changed: make(chan struct{})}
	for _, a := range addrs {
		s, err := start(a, opts, f.wake)
		if err != nil {
			f.Close()
			return nil, err
		}
		f.servers = append(f.servers, s)
		f.byAddr[a] = s
		f.byAddr[s.Addr()] = s
	}
	return f, nil
}

// LoopbackAddr is the i-th simulated host's address: 127.a.b.c:port with
// a >= 1, so that no host is 127.0.0.1 and each has an address of its own
// (all of 127.0.0.0/8 is local on Linux).
func LoopbackAddr(i, port int) string {
	const perB = 254 // c runs 1..254
	c := i%perB + 1
	b := i / perB % 256
	a := i/(perB*256) + 1
	return net.JoinHostPort(fmt.Sprintf("127.%d.%d.%d", a, b, c), strconv.Itoa(port))
}

// Server returns the fake RQD started for addr (as given, or as listening),
// or nil.
func (f *Farm) Server(addr string) *Server { return f.byAddr[addr] }

// Servers returns the farm's fake RQDs in the order of their addresses.
func (f *Farm) Servers() []*Server { return f.servers }

// Close stops every fake RQD of the farm.
func (f *Farm) Close() {
	for _, s := range f.servers {
		s.Close()
	}
}

func (f *Farm) wake() {
	f.mu.Lock()
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// Launches is the number of LaunchFrame calls the whole farm received.
func (f *Farm) Launches() int {
	n := 0
	for _, s := range f.servers {
		s.mu.Lock()
		n += len(s.launches)
		s.mu.Unlock()
	}
	return n
}

// WaitLaunches blocks until the farm received at least n LaunchFrame calls
// or ctx ends.
func (f *Farm) WaitLaunches(ctx context.Context, n int) error {
	for {
		f.mu.Lock()
		ch := f.changed
		f.mu.Unlock()
		if f.Launches() >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("fake farm: %d of %d launches: %w", f.Launches(), n, ctx.Err())
		}
	}
}
