// Package config reads cuesched's settings from a YAML file, CUESCHED_*
// environment variables and command-line flags, in that order, later ones
// winning. Every setting has one name used in all three places (the flag
// --rqd-port, the YAML key rqd-port, the variable CUESCHED_RQD_PORT). A bad
// value is reported with the setting's name and what it accepts; the command
// exits 2 on it. The table of settings (settings.go) is the one place a
// setting is described: its type, default, meaning and commands give the
// flags' help, the README's table and deploy/cuesched.example.yaml.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
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
	// ReportGrace: how long a frame's completion report may take to reach
	// Cuebot's database (launch.Config.ReportGrace).
	ReportGrace time.Duration
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
	// Locality: among hosts that fit equally well, prefer one that recently
	// ran the layer or its job (match.Options.Locality).
	Locality bool
	// MemoryFromHistory are the show names (or "*") whose frames are booked
	// with what their layers' finished frames used; empty: off.
	MemoryFromHistory []string
	// MemoryHeadroom is the share added to what those frames used.
	MemoryHeadroom float64
	// Reservations: a layer starved of room reserves hosts, where other
	// frames only backfill (match/reserve.go); ReservationAfter is how long
	// it waits first (match.Threshold).
	Reservations     bool
	ReservationAfter time.Duration
	BatchMin         int
	BatchMax         int
	LaunchWorkers    int
	Instance         string // name this instance registers under
	Lease            time.Duration
	Workers          int // clusters worked concurrently
	// TagPressure is cache.Hosts' pressure fraction: 0 turns it off.
	TagPressure float64
	// AuditEvery is how often a running instance runs the invariant audit
	// for its metric; OutboxAge is when the audit calls a launch outbox row
	// still pending or unsure stale.
	AuditEvery time.Duration
	OutboxAge  time.Duration
}

// Default is the configuration with nothing set.
func Default() Config {
	host, _ := os.Hostname()
	return Config{
		MetricsAddr:      ":10844", // see README, Configuration: not a port of Prometheus' list
		RQDPort:          8444,
		RQDTimeout:       10 * time.Second,
		ReportGrace:      30 * time.Second, // launch.DefaultReportGrace
		Feed:             "events",
		PollEvery:        5 * time.Second,
		Counters:         "cuesched",
		LogLevel:         "info",
		LogFormat:        "text",
		HostPingMaxAge:   5 * time.Minute,
		Policy:           "best-fit",
		Order:            "lottery",
		BatchMin:         1,
		BatchMax:         500,
		LaunchWorkers:    64,
		Instance:         defaultInstance(host, os.Getpid()),
		Lease:            6 * time.Second,
		Workers:          4,
		TagPressure:      0.5, // cache.DefaultPressureFraction
		MemoryHeadroom:   0.2,
		ReservationAfter: 10 * time.Minute,

		LogSummaryEvery: 30 * time.Second,
		AuditEvery:      time.Minute,
		OutboxAge:       5 * time.Minute,
	}
}

// defaultInstance is HOST-PID made a name --instance accepts: characters
// PostgreSQL would rewrite in an application_name become '_', and the host
// is cut so the whole fits (the process id kept).
func defaultInstance(host string, pid int) string {
	suffix := fmt.Sprintf("-%d", pid)
	host = strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return '_'
		}
		return r
	}, host)
	if host == "" {
		host = "cuesched"
	}
	return host[:min(len(host), maxInstanceName-len(suffix))] + suffix
}

// Error is a configuration error: the command exits 2 on it.
type Error struct {
	Setting string
	Err     error
}

func (e *Error) Error() string {
	if e.Setting == "" {
		return e.Err.Error()
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

// accepted is the settings command cmd takes: those the table gives it or,
// when only is not nil, those only names (for a command the table does not
// know yet) and --config with them: one file serves every command.
func accepted(all []setting, cmd string, only []string) []setting {
	var out []setting
	for _, s := range all {
		if (only == nil && s.takes(cmd)) || contains(only, s.name) || (s.name == "config" && len(only) > 0) {
			out = append(out, s)
		}
	}
	return out
}

// Load reads the configuration of command cmd ("run", "migrate up", ...)
// from args (flags only, no positional arguments), the environment and the
// config file. The command takes the settings whose commands name it or,
// when only is not nil, those only names. own are the command's flags
// besides its settings, which it parses itself: a mistyped one is named in
// the hint of the error. On -h or --help Load writes the command's help to
// out and returns flag.ErrHelp.
func Load(cmd string, args []string, getenv func(string) string, only []string, out io.Writer, own ...Flag) (Config, error) {
	c := Default()
	all := settings(&c)
	takes := accepted(all, cmd, only)
	fs := flag.NewFlagSet(Invocation(cmd), flag.ContinueOnError)
	// Errors are returned as one line (FlagError), never with the usage.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var flags []assignment
	for _, s := range takes {
		for _, n := range append([]string{s.name}, s.aliases...) {
			fs.Var(&flagValue{name: s.name, isBool: s.isBool, seen: &flags}, n, s.meaning)
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printHelp(out, cmd, Usage{Flags: own}, takes)
			return c, err
		}
		names := make([]string, len(own))
		for i, f := range own {
			names[i] = f.Name
		}
		return c, flagError(cmd, err, names, all, takes)
	}
	byName := map[string]setting{}
	for _, s := range takes {
		byName[s.name] = s
	}
	if fs.NArg() > 0 {
		_, db := byName["db"]
		return c, &Error{Err: UnexpectedArgument(fs.Arg(0), db)}
	}
	apply := func(name, v, from string) error {
		if err := byName[name].set(v); err != nil {
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
		if err := loadFile(path, all, byName, apply); err != nil {
			return c, err
		}
	}
	for _, s := range takes {
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

// loadFile applies the settings of the file at path that the command takes
// (byName); the settings of other commands are skipped, so that one file
// serves them all, and any other key is refused.
func loadFile(path string, all []setting, byName map[string]setting, apply func(name, v, from string) error) error {
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
		if name == "config" || !slices.ContainsFunc(all, func(s setting) bool { return s.name == name }) {
			names := make([]string, 0, len(all))
			for _, s := range all {
				if s.name != "config" {
					names = append(names, s.name)
				}
			}
			hint := ""
			if near := nearest(name, names); near != "" {
				hint = fmt.Sprintf(" (did you mean %s?)", near)
			}
			return &Error{Setting: "config", Err: fmt.Errorf("%s: unknown setting %q%s", path, k, hint)}
		}
		if _, ok := byName[name]; !ok {
			continue
		}
		node := doc[k]
		// A YAML null (key:, ~, null) would set its text: "", "~" or "null".
		null := &Error{Setting: name, Err: fmt.Errorf("%s: null is not a value (remove the key to keep the default)", path)}
		var v string
		switch node.Kind {
		case yaml.ScalarNode:
			if node.ShortTag() == "!!null" {
				return null
			}
			v = node.Value
		case yaml.SequenceNode:
			var items []string
			for _, item := range node.Content {
				if item.Kind != yaml.ScalarNode {
					return &Error{Setting: name, Err: fmt.Errorf("%s: list items must be plain values", path)}
				}
				if item.ShortTag() == "!!null" {
					return null
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
