package config

import (
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// setting is one named setting: the one place that says how a text value
// sets it, how its value reads back (defaults are rendered from Default()
// with it), what it means and which commands take it. Help, the README's
// table and deploy/cuesched.example.yaml are generated from these.
type setting struct {
	name    string
	aliases []string
	value
	meaning string // one sentence; `code` in backquotes (dropped in plain text)
	// unset says what an empty value means (empty defaults only).
	unset string
	// computed replaces the rendered default when Default() computes it on
	// the machine it runs on (the instance name).
	computed string
	commands []string
}

// value is how a setting's text reads into a Config field and back.
type value struct {
	kind   string   // for help: duration, int, number, string, bool, list or enum
	enum   []string // the values an enum accepts
	get    func() string
	set    func(v string) error
	isBool bool
}

// typeName is the setting's type as help shows it.
func (v value) typeName() string {
	if v.kind == "enum" {
		return strings.Join(v.enum, "|")
	}
	return v.kind
}

// The commands of cmd/cuesched that take settings.
var (
	runOnly      = []string{"run"}
	matching     = []string{"run", "explain"}
	withDatabase = []string{"run", "migrate", "status", "explain", "show", "audit"}
	audited      = []string{"run", "audit"}
)

func text(p *string) value {
	return value{kind: "string", get: func() string { return *p }, set: func(v string) error { *p = v; return nil }}
}

func choice(p *string, allowed ...string) value {
	return value{kind: "enum", enum: allowed, get: func() string { return *p }, set: func(v string) error {
		for _, a := range allowed {
			if v == a {
				*p = v
				return nil
			}
		}
		return fmt.Errorf("%q is not one of %s", v, strings.Join(allowed, ", "))
	}}
}

func duration(p *time.Duration, min time.Duration) value {
	return value{kind: "duration", get: func() string { return shortDuration(*p) }, set: func(v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < min {
			return fmt.Errorf("%q is not a duration of at least %s (e.g. 5s, 2m)", v, min)
		}
		*p = d
		return nil
	}}
}

func whole(p *int, min, max int) value {
	return value{kind: "int", get: func() string { return strconv.Itoa(*p) }, set: func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < min || n > max {
			return fmt.Errorf("%q is not a whole number from %d to %d", v, min, max)
		}
		*p = n
		return nil
	}}
}

func number(p *float64, min, max float64) value {
	return value{kind: "number", get: func() string { return strconv.FormatFloat(*p, 'g', -1, 64) }, set: func(v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) || f < min || f > max {
			return fmt.Errorf("%q is not a number from %g to %g", v, min, max)
		}
		*p = f
		return nil
	}}
}

// dsn is a database address: a libpq URL or key=value string, checked as
// the driver will read it so a malformed one is refused before anything
// connects (empty: the PG* environment variables).
func dsn(p *string) value {
	v := text(p)
	v.set = func(s string) error {
		if s != "" {
			if _, err := pgconn.ParseConfig(s); err != nil {
				// The driver's message masks the password; so does RedactDSN.
				return fmt.Errorf("%s: %w", RedactDSN(s), err)
			}
		}
		*p = s
		return nil
	}
	return v
}

// address is a TCP listen address, host:port (host may be empty: every
// interface; port a number or a service name).
func address(p *string) value {
	v := text(p)
	v.set = func(s string) error {
		_, port, err := net.SplitHostPort(s)
		if err == nil {
			_, err = net.LookupPort("tcp", port)
		}
		if err != nil {
			return fmt.Errorf("%q is not host:port, e.g. :10844 or 127.0.0.1:10844 (%v)", s, err)
		}
		*p = s
		return nil
	}
	return v
}

// maxInstanceName keeps "cuesched/"+name within the 63 bytes of
// application_name PostgreSQL keeps: a survivor ends a hung instance's
// sessions by it.
const maxInstanceName = 63 - len("cuesched/")

// instanceName is a name PostgreSQL keeps whole as an application_name:
// printable ASCII (it rewrites anything else) of at most maxInstanceName
// bytes.
func instanceName(p *string) value {
	v := text(p)
	v.set = func(s string) error {
		if s == "" || len(s) > maxInstanceName || strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r > '~' }) {
			return fmt.Errorf("%q is not 1 to %d printable ASCII characters (it names the instance's sessions, "+
				"as PostgreSQL's application_name, which keeps no more)", s, maxInstanceName)
		}
		*p = s
		return nil
	}
	return v
}

func boolean(p *bool) value {
	return value{kind: "bool", isBool: true, get: func() string { return strconv.FormatBool(*p) }, set: func(v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		*p = b
		return nil
	}}
}

func strs(p *[]string) value {
	return value{kind: "list", get: func() string { return strings.Join(*p, ",") }, set: func(v string) error {
		*p = list(v)
		return nil
	}}
}

func allocTags(p *[]AllocTag) value {
	return value{kind: "list", get: func() string {
		var items []string
		for _, t := range *p {
			items = append(items, t.Show+":"+t.Tag)
		}
		return strings.Join(items, ",")
	}, set: func(v string) error {
		*p = nil
		for _, item := range list(v) {
			show, tag, ok := strings.Cut(item, ":")
			if !ok || strings.TrimSpace(show) == "" || strings.TrimSpace(tag) == "" || strings.Contains(tag, ":") {
				return fmt.Errorf("%q is not show:tag (expected show:tag,show:tag,...)", item)
			}
			*p = append(*p, AllocTag{Show: strings.TrimSpace(show), Tag: strings.TrimSpace(tag)})
		}
		return nil
	}}
}

func list(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// shortDuration is d as a flag would be written: 5m, not 5m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// settings is every setting, bound to c's fields, in the order help and
// the docs list them.
func settings(c *Config) []setting {
	return []setting{
		{name: "db", value: dsn(&c.DB), commands: withDatabase, unset: "the PG* environment variables",
			meaning: "Cuebot's database: a libpq URL or key=value string; always a direct connection (ownership, listeners, the host cache's feed)"},
		{name: "pool-db", value: dsn(&c.PoolDB), commands: runOnly, unset: "db",
			meaning: "the booking pool's address of the same database, which may go through a transaction pooler (pgbouncer in transaction mode): its statements are never prepared by name"},
		{name: "config", value: text(&c.ConfigFile), commands: withDatabase, unset: "none",
			meaning: "YAML file of settings (its keys are the flag names); one file serves every command, each reading the settings it takes"},
		{name: "facility", value: text(&c.Facility), commands: runOnly, unset: "every facility",
			meaning: "book only this facility's clusters"},
		{name: "alloc-tags", aliases: []string{"alloc_tags"}, value: allocTags(&c.AllocTags), commands: runOnly, unset: "every show and tag",
			meaning: "`show:tag,...` (OpenCue's format): book only these shows, in the allocation clusters of these tags"},
		{name: "manual-tags", aliases: []string{"manual_tags"}, value: strs(&c.ManualTags), commands: runOnly, unset: "every tag bucket",
			meaning: "`tag,...`: book only the tag buckets holding these manual tags"},
		{name: "metrics-addr", value: address(&c.MetricsAddr), commands: runOnly,
			meaning: "address of the `/metrics`, `/healthz` and `/readyz` server"},
		{name: "rqd-port", value: whole(&c.RQDPort, 1, 65535), commands: runOnly,
			meaning: "the port RQD's gRPC server listens on"},
		{name: "rqd-timeout", value: duration(&c.RQDTimeout, time.Millisecond), commands: runOnly,
			meaning: "deadline of one call to RQD"},
		{name: "report-grace", value: duration(&c.ReportGrace, time.Millisecond), commands: runOnly,
			meaning: "how long a frame's completion report may take to reach Cuebot's database: a booking whose launch got no answer (or was inherited from an instance that died) and whose frame RQD no longer runs is released or launched again only after this, so a frame that ran to its end is not run twice"},
		{name: "rqd-tls-ca", value: text(&c.RQDTLSCA), commands: runOnly, unset: "plaintext, as RQD serves",
			meaning: "PEM file of the CAs that sign the RQD hosts' certificates: talk to RQD over TLS"},
		{name: "rqd-tls-cert", value: text(&c.RQDTLSCert), commands: runOnly, unset: "none",
			meaning: "with `rqd-tls-ca`, a PEM client certificate for RQDs that require one (with `rqd-tls-key`)"},
		{name: "rqd-tls-key", value: text(&c.RQDTLSKey), commands: runOnly, unset: "none",
			meaning: "with `rqd-tls-cert`, its PEM private key"},
		{name: "dry-run", value: boolean(&c.DryRun), commands: runOnly,
			meaning: "book in the database but launch nothing (test and benchmark databases only, never beside a production farm)"},
		{name: "feed", value: choice(&c.Feed, "events", "poll"), commands: runOnly,
			meaning: "how work is found: `events` (logical replication + notifications) or `poll` (no logical replication needed: hosts, usage, caps and work read every poll interval)"},
		{name: "poll-interval", value: duration(&c.PollEvery, 100*time.Millisecond), commands: runOnly,
			meaning: "with `--feed poll`: how often hosts, usage, caps and work are read"},
		{name: "counters", value: choice(&c.Counters, "cuesched", "cuebot"), commands: audited,
			meaning: "who brings managed shows' counters back after releases: `cuesched`, or `cuebot` for an older Cuebot that lowers them itself"},
		{name: "log-level", value: choice(&c.LogLevel, "debug", "info", "warn", "error"), commands: runOnly,
			meaning: "the least severe log records written"},
		{name: "log-format", value: choice(&c.LogFormat, "text", "json"), commands: runOnly,
			meaning: "log records as `text` (key=value) or `json` lines"},
		{name: "log-summary-interval", value: duration(&c.LogSummaryEvery, time.Second), commands: runOnly,
			meaning: "how often a booking instance logs one info line of what it did (none while idle) and one line per failing RQD host"},
		{name: "host-ping-max-age", value: duration(&c.HostPingMaxAge, time.Second), commands: matching,
			meaning: "a host not pinged for longer is not offered"},
		{name: "policy", value: choice(&c.Policy, "best-fit", "epvm"), commands: matching,
			meaning: "placement policy"},
		{name: "order", value: choice(&c.Order, "lottery", "strict"), commands: matching,
			meaning: "layer order within a show: `lottery` (priority-weighted) or `strict` (OpenCue's legacy priority order)"},
		{name: "selfish-services", value: strs(&c.SelfishServices), commands: matching, unset: "none",
			meaning: "`svc,...`: services whose threadable layers take all idle cores"},
		{name: "locality", value: boolean(&c.Locality), commands: matching,
			meaning: "among hosts that fit a frame equally well, prefer one that ran a frame of its layer (then of its job) within the last 30 minutes (match.WarmWindow): warm caches and local files"},
		{name: "memory-from-history", value: strs(&c.MemoryFromHistory), commands: matching, unset: "off",
			meaning: "`show,...` or `*`: book these shows' frames with the most memory their layer's finished frames used (at least 3 finished, none killed for its memory) plus `memory-headroom`, rounded up to whole 256 MB, when that is below the request"},
		{name: "memory-headroom", value: number(&c.MemoryHeadroom, 0, 10), commands: matching,
			meaning: "with `memory-from-history`: the share added to what the frames used (`0.2` books 20% more)"},
		{name: "reservations", value: boolean(&c.Reservations), commands: matching,
			meaning: "a layer that waits for capacity or no-fit, booking nothing, for `reservation-after` reserves the hosts expected to have room for its frames soonest (at most 8 layers at once, a host per waiting frame, 8 at most); other layers' frames go there only when expected to end before (their layer's, else job's, else service's mean run)"},
		{name: "reservation-after", value: duration(&c.ReservationAfter, 0), commands: matching,
			meaning: "with `reservations`: how long a layer of the waiting layers' mean priority waits before it reserves; a layer of k times that priority waits 1/k of it, at least a quarter"},
		{name: "batch-min", value: whole(&c.BatchMin, 1, 10000), commands: runOnly,
			meaning: "smallest adaptive booking batch"},
		{name: "batch-max", value: whole(&c.BatchMax, 1, 10000), commands: runOnly,
			meaning: "largest adaptive booking batch"},
		{name: "launch-workers", value: whole(&c.LaunchWorkers, 1, 10000), commands: runOnly,
			meaning: "concurrent launches on RQD"},
		{name: "instance", value: instanceName(&c.Instance), commands: runOnly, computed: "HOST-PID",
			meaning: "name this instance registers under, at most 54 printable ASCII characters (HOST-PID: the host's name and the process id)"},
		{name: "lease", value: duration(&c.Lease, time.Second), commands: runOnly,
			meaning: "how long a hung instance keeps its clusters"},
		{name: "workers", value: whole(&c.Workers, 1, 1024), commands: runOnly,
			meaning: "clusters booked concurrently"},
		{name: "tag-pressure", value: number(&c.TagPressure, 0, 10), commands: runOnly,
			meaning: "leave a tag's hosts to the work that can run only there once that work needs this share of their idle capacity; `0` turns it off"},
		{name: "audit-interval", value: duration(&c.AuditEvery, time.Second), commands: runOnly,
			meaning: "how often each instance runs the invariant audit for the `cuesched_audit_findings` metric"},
		{name: "outbox-age", value: duration(&c.OutboxAge, time.Second), commands: audited,
			meaning: "the audit reports a booking neither launched nor released this long after it was booked (a launch outbox row still pending or unsure)"},
	}
}

// defaultText is the default help and the docs show for s, a setting of
// Default() ("" when there is none to show).
func (s setting) defaultText() (text string, isValue bool) {
	switch v := s.get(); {
	case s.computed != "":
		return s.computed, false
	case v != "":
		return v, true
	case s.unset != "":
		return s.unset, false
	}
	return "", false
}

// takes says whether command cmd (its first word: "migrate up" is
// migrate) takes s.
func (s setting) takes(cmd string) bool {
	word, _, _ := strings.Cut(cmd, " ")
	for _, c := range s.commands {
		if c == word {
			return true
		}
	}
	return false
}
