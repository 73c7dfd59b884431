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

// realMain runs the demo and returns the process exit status: 0 when it
// ran clean, 2 for a usage error, 1 for a failure.
func realMain(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	err := runDemo(ctx, stdout, stderr, getenv, args)
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
