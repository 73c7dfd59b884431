package rqd

import (
	"testing"

	"github.com/cuesched/cuesched/internal/testworld/leaktest"
)

// TestMain fails the tests when they leave a goroutine behind.
func TestMain(m *testing.M) { leaktest.Main(m) }
