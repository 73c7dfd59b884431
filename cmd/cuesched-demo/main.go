// Command cuesched-demo shows cuesched at work on a simulated farm, self-
// contained (`make demo` builds and runs it). It is the one command that
// links the test world (internal/testworld); the binary deployed beside
// Cuebot, cmd/cuesched, links none of it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/cuesched/cuesched/internal/config"
)

// options are the demo's flags.
type options struct {
	report string // write the HTML report there
}

const usage = `usage: cuesched-demo [--report FILE.html]

Runs cuesched on a simulated farm of its own (a throwaway PostgreSQL cluster,
1,200 simulated RQDs, three cuesched instances) and shows it working: a live
view redrawn every second, one instance killed midway, then a summary of
what was measured. It takes no database: it starts its own.

  --report FILE.html   also write a self-contained page with plots of the run
`

// parseFlags reads the demo's flags.
func parseFlags(args []string, errw io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("cuesched-demo", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.report, "report", "", "write a self-contained HTML page with plots of the run to this file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(errw, usage)
			return o, err
		}
		return o, &config.Error{Err: fmt.Errorf("%v (cuesched-demo --help lists the flags)", err)}
	}
	if fs.NArg() > 0 {
		return o, &config.Error{Err: config.UnexpectedArgument(fs.Arg(0), false)}
	}
	return o, nil
}

// realMain runs the demo (or, started by the demo, one of its instances)
// and returns the process exit status: 0 when it ran clean, 2 for a usage
// error, 1 for a failure.
func realMain(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	var err error
	if name := getenv(envChild); name != "" {
		err = runChild(ctx, name, stdout, stderr, getenv)
	} else {
		var o options
		if o, err = parseFlags(args, stdout); err == nil {
			err = runDemo(ctx, stdout, stderr, o)
		}
	}
	var ce *config.Error
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ce):
		fmt.Fprintln(stderr, "cuesched-demo: "+scrub(err.Error(), args))
		return 2
	default:
		fmt.Fprintln(stderr, "cuesched-demo: "+scrub(err.Error(), args))
		return 1
	}
}

// scrub removes any password an argument holds from msg: a DSN given in the
// wrong place is a DSN (contract 6).
func scrub(msg string, args []string) string {
	for _, a := range args {
		msg = config.Scrub(msg, config.Secrets(a))
	}
	return strings.ReplaceAll(msg, "\n", " ")
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := realMain(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
