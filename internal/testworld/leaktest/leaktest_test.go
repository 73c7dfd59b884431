package leaktest

import (
	"strings"
	"testing"
)

// A goroutine left running fails the check, naming where it was started;
// once its owner stops it, the check passes.
func TestFindsALeftGoroutine(t *testing.T) {
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		<-stop
	}()
	err := Find()
	if err == nil || !strings.Contains(err.Error(), "TestFindsALeftGoroutine") {
		t.Errorf("a goroutine left running: Find() = %v, want it named", err)
	}
	var out strings.Builder
	found := func() error { return err }
	if check(0, found, &out) != 1 || !strings.Contains(out.String(), "TestFindsALeftGoroutine") || check(2, found, &out) != 2 {
		t.Errorf("check: a passing run with a goroutine left must fail naming it, a failing one keep its code (%q)", out.String())
	}
	close(stop)
	<-stopped
	if err := Find(); err != nil {
		t.Errorf("after the goroutine ended: %v", err)
	}
}

func TestMain(m *testing.M) { Main(m) }
