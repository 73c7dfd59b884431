package match

import (
	"math"
	"slices"
	"testing"
	"time"
)

const gb = 1048576 // KB

func TestParseTags(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"general", []string{"general"}},
		{"General | GPU|gpu", []string{"general", "gpu"}},
		{" a || b |", []string{"a", "b"}},
		{"|", nil},
		{"gen eral|  GEN\tERAL ", []string{"general"}}, // Cuebot's expanded regex ignores whitespace
	} {
		if got := ParseTags(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("ParseTags(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestTagsMatch(t *testing.T) {
	for _, tc := range []struct {
		layer, host []string
		want        bool
	}{
		{[]string{"general"}, []string{"general", "h1"}, true},
		{[]string{"GPU", "general"}, []string{"gpu"}, true}, // any one, case-insensitive
		{[]string{"desktop"}, []string{"general", "h1"}, false},
		{nil, []string{"general"}, false},
		{[]string{"general"}, nil, false},
	} {
		if got := tagsMatch(tc.layer, tc.host); got != tc.want {
			t.Errorf("tagsMatch(%q, %q) = %v, want %v", tc.layer, tc.host, got, tc.want)
		}
	}
}

func TestOSMatch(t *testing.T) {
	for _, tc := range []struct {
		job, host string
		want      bool
	}{
		{"", "rhel9", true},
		{"rhel9", "rhel9", true},
		{"rhel9", "rocky9", false},
		{"rhel9", "", false},
	} {
		if got := osMatch(tc.job, tc.host); got != tc.want {
			t.Errorf("osMatch(%q, %q) = %v, want %v", tc.job, tc.host, got, tc.want)
		}
	}
}

func TestThreadModeAllows(t *testing.T) {
	for _, tc := range []struct {
		name       string
		mode       ThreadMode
		idle       int64
		threadable bool
		cores      int64
		want       bool
	}{
		{"auto takes threadable", ThreadAuto, 100, true, 100, true},
		{"auto takes non-threadable", ThreadAuto, 100, false, 100, true},
		{"all takes threadable", ThreadAll, 800, true, 100, true},
		{"all refuses non-threadable", ThreadAll, 800, false, 100, false},
		{"variable two cores", ThreadVariable, 200, true, 100, true},
		{"variable one whole core", ThreadVariable, 199, true, 100, false},
		{"variable one core non-threadable", ThreadVariable, 100, false, 100, true},
		{"variable fractional request", ThreadVariable, 100, true, 50, true},
	} {
		h := &Host{ThreadMode: tc.mode, Idle: Resources{Cores: tc.idle}}
		l := &Layer{Threadable: tc.threadable, Min: Resources{Cores: tc.cores}}
		if got := threadModeAllows(h, l); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestHostMinimums(t *testing.T) {
	ok := Host{OS: "rhel9", Idle: Resources{Cores: 10, Mem: 262144}, MemFree: 524288, TempFree: 5, TempTotal: 100}
	for _, tc := range []struct {
		name string
		mod  func(*Host)
		want bool
	}{
		{"at every minimum", func(*Host) {}, true},
		{"9 idle core units", func(h *Host) { h.Idle.Cores = 9 }, false},
		{"idle memory under 256 MB", func(h *Host) { h.Idle.Mem = 262143 }, false},
		{"free memory under 512 MB", func(h *Host) { h.MemFree = 524287 }, false},
		{"temp under 5%", func(h *Host) { h.TempFree = 4 }, false},
		{"temp under 5% on windows", func(h *Host) { h.TempFree, h.OS = 0, "Windows" }, true},
		{"temp total unknown, some free", func(h *Host) { h.TempFree, h.TempTotal = 1, 0 }, true},
		{"temp total unknown, none free", func(h *Host) { h.TempFree, h.TempTotal = 0, 0 }, false},
	} {
		h := ok
		tc.mod(&h)
		if got := hostMinimums(&h); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestTempSpaceMinimum(t *testing.T) {
	for _, tc := range []struct {
		os          string
		free, total int64
		want        bool
	}{
		{"rhel9", 5 * gb, 100 * gb, true},
		{"rhel9", 5*gb - 1, 100 * gb, false},
		{"rhel9", 0, 100 * gb, false},
		{"windows", 0, 100 * gb, true},
		{"rhel9,windows", 0, 100 * gb, false}, // only a host whose one OS is Windows is exempt
	} {
		h := &Host{OS: tc.os, TempFree: tc.free, TempTotal: tc.total}
		if got := tempSpaceMinimum(h); got != tc.want {
			t.Errorf("tempSpaceMinimum(%q, %d/%d) = %v, want %v", tc.os, tc.free, tc.total, got, tc.want)
		}
	}
}

func TestFitsIdle(t *testing.T) {
	h := &Host{Idle: Resources{Cores: 400, Mem: 8 * gb, GPUs: 1, GPUMem: 4 * gb}}
	for _, tc := range []struct {
		size Resources
		want bool
	}{
		{Resources{400, 8 * gb, 1, 4 * gb}, true},
		{Resources{401, gb, 0, 0}, false},
		{Resources{100, 8*gb + 1, 0, 0}, false},
		{Resources{100, gb, 2, 0}, false},
		{Resources{100, gb, 1, 4*gb + 1}, false},
	} {
		if got := fitsIdle(h, tc.size); got != tc.want {
			t.Errorf("fitsIdle(%+v) = %v, want %v", tc.size, got, tc.want)
		}
	}
}

func TestStartAfterPassed(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		after time.Time
		want  bool
	}{
		{time.Time{}, true},
		{now.Add(-time.Second), true},
		{now, true},
		{now.Add(time.Second), false},
	} {
		if got := startAfterPassed(&Layer{StartAfter: tc.after}, now); got != tc.want {
			t.Errorf("startAfterPassed(%v) = %v, want %v", tc.after, got, tc.want)
		}
	}
}

// The caps' conditions on both sides are matchtest.GuardCases
// (TestGuardCases); NoMax is this package's own value.
func TestJobNoMax(t *testing.T) {
	c := Cap{Cores: 1 << 62, MaxCores: NoMax, GPUs: 1 << 62, MaxGPUs: NoMax}
	if !JobAllows(c, Resources{Cores: 1 << 62, GPUs: 1 << 62}) {
		t.Fatal("a job at NoMax refused a proc")
	}
	if FolderAllows(Cap{Cores: 100, MaxCores: 100, MaxGPUs: -1}, Resources{Cores: 100}) {
		t.Fatal("a folder past its max cores allowed a proc")
	}
}

// Huge values never wrap around under a cap (issue 12: rows Cuebot's schema
// allows but no sane farm has).
func TestCapsDoNotOverflow(t *testing.T) {
	const huge = math.MaxInt64
	if BurstAllows(Subscription{Burst: huge, Cores: 100}, true, huge) {
		t.Error("a proc of huge cores wrapped around under a huge burst")
	}
	if !BurstAllows(Subscription{Burst: huge, Cores: 100}, true, 100) {
		t.Error("a huge burst refused a small proc")
	}
	if JobAllows(Cap{Cores: 100, MaxCores: huge - 1, MaxGPUs: 1}, Resources{Cores: huge}) {
		t.Error("a proc of huge cores wrapped around under a job's max")
	}
	if FolderAllows(Cap{Cores: huge, MaxCores: 1000, MaxGPUs: -1}, Resources{Cores: 100}) {
		t.Error("a folder at huge cores wrapped around under its max")
	}
	if !sumAtMost(math.MinInt64, -1, 0) {
		t.Error("a sum below the int64 range is not under a max")
	}
}

func TestLimitAllows(t *testing.T) {
	for _, tc := range []struct {
		lim   Limit
		found bool
		want  bool
	}{
		{Limit{Running: 2, Max: 3}, true, true},
		{Limit{Running: 3, Max: 3}, true, false},
		{Limit{Running: 0, Max: 0}, true, false},
		{Limit{}, false, true},
	} {
		if got := limitAllows(tc.lim, tc.found); got != tc.want {
			t.Errorf("limitAllows(%+v, %v) = %v, want %v", tc.lim, tc.found, got, tc.want)
		}
	}
}
