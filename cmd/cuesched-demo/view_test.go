package main

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"
)

// On a terminal the view is redrawn in place: each redraw moves the cursor
// up over the block drawn before and erases it; an event is printed above
// the block and stays.
func TestViewRedrawsInPlace(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	v := &view{out: &out, tty: true, instances: []string{"demo-1", "demo-2"}, killed: map[string]bool{}}
	s := Sample{At: time.Second, Waiting: 10, Running: 5, Done: 1, Booked: 6, Rate: 6,
		Clusters: map[string]int{"demo-1": 3, "demo-2": 4}}
	v.draw(s)
	lines := strings.Count(out.String(), "\n")
	out.Reset()
	v.killed["demo-2"] = true
	v.event(Event{At: 2 * time.Second, Text: "SIGKILL to demo-2"})
	s.Clusters = map[string]int{"demo-1": 5, "": 2}
	v.draw(s)
	got := out.String()
	want := "\x1b[" + strconv.Itoa(lines) + "A\x1b[J" + "demo:    2.0s  SIGKILL to demo-2\n"
	if !strings.HasPrefix(got, want) {
		t.Errorf("after a redraw and an event the output starts %q, want %q", got, want)
	}
	if !strings.Contains(got, "clusters demo-1 5, nobody 2") {
		t.Errorf("the redrawn block does not show the clusters moved:\n%s", got)
	}
	if strings.Count(got, "\x1b[J") != 1 {
		t.Errorf("the event already erased the block; the redraw must not move up again:\n%q", got)
	}
}

// Elsewhere it is one line a second, naming a killed instance while it
// still owns clusters.
func TestViewLine(t *testing.T) {
	t.Parallel()
	v := &view{instances: []string{"demo-1", "demo-2"}, killed: map[string]bool{"demo-2": true}}
	got := v.line(Sample{At: 12500 * time.Millisecond, Waiting: 4000, Running: 1500, Done: 500, Booked: 2000,
		Rate: 250, Clusters: map[string]int{"demo-1": 6, "demo-2": 7}, Stale: true})
	want := "  12.5s  waiting  4000  running  1500  done   500  booked  2000    250 frames/s  clusters demo-1 6, demo-2 (killed) 7 (counts from the previous second: the query did not answer in time)"
	if got != want {
		t.Errorf("line\n got %q\nwant %q", got, want)
	}
}

// A booking line an instance writes reads back as written.
func TestBookingLine(t *testing.T) {
	t.Parallel()
	at := time.Unix(1_790_000_000, 123_456_789)
	got, job, err := parseBooking(strings.TrimSuffix(formatBooking(at, "job-1"), "\n"))
	if err != nil || !got.Equal(at) || job != "job-1" {
		t.Errorf("parse(format) = %v, %q, %v", got, job, err)
	}
	if _, _, err := parseBooking("b 12 x y"); err == nil {
		t.Error("a torn line parsed")
	}
}
