// Command cuesched is the one binary of cuesched: the scheduler itself
// (run), its database migrations (migrate), what the instances are doing
// (status), why a job waits (explain), the invariant audit (audit), the SQL giving its role what it needs
// (grants), a simulation of a farm booked by the scheduling code (sim)
// and its version. The demo is a command of its own,
// cmd/cuesched-demo: this binary links nothing of the test world.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/cuesched/cuesched/internal/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *environment, args []string) error
}

// environment is what a command reads and writes besides its arguments, so
// tests can run commands in-process.
type environment struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

func commands() []command {
	return []command{
		{"run", "book frames of scheduler-managed shows onto render hosts", runScheduler},
		{"migrate", "apply, roll back, show or force cuesched's migrations: migrate up|down|status|force VERSION --db ...", runMigrate},
		{"status", "show instances, the clusters each owns, pending work and why it waits: status --db ... [--json]", runStatus},
		{"explain", "why a job's layers wait (read-only): explain --db ... --job NAME [--layer NAME] [--json]", runExplain},
		{"audit", "check the invariants (read-only); exit 1 when something is illegal: audit --db ... [--outbox-age 5m] [--json]", runAudit},
		{"grants", "print the SQL giving cuesched's role what it needs: grants --role NAME [--database NAME]", runGrants},
		{"show", "list shows, hand one to cuesched or back to Cuebot: show list|manage NAME|release NAME --db ...", runShow},
		{"sim", "simulate a farm in simulated time with the real scheduling code: sim --list | --scenario NAME [--variant ...] [--json]", runSim},
		{"version", "print the version", runVersion},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "cuesched: a database-native frame scheduler for OpenCue render farms")
	fmt.Fprintln(w, "\nusage: cuesched <command> [flags]   (cuesched <command> --help for its flags)")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nThe demo (a throwaway database, a simulated farm, cuesched at work) is its own command: cuesched-demo (make demo).")
}

// exitCode maps an error to the process exit status: 2 for a configuration
// or usage error, 1 for a failure at run time.
func exitCode(err error) int {
	var ce *config.Error
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ce), errors.As(err, &ue):
		return 2
	default:
		return 1
	}
}

type usageError string

func (e usageError) Error() string { return string(e) }

func realMain(ctx context.Context, args []string, env *environment) int {
	if len(args) == 0 {
		usage(env.stderr)
		return 2
	}
	switch args[0] {
	case "-h", "--help", "-help", "help":
		usage(env.stdout)
		return 0
	case "--version", "-version":
		args[0] = "version"
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, env, args[1:])
		if err != nil && !errors.Is(err, flag.ErrHelp) {
			// Errors can carry text from drivers; scrub any password the
			// configured DSNs hold before printing (contract 6).
			msg := err.Error()
			// Every argument too: a DSN given in the wrong place is a DSN.
			for _, dsn := range append([]string{env.getenv("CUESCHED_DB"), env.getenv("DATABASE_URL"), flagValue(args, "db")}, args...) {
				msg = config.Scrub(msg, config.Secrets(dsn))
			}
			if pw := env.getenv("PGPASSWORD"); pw != "" {
				msg = strings.ReplaceAll(msg, pw, "xxxxx")
			}
			fmt.Fprintln(env.stderr, "cuesched "+c.name+": "+strings.ReplaceAll(msg, "\n", " "))
		}
		return exitCode(err)
	}
	switch {
	case args[0] == "demo":
		fmt.Fprintln(env.stderr, "cuesched: the demo is its own command: run cuesched-demo (make demo builds and runs it)")
		return 2
	case config.LooksLikeDSN(args[0]):
		fmt.Fprintf(env.stderr, "cuesched: %q is a database, not a command: give it to a command as --db=..., e.g. cuesched status --db=...\n\n",
			config.RedactDSN(args[0]))
	default:
		fmt.Fprintf(env.stderr, "cuesched: unknown command %q\n\n", config.RedactDSN(args[0]))
	}
	usage(env.stderr)
	return 2
}

// flagValue finds --name=value or --name value in args, for scrubbing.
func flagValue(args []string, name string) string {
	for i, a := range args {
		a = strings.TrimLeft(a, "-")
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func runVersion(_ context.Context, env *environment, args []string) error {
	if wantsHelp(args) {
		config.PrintHelp(env.stdout, "version", config.Usage{About: "Prints cuesched's version."})
		return flag.ErrHelp
	}
	if len(args) > 0 {
		if config.LooksLikeDSN(args[0]) {
			return &config.Error{Err: config.UnexpectedArgument(args[0], false)}
		}
		return usageError("version takes no arguments")
	}
	fmt.Fprintln(env.stdout, "cuesched", versionString())
	return nil
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", ""
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "-dirty"
				}
			}
		}
		if rev != "" {
			return "dev-" + rev[:min(12, len(rev))] + dirty
		}
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
	}
	return "dev"
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := realMain(ctx, os.Args[1:], &environment{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv})
	stop()
	os.Exit(code)
}
