package wait

import (
	"context"
	"testing"
	"time"
)

func TestSleep(t *testing.T) {
	t.Parallel()
	if !Sleep(t.Context(), time.Millisecond) {
		t.Error("Sleep with a live context reported it stopped early")
	}
	if !Sleep(t.Context(), 0) {
		t.Error("Sleep(0) with a live context reported it stopped")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Error("Sleep with an ended context reported it waited the hour")
	}
	if Sleep(ctx, 0) {
		t.Error("Sleep(0) with an ended context reported it waited")
	}
}
