package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// fleet is the demo's cuesched instances, each a process of this binary
// (runChild), and what they report: every booking with its commit time.
type fleet struct {
	names []string

	mu      sync.Mutex
	procs   map[string]*child
	booked  map[string]int       // frames booked, per instance
	jobs    map[string]time.Time // job id -> its first booking's commit
	total   int
	commits []time.Time // every booking's commit, as reported
	first   time.Time   // first and last booking commit
	last    time.Time
	changed chan struct{} // closed and replaced on every batch of bookings
}

// child is one instance process.
type child struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{} // closed once the process has been waited for
	err    error         // how it exited, once exited is closed
	killed bool          // guarded by the fleet's mu

	mu   sync.Mutex
	tail []string // its last log lines
	logs int      // how many it wrote
}

func newFleet() *fleet {
	return &fleet{procs: map[string]*child{}, booked: map[string]int{}, jobs: map[string]time.Time{},
		changed: make(chan struct{})}
}

// start starts an instance named name on the demo's database.
func (f *fleet) start(name, dsn string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the demo's own binary to start instance %s: %w", name, err)
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envChild+"="+name, envDSN+"="+dsn, envMetrics+"="+addr)
	cmd.SysProcAttr = childAttr()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("instance %s: %w", name, err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return fmt.Errorf("instance %s: %w", name, err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start instance %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, exited: make(chan struct{})}
	f.mu.Lock()
	f.names = append(f.names, name)
	f.procs[name] = c
	f.mu.Unlock()
	var reading sync.WaitGroup
	reading.Add(2)
	go func() { defer reading.Done(); f.read(name, stdout) }()
	go func() { defer reading.Done(); c.keepLogs(stderr) }()
	go func() {
		// Wait closes the pipes: read them to the end first.
		reading.Wait()
		c.err = cmd.Wait()
		close(c.exited)
	}()
	return nil
}

// read records the bookings an instance reports.
func (f *fleet) read(name string, r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		at, job, err := parseBooking(sc.Text())
		if err != nil {
			continue // nothing else is written there; a torn last line of a killed instance
		}
		f.mu.Lock()
		f.booked[name]++
		f.total++
		f.commits = append(f.commits, at)
		if _, ok := f.jobs[job]; !ok {
			f.jobs[job] = at
		}
		if f.first.IsZero() || at.Before(f.first) {
			f.first = at
		}
		if at.After(f.last) {
			f.last = at
		}
		close(f.changed)
		f.changed = make(chan struct{})
		f.mu.Unlock()
	}
}

// keepLogs keeps an instance's last log lines, shown if it fails.
func (c *child) keepLogs(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		c.mu.Lock()
		c.logs++
		c.tail = append(c.tail, sc.Text())
		if len(c.tail) > 5 {
			c.tail = c.tail[1:]
		}
		c.mu.Unlock()
	}
}

// bookings is what the instances reported so far.
type bookings struct {
	total       int
	perInstance map[string]int
	first, last time.Time
	changed     <-chan struct{} // closed on the next report
}

func (f *fleet) bookings() bookings {
	f.mu.Lock()
	defer f.mu.Unlock()
	per := make(map[string]int, len(f.booked))
	for k, v := range f.booked {
		per[k] = v
	}
	return bookings{total: f.total, perInstance: per, first: f.first, last: f.last, changed: f.changed}
}

// commitTimes is every booking's commit reported so far.
func (f *fleet) commitTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.commits...)
}

// bookedAt is the commit of job's first booking, if reported.
func (f *fleet) bookedAt(job string) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	at, ok := f.jobs[job]
	return at, ok
}

// kill ends an instance with SIGKILL, as a crash would.
func (f *fleet) kill(name string) error {
	f.mu.Lock()
	c := f.procs[name]
	f.mu.Unlock()
	if c == nil {
		return fmt.Errorf("no instance %s", name)
	}
	f.mu.Lock()
	c.killed = true
	f.mu.Unlock()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill instance %s: %w", name, err)
	}
	<-c.exited
	return nil
}

// failed is the first instance that exited without being killed, with its
// last log lines, or nil.
func (f *fleet) failed() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, name := range f.names {
		c := f.procs[name]
		select {
		case <-c.exited:
			if !c.killed {
				return fmt.Errorf("instance %s exited early (%v); its last lines:\n%s", name, c.err, c.lastLines())
			}
		default:
		}
	}
	return nil
}

func (c *child) lastLines() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.tail, "\n")
}

// stop stops every instance still running as `cuesched run` is stopped
// (SIGTERM: batches in flight finish, clusters are handed over) and says
// how each ended.
func (f *fleet) stop(within time.Duration) error {
	f.mu.Lock()
	procs := make([]*child, 0, len(f.names))
	killed := map[*child]bool{}
	for _, name := range f.names {
		c := f.procs[name]
		procs = append(procs, c)
		killed[c] = c.killed
	}
	f.mu.Unlock()
	var errs []error
	for _, c := range procs {
		if killed[c] {
			continue
		}
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for _, c := range procs {
		select {
		case <-c.exited:
		case <-ctx.Done():
			_ = c.cmd.Process.Kill()
			<-c.exited
			errs = append(errs, fmt.Errorf("instance %s did not stop within %s of SIGTERM", c.name, within))
			continue
		}
		if !killed[c] && c.err != nil {
			errs = append(errs, fmt.Errorf("instance %s: %v; its last lines:\n%s", c.name, c.err, c.lastLines()))
		}
	}
	return errors.Join(errs...)
}
