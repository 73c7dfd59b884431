package queue

import (
	"testing"

	"github.com/cuesched/cuesched/internal/testworld/pgtest"
)

// TestMain is the package's only one: every test file of package queue
// shares its throwaway cluster.
func TestMain(m *testing.M) { pgtest.Main(m) }
