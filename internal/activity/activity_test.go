package activity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// record is one logged line, its attributes flattened (groups as a.b).
type record struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

// recorder is a slog handler that keeps every record.
type recorder struct {
	mu   sync.Mutex
	recs []record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	attrs := map[string]string{}
	var add func(prefix string, a slog.Attr)
	add = func(prefix string, a slog.Attr) {
		if a.Value.Kind() == slog.KindGroup {
			for _, g := range a.Value.Group() {
				add(prefix+a.Key+".", g)
			}
			return
		}
		attrs[prefix+a.Key] = a.Value.String()
	}
	rec.Attrs(func(a slog.Attr) bool { add("", a); return true })
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, record{rec.Level, rec.Message, attrs})
	return nil
}

// take returns the records kept so far and forgets them.
func (r *recorder) take() []record {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.recs
	r.recs = nil
	return out
}

func (r record) String() string { return fmt.Sprintf("%s %q %v", r.level, r.msg, r.attrs) }

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTestLog(rec *recorder, clock *fakeClock) *Log {
	return New(Config{
		Logger:   slog.New(rec),
		Now:      clock.now,
		Clusters: func() int { return 3 },
		Waiting:  func() map[string]int { return map[string]int{"capacity": 7, "cap": 2} },
	})
}

func TestFlush(t *testing.T) {
	refused := errors.New("launch frame f on h1: refused: rqd is lockNimby")
	for _, tc := range []struct {
		name   string
		events func(l *Log)
		want   []string // each line: level msg attr=value...
	}{
		{name: "idle interval prints nothing", events: func(*Log) {}},
		{
			name: "booking prints one summary with the totals",
			events: func(l *Log) {
				l.Attempts(10, 2)
				l.Attempts(5, 0)
				for range 14 {
					l.Launched()
				}
				l.Released()
			},
			want: []string{`INFO booking summary over=30s booked=15 dropped=2 launched=14 released=1 rqd_failures=0 clusters=3 layers_waiting.cap=2 layers_waiting.capacity=7`},
		},
		{
			name: "N failures of one host print one line with count N",
			events: func(l *Log) {
				for i := range 5 {
					l.Failed("h1", fmt.Errorf("failure %d", i))
				}
				l.Failed("h1", refused)
			},
			want: []string{`WARN rqd host failing over=30s host=h1 failures=6 last_err=` + refused.Error()},
		},
		{
			name: "failures alone print no summary; hosts by count",
			events: func(l *Log) {
				l.Failed("h2", refused)
				l.Failed("h1", refused)
				l.Failed("h1", refused)
			},
			want: []string{
				`WARN rqd host failing over=30s host=h1 failures=2 last_err=` + refused.Error(),
				`WARN rqd host failing over=30s host=h2 failures=1 last_err=` + refused.Error(),
			},
		},
		{
			name: "many failing hosts: the worst each on a line, the rest on one",
			events: func(l *Log) {
				for i := range maxHostLines + 3 {
					for range i + 1 {
						l.Failed(fmt.Sprintf("h%02d", i), refused)
					}
				}
			},
			want: func() []string {
				var out []string
				for i := maxHostLines + 2; i >= 3; i-- {
					out = append(out, fmt.Sprintf("WARN rqd host failing over=30s host=h%02d failures=%d last_err=%s", i, i+1, refused))
				}
				return append(out, `WARN more rqd hosts failing over=30s hosts=3 failures=6`)
			}(),
		},
		{
			name: "a summary counts the interval's failures",
			events: func(l *Log) {
				l.Attempts(1, 0)
				l.Failed("h1", refused)
			},
			want: []string{
				`INFO booking summary over=30s booked=1 dropped=0 launched=0 released=0 rqd_failures=1 clusters=3 layers_waiting.cap=2 layers_waiting.capacity=7`,
				`WARN rqd host failing over=30s host=h1 failures=1 last_err=` + refused.Error(),
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, clock := &recorder{}, &fakeClock{t: time.Unix(1700000000, 0)}
			l := newTestLog(rec, clock)
			tc.events(l)
			clock.advance(30 * time.Second)
			l.Flush()
			checkLines(t, rec.take(), tc.want)
			// The next interval starts empty: nothing happened in it.
			clock.advance(30 * time.Second)
			l.Flush()
			checkLines(t, rec.take(), nil)
		})
	}
}

// checkLines compares records with lines "LEVEL msg key=value ..." (the
// keys in the order given; every attribute of a record must be listed).
func checkLines(t *testing.T, got []record, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d lines, want %d:\n%v", len(got), len(want), got)
	}
	for i, w := range want {
		level, rest, _ := strings.Cut(w, " ")
		var msg string
		var kvs []string
		for f := range strings.FieldsSeq(rest) {
			if strings.Contains(f, "=") || len(kvs) > 0 {
				kvs = append(kvs, f)
			} else {
				msg = strings.TrimSpace(msg + " " + f)
			}
		}
		// Values may hold spaces (errors): a field without "=" continues the
		// previous value.
		want := map[string]string{}
		var last string
		for _, kv := range kvs {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				want[last] += " " + kv
				continue
			}
			want[k], last = v, k
		}
		g := got[i]
		if g.level.String() != level || g.msg != msg || len(g.attrs) != len(want) {
			t.Fatalf("line %d: %v, want %s", i, g, w)
		}
		for k, v := range want {
			if g.attrs[k] != v {
				t.Fatalf("line %d: %s=%q, want %q (%v)", i, k, g.attrs[k], v, g)
			}
		}
	}
}

// Run summarizes on every tick of its ticker, says nothing of an idle
// interval, and summarizes what is left when it stops.
func TestRun(t *testing.T) {
	run := func(events func(l *Log, clock *fakeClock, tick chan<- time.Time)) []record {
		rec, clock := &recorder{}, &fakeClock{t: time.Unix(1700000000, 0)}
		tick := make(chan time.Time)
		l := newTestLog(rec, clock)
		l.cfg.Tick = tick
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- l.Run(ctx) }()
		events(l, clock, tick)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		return rec.take()
	}
	// Each send returns once Run took the tick, so once the previous
	// interval is written; the test touches nothing after the last one.
	got := run(func(l *Log, clock *fakeClock, tick chan<- time.Time) {
		l.Attempts(4, 0)
		clock.advance(10 * time.Second)
		tick <- clock.t
		tick <- clock.t
	})
	checkLines(t, got, []string{
		`INFO booking summary over=10s booked=4 dropped=0 launched=0 released=0 rqd_failures=0 clusters=3 layers_waiting.cap=2 layers_waiting.capacity=7`,
	})
	got = run(func(l *Log, clock *fakeClock, _ chan<- time.Time) {
		l.Attempts(2, 0)
		clock.advance(5 * time.Second)
	})
	checkLines(t, got, []string{
		`INFO booking summary over=5s booked=2 dropped=0 launched=0 released=0 rqd_failures=0 clusters=3 layers_waiting.cap=2 layers_waiting.capacity=7`,
	})
}

// Counting a booking round allocates nothing: it is on the loop's path.
func TestAttemptsAllocateNothing(t *testing.T) {
	l := New(Config{Logger: slog.New(slog.DiscardHandler)})
	if n := testing.AllocsPerRun(100, func() { l.Attempts(3, 1); l.Launched(); l.Released() }); n != 0 {
		t.Fatalf("%v allocations per event", n)
	}
}
