// Package config reads cuesched's settings from a YAML file, CUESCHED_*
// environment variables and command-line flags, in that order, later ones
// winning. Every setting has one name used in all three places (the flag
// --rqd-port, the YAML key rqd-port, the variable CUESCHED_RQD_PORT). A bad
// value is reported with the setting's name and what it accepts; the command
// exits 2 on it.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// AllocTag restricts an instance to one show inside the allocation clusters
// of one allocation tag (OpenCue's --alloc_tags show:tag).
type AllocTag struct {
	Show string
	Tag  string
}

// Config is every setting of `cuesched run` (other commands use a subset).
type Config struct {
	DB string // libpq URL or key=value; empty: PG* environment
	// PoolDB is the booking pool's database address when it differs from
	// DB (a transaction pooler); empty: DB.
	PoolDB      string
	ConfigFile  string
	Facility    string
	AllocTags   []AllocTag
	ManualTags  []string
	MetricsAddr string
	RQDPort     int
	RQDTimeout  time.Duration
	// RQD over TLS (off unless RQDTLSCA is set): the CA bundle that signs the
	// hosts' certificates, and a client certificate for RQDs that ask one.
	RQDTLSCA, RQDTLSCert, RQDTLSKey string
	DryRun                          bool
	Feed                            string // events | poll
	PollEvery                       time.Duration
	Counters                        string // cuesched | cuebot
	LogLevel                        string
	LogFormat                       string
	// LogSummaryEvery is the interval of the activity log's lines.
	LogSummaryEvery time.Duration
	// HostPingMaxAge: a host whose host_stat.ts_ping is older is not offered.
	HostPingMaxAge  time.Duration
	Policy          string // best-fit | epvm
	Order           string // lottery | strict
	SelfishServices []string
	BatchMin        int
	BatchMax        int
	LaunchWorkers   int
	Instance        string // name this instance registers under
	Lease           time.Duration
	Workers         int // clusters worked concurrently
	// TagPressure is cache.Hosts' pressure fraction: 0 turns it off.
	TagPressure float64
}

// Default is the configuration with nothing set.
func Default() Config {
	host, _ := os.Hostname()
	return Config{
		MetricsAddr:    ":9090",
		RQDPort:        8444,
		RQDTimeout:     10 * time.Second,
		Feed:           "events",
		PollEvery:      5 * time.Second,
		Counters:       "cuesched",
		LogLevel:       "info",
		LogFormat:      "text",
		HostPingMaxAge: 5 * time.Minute,
		Policy:         "best-fit",
		Order:          "lottery",
		BatchMin:       1,
		BatchMax:       500,
		LaunchWorkers:  64,
		Instance:       fmt.Sprintf("%s-%d", host, os.Getpid()),
		Lease:          6 * time.Second,
		Workers:        4,
		TagPressure:    0.5, // cache.DefaultPressureFraction

		LogSummaryEvery: 30 * time.Second,
	}
}

// setting is one named setting and how a text value sets it.
type setting struct {
	name    string
	aliases []string
	usage   string
	isBool  bool
	set     func(c *Config, v string) error
}

func oneOf(field *string, allowed ...string) func(*Config, string) error {
	return func(_ *Config, v string) error {
		for _, a := range allowed {
			if v == a {
				*field = v
				return nil
			}
		}
		return fmt.Errorf("%q is not one of %s", v, strings.Join(allowed, ", "))
	}
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

func settings(c *Config) []setting {
	str := func(p *string) func(*Config, string) error {
		return func(_ *Config, v string) error { *p = v; return nil }
	}
	dur := func(p *time.Duration, min time.Duration) func(*Config, string) error {
		return func(_ *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < min {
				return fmt.Errorf("%q is not a duration of at least %s (e.g. 5s, 2m)", v, min)
			}
			*p = d
			return nil
		}
	}
	num := func(p *int, min, max int) func(*Config, string) error {
		return func(_ *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < min || n > max {
				return fmt.Errorf("%q is not a whole number from %d to %d", v, min, max)
			}
			*p = n
			return nil
		}
	}
	return []setting{
		{name: "db", usage: "Cuebot database: a libpq URL or key=value string (PG* environment variables are honoured)", set: str(&c.DB)},
		{name: "pool-db", usage: "the booking pool's address of the same database (default: db), e.g. through pgbouncer in transaction mode: its statements are never prepared by name; ownership, the listener and the host cache's feed always use db", set: str(&c.PoolDB)},
		{name: "config", usage: "YAML file of settings (keys are the flag names)", set: str(&c.ConfigFile)},
		{name: "facility", usage: "book only this facility's clusters (facility name)", set: str(&c.Facility)},
		{name: "alloc-tags", aliases: []string{"alloc_tags"}, usage: "book only these shows in the allocation clusters of these tags: show:tag,show:tag,...", set: func(c *Config, v string) error {
			c.AllocTags = nil
			for _, item := range list(v) {
				show, tag, ok := strings.Cut(item, ":")
				if !ok || strings.TrimSpace(show) == "" || strings.TrimSpace(tag) == "" || strings.Contains(tag, ":") {
					return fmt.Errorf("%q is not show:tag (expected show:tag,show:tag,...)", item)
				}
				c.AllocTags = append(c.AllocTags, AllocTag{Show: strings.TrimSpace(show), Tag: strings.TrimSpace(tag)})
			}
			return nil
		}},
		{name: "manual-tags", aliases: []string{"manual_tags"}, usage: "book only the tag buckets holding these manual tags: tag,tag,...", set: func(c *Config, v string) error {
			c.ManualTags = list(v)
			return nil
		}},
		{name: "metrics-addr", usage: "address of the /metrics, /healthz and /readyz server", set: str(&c.MetricsAddr)},
		{name: "rqd-port", usage: "port RQD listens on", set: num(&c.RQDPort, 1, 65535)},
		{name: "rqd-timeout", usage: "deadline of one call to RQD", set: dur(&c.RQDTimeout, time.Millisecond)},
		{name: "rqd-tls-ca", usage: "PEM file of the CAs that sign RQD hosts' certificates: talk to RQD over TLS (default plaintext, as RQD serves)", set: str(&c.RQDTLSCA)},
		{name: "rqd-tls-cert", usage: "with rqd-tls-ca, PEM client certificate for RQDs that require one (with rqd-tls-key)", set: str(&c.RQDTLSCert)},
		{name: "rqd-tls-key", usage: "with rqd-tls-cert, its PEM private key", set: str(&c.RQDTLSKey)},
		{name: "dry-run", isBool: true, usage: "book in the database but launch nothing (test and benchmark databases only, never beside a production farm)", set: func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%q is not true or false", v)
			}
			c.DryRun = b
			return nil
		}},
		{name: "feed", usage: "how work is found: events (replication + notifications) or poll (behind a transaction pooler)", set: oneOf(&c.Feed, "events", "poll")},
		{name: "poll-interval", usage: "with --feed poll, how often work is read", set: dur(&c.PollEvery, 100*time.Millisecond)},
		{name: "counters", usage: "who brings the counters of managed shows back after releases: cuesched, or cuebot (an older Cuebot that lowers them itself)", set: oneOf(&c.Counters, "cuesched", "cuebot")},
		{name: "log-level", usage: "debug, info, warn or error", set: oneOf(&c.LogLevel, "debug", "info", "warn", "error")},
		{name: "log-format", usage: "text or json", set: oneOf(&c.LogFormat, "text", "json")},
		{name: "log-summary-interval", usage: "how often a booking instance logs one info line of what it did (none while idle) and one line per failing RQD host", set: dur(&c.LogSummaryEvery, time.Second)},
		{name: "host-ping-max-age", usage: "a host not pinged for longer is not offered", set: dur(&c.HostPingMaxAge, time.Second)},
		{name: "policy", usage: "placement policy: best-fit or epvm", set: oneOf(&c.Policy, "best-fit", "epvm")},
		{name: "order", usage: "layer order within a show: lottery (priority-weighted) or strict (OpenCue's legacy priority order)", set: oneOf(&c.Order, "lottery", "strict")},
		{name: "selfish-services", usage: "services whose threadable layers take all idle cores: svc,svc,...", set: func(c *Config, v string) error {
			c.SelfishServices = list(v)
			return nil
		}},
		{name: "batch-min", usage: "smallest booking batch", set: num(&c.BatchMin, 1, 10000)},
		{name: "batch-max", usage: "largest booking batch", set: num(&c.BatchMax, 1, 10000)},
		{name: "launch-workers", usage: "concurrent launches on RQD", set: num(&c.LaunchWorkers, 1, 10000)},
		{name: "instance", usage: "name this instance registers under (default host-pid)", set: str(&c.Instance)},
		{name: "lease", usage: "how long a hung instance keeps its clusters", set: dur(&c.Lease, time.Second)},
		{name: "workers", usage: "clusters booked concurrently", set: num(&c.Workers, 1, 1024)},
		{name: "tag-pressure", usage: "leave a tag's hosts to the work that can run only there once that work needs this share of their idle capacity (0 turns it off)", set: func(c *Config, v string) error {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 || f > 10 {
				return fmt.Errorf("%q is not a number from 0 to 10", v)
			}
			c.TagPressure = f
			return nil
		}},
	}
}

// Error is a configuration error: the command exits 2 on it.
type Error struct {
	Setting string
	Err     error
}

func (e *Error) Error() string {
	if e.Setting == "" {
		return "config: " + e.Err.Error()
	}
	return fmt.Sprintf("config: --%s: %v", e.Setting, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// EnvName is the environment variable of a setting.
func EnvName(name string) string {
	return "CUESCHED_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

type flagValue struct {
	name   string
	isBool bool
	seen   *[]assignment
}

type assignment struct{ name, value string }

func (f *flagValue) String() string   { return "" }
func (f *flagValue) IsBoolFlag() bool { return f.isBool }
func (f *flagValue) Set(v string) error {
	*f.seen = append(*f.seen, assignment{f.name, v})
	return nil
}

// Load reads the configuration of command cmd from args (flags only, no
// positional arguments), the environment and the config file. only, when
// not nil, limits the settings the command accepts.
func Load(cmd string, args []string, getenv func(string) string, only []string, out io.Writer) (Config, error) {
	c := Default()
	all := settings(&c)
	var accepted []setting
	for _, s := range all {
		if only == nil || contains(only, s.name) || s.name == "config" {
			accepted = append(accepted, s)
		}
	}
	fs := flag.NewFlagSet("cuesched "+cmd, flag.ContinueOnError)
	fs.SetOutput(out)
	var flags []assignment
	for _, s := range accepted {
		for _, n := range append([]string{s.name}, s.aliases...) {
			fs.Var(&flagValue{name: s.name, isBool: s.isBool, seen: &flags}, n, s.usage)
		}
	}
	fs.Usage = func() {
		fmt.Fprintf(out, "usage: cuesched %s [flags]\n\nEvery flag is also a YAML key of --config and an environment variable CUESCHED_<NAME>.\n\n", cmd)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, &Error{Err: err}
	}
	if fs.NArg() > 0 {
		return c, &Error{Err: UnexpectedArgument(fs.Arg(0), only == nil || contains(only, "db"))}
	}
	byName := map[string]setting{}
	for _, s := range accepted {
		byName[s.name] = s
	}
	apply := func(name, v, from string) error {
		if err := byName[name].set(&c, v); err != nil {
			if from != "" {
				err = fmt.Errorf("%w (from %s)", err, from)
			}
			return &Error{Setting: name, Err: err}
		}
		return nil
	}
	// The file is named by flag or environment before anything else is read.
	path := getenv(EnvName("config"))
	for _, f := range flags {
		if f.name == "config" {
			path = f.value
		}
	}
	if path != "" {
		if err := loadFile(path, byName, apply); err != nil {
			return c, err
		}
	}
	for _, s := range accepted {
		if v := getenv(EnvName(s.name)); v != "" {
			if err := apply(s.name, v, EnvName(s.name)); err != nil {
				return c, err
			}
		}
	}
	for _, f := range flags {
		if err := apply(f.name, f.value, ""); err != nil {
			return c, err
		}
	}
	c.ConfigFile = path
	if c.BatchMin > c.BatchMax {
		return c, &Error{Setting: "batch-min", Err: fmt.Errorf("%d is above --batch-max %d", c.BatchMin, c.BatchMax)}
	}
	switch {
	case (c.RQDTLSCert == "") != (c.RQDTLSKey == ""):
		return c, &Error{Setting: "rqd-tls-cert", Err: errors.New("rqd-tls-cert and rqd-tls-key go together")}
	case c.RQDTLSCert != "" && c.RQDTLSCA == "":
		return c, &Error{Setting: "rqd-tls-cert", Err: errors.New("a client certificate needs rqd-tls-ca (TLS is off without it)")}
	}
	return c, nil
}

// UnexpectedArgument is the error for a stray positional argument of a
// command (takesDB: whether the command reads --db). It never prints a
// password: a database given in the wrong place is shown masked.
func UnexpectedArgument(arg string, takesDB bool) error {
	shown := RedactDSN(arg)
	switch {
	case !LooksLikeDSN(arg):
		return fmt.Errorf("unexpected argument %q (settings are given as --name=value)", shown)
	case takesDB:
		return fmt.Errorf("unexpected argument %q: give the database as --db=... (or CUESCHED_DB), not as a bare argument", shown)
	default:
		return fmt.Errorf("unexpected argument %q: this command takes no database (the commands that do take it as --db=...)", shown)
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func loadFile(path string, byName map[string]setting, apply func(name, v, from string) error) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return &Error{Setting: "config", Err: err}
	}
	var doc map[string]yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return &Error{Setting: "config", Err: fmt.Errorf("%s: %w", path, err)}
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		name := strings.ReplaceAll(k, "_", "-")
		if _, ok := byName[name]; !ok || name == "config" {
			return &Error{Setting: "config", Err: fmt.Errorf("%s: unknown setting %q", path, k)}
		}
		node := doc[k]
		var v string
		switch node.Kind {
		case yaml.ScalarNode:
			v = node.Value
		case yaml.SequenceNode:
			var items []string
			for _, item := range node.Content {
				if item.Kind != yaml.ScalarNode {
					return &Error{Setting: name, Err: fmt.Errorf("%s: list items must be plain values", path)}
				}
				items = append(items, item.Value)
			}
			v = strings.Join(items, ",")
		default:
			return &Error{Setting: name, Err: fmt.Errorf("%s: must be a value or a list of values", path)}
		}
		if err := apply(name, v, path); err != nil {
			return err
		}
	}
	return nil
}
