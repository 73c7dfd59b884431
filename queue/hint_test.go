package queue

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestParseHint(t *testing.T) {
	t.Parallel()
	const id = "0b7a4b2e-1111-4c4c-9d9d-000000000001"
	for _, tc := range []struct {
		payload string
		kind    string
		ids     int
		err     string
	}{
		{"job:" + id, "job", 1, ""},
		{"show:a,b.c,D_e", "show", 3, ""},
		{"alloc:x", "alloc", 1, ""},
		{"", "", 0, `no "kind:" prefix`},
		{"job", "", 0, `no "kind:" prefix`},
		{"nope:abc", "", 0, `kind "nope" is not job, show, folder, limit or alloc`},
		{"job:", "", 0, "id 1 of 1 is empty"},
		{"job:a,,b", "", 0, "id 2 of 3 is empty"},
		{"job:a b", "", 0, `id 1 of 1 "a b" is not a key`},
		{"show:" + strings.Repeat("x", 65), "", 0, "is not a key (1 to 64 letters, digits"},
	} {
		kind, ids, err := parseHint(tc.payload)
		switch {
		case tc.err == "" && (err != nil || kind != tc.kind || len(ids) != tc.ids):
			t.Errorf("%q: %q %q %v, want %q and %d ids", tc.payload, kind, ids, err, tc.kind, tc.ids)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: got %v, want an error containing %q", tc.payload, err, tc.err)
		}
	}
}

// FuzzHint: whatever a cuesched_work payload holds (the triggers send it,
// but anyone with the right to NOTIFY can), the queue never panics; it takes
// exactly the payloads that are kind:id,... with ids that could be keys, and
// logs and counts every other one with what is wrong.
func FuzzHint(f *testing.F) {
	for _, p := range []string{"job:0b7a4b2e-1111-4c4c-9d9d-000000000001", "show:a,b", "folder:f", "limit:l",
		"alloc:a", "", "job", "job:", "job:a,,b", "nope:abc", "job:a b", "job:é", "job:a:b", "JOB:a"} {
		f.Add(p)
	}
	valid := map[string]bool{"job": true, "show": true, "folder": true, "limit": true, "alloc": true}
	f.Fuzz(func(t *testing.T, payload string) {
		kind, ids, err := parseHint(payload)
		if err == nil {
			if !valid[kind] || kind+":"+strings.Join(ids, ",") != payload {
				t.Fatalf("%q taken as %q %q", payload, kind, ids)
			}
			for _, id := range ids {
				if !validID(id) {
					t.Fatalf("%q taken with id %q", payload, id)
				}
			}
		}
		var log bytes.Buffer
		q := New(nil, slog.New(slog.NewTextHandler(&log, nil)))
		q.Metrics = NewMetrics(prometheus.NewRegistry())
		q.Notify(payload)
		malformed := counted(q.Metrics.Malformed)
		switch {
		case err == nil && (malformed != 0 || counted(q.Metrics.Payloads.WithLabelValues(kind)) != 1):
			t.Fatalf("%q: a valid hint not counted as one (malformed %v)", payload, malformed)
		case err != nil && (malformed != 1 || !strings.Contains(log.String(), "malformed work hint skipped") ||
			!strings.Contains(log.String(), "err=")):
			t.Fatalf("%q: a malformed hint not counted and logged with its error: %v, log %q", payload, malformed, log.String())
		}
	})
}

func counted(c prometheus.Counter) float64 {
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		return -1
	}
	return d.GetCounter().GetValue()
}
