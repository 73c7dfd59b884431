// Package leaktest checks that a test binary leaves no goroutine behind
// (goleak): every goroutine the product starts has an owner that stops it,
// and the tests stop what they start. pgtest.Main runs it after the tests of
// every package that uses it; packages without a database call Main.
package leaktest

import (
	"fmt"
	"io"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// options are the goroutines that are not ours, each with why. goleak's
// own retry stays: none when nothing is left, about 0.4 s in all for
// goroutines that are still ending.
var options = []goleak.Option{
	// golang-migrate: when a migration fails, Migrate.Up and Down return
	// without draining the migrations they read ahead, so the reader and
	// each read-ahead buffer stay blocked for the life of the process (its
	// pull request #1443, open). Tests of a failing `migrate up` meet it; in
	// production `cuesched migrate` exits right after.
	goleak.IgnoreAnyFunction("github.com/golang-migrate/migrate/v4.(*Migrate).readUp"),
	goleak.IgnoreAnyFunction("github.com/golang-migrate/migrate/v4.(*Migrate).readDown"),
	goleak.IgnoreAnyFunction("github.com/golang-migrate/migrate/v4.(*Migration).Buffer"),
}

// Find reports the goroutines left beside the calling one, or nil.
func Find() error {
	return goleak.Find(options...)
}

// Main runs the package's tests, then fails the binary when they passed but
// left goroutines behind.
func Main(m *testing.M) {
	os.Exit(Check(m.Run()))
}

// Check turns a test binary's exit code into the one to exit with: a
// passing run that left goroutines fails, naming them.
func Check(code int) int { return check(code, Find, os.Stderr) }

func check(code int, find func() error, out io.Writer) int {
	if code != 0 {
		return code
	}
	if err := find(); err != nil {
		fmt.Fprintf(out, "leaktest: goroutines left after the tests (every goroutine needs an owner that stops it):\n%v\n", err)
		return 1
	}
	return 0
}
