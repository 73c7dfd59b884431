package launch

import (
	"testing"

	"github.com/cuesched/cuesched/internal/testworld/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
