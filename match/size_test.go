package match

import "testing"

func sizeHost(mode ThreadMode, total, idle, idleMem int64) *Host {
	return &Host{
		ThreadMode: mode,
		Total:      Resources{Cores: total, Mem: 256 * gb, GPUs: 2, GPUMem: 16 * gb},
		Idle:       Resources{Cores: idle, Mem: idleMem, GPUs: 2, GPUMem: 16 * gb},
	}
}

func TestSize(t *testing.T) {
	const strandedEdge = 2*gb + memStranded
	for _, tc := range []struct {
		name       string
		h          *Host
		cores, mem int64
		threadable bool
		max        int64
		selfish    bool
		want       int64 // cores; 0 means refused
	}{
		{"zero takes the whole idle host", sizeHost(ThreadAuto, 1600, 1600, 64*gb), 0, 4 * gb, true, 0, false, 1600},
		{"zero refuses a busy host", sizeHost(ThreadAuto, 1600, 1500, 64*gb), 0, 4 * gb, true, 0, false, 0},
		{"zero non-threadable is cut to one core", sizeHost(ThreadAuto, 1600, 1600, 64*gb), 0, 4 * gb, false, 0, false, 100},
		{"negative leaves that many cores", sizeHost(ThreadAuto, 1600, 1600, 64*gb), -200, 4 * gb, true, 0, false, 1400},
		{"negative beyond the host", sizeHost(ThreadAuto, 1600, 1600, 64*gb), -1600, 4 * gb, true, 0, false, 0},
		{"negative refuses a busy host", sizeHost(ThreadAuto, 1600, 1590, 64*gb), -200, 4 * gb, true, 0, false, 0},
		{"1-99 left as asked", sizeHost(ThreadAuto, 1600, 1600, 64*gb), 50, 4 * gb, true, 0, false, 50},
		{"1-99 non-threadable left as asked", sizeHost(ThreadAuto, 1600, 1600, 64*gb), 50, 4 * gb, false, 0, false, 50},
		{"1-99 over the idle cores", sizeHost(ThreadAuto, 1600, 40, 64*gb), 50, 4 * gb, true, 0, false, 0},
		{"ALL mode gives every whole idle core", sizeHost(ThreadAll, 1600, 1250, 64*gb), 100, 4 * gb, true, 0, false, 1200},
		{"ALL mode, non-threadable cut last", sizeHost(ThreadAll, 1600, 1250, 64*gb), 100, 4 * gb, false, 0, false, 100},
		{"selfish service takes the host", sizeHost(ThreadAuto, 1600, 1600, 64*gb), 100, 2 * gb, true, 0, true, 1600},
		{"selfish ignored when not threadable", sizeHost(ThreadAuto, 1600, 1600, 64*gb), 100, 2 * gb, false, 0, true, 100},
		{"stranded memory takes the idle cores", sizeHost(ThreadAuto, 1600, 800, 3*gb), 100, 2 * gb, true, 0, false, 800},
		{"stranded at exactly 1.5 GB left", sizeHost(ThreadAuto, 1600, 1600, strandedEdge), 100, 2 * gb, true, 0, false, 1600},
		// (3.5 GB + 1 KB) / 16 cores = 229376 KB a core; 2 GB of it is 9.14 cores.
		{"one KB above stranded spans by memory", sizeHost(ThreadAuto, 1600, 1600, strandedEdge+1), 100, 2 * gb, true, 0, false, 900},
		// 32 GB / 16 cores = 2 GB a core.
		{"span rounds half up", sizeHost(ThreadAuto, 1600, 1600, 32*gb), 100, 5 * gb, true, 0, false, 300},
		{"span of half a core is one", sizeHost(ThreadAuto, 1600, 1600, 64*gb), 100, 2 * gb, true, 0, false, 100},
		{"span capped by cores max", sizeHost(ThreadAuto, 1600, 1600, 32*gb), 100, 8 * gb, true, 300, false, 300},
		{"span never below the asked cores", sizeHost(ThreadAuto, 1600, 1600, 64*gb), 400, 2 * gb, true, 0, false, 400},
		{"VARIABLE gives a threadable layer two cores", sizeHost(ThreadVariable, 1600, 800, 64*gb), 100, gb, true, 0, false, 200},
		{"VARIABLE refuses one whole idle core", sizeHost(ThreadVariable, 1600, 150, 64*gb), 100, gb, true, 0, false, 0},
		{"VARIABLE refuses a wide span on one core", sizeHost(ThreadVariable, 1600, 199, 32*gb), 100, 8 * gb, true, 0, false, 0},
		{"VARIABLE gives non-threadable one core", sizeHost(ThreadVariable, 1600, 150, 64*gb), 100, gb, false, 0, false, 100},
		{"core max caps the whole host", sizeHost(ThreadAuto, 1600, 1600, 64*gb), 400, 2 * gb, true, 800, true, 800},
		{"core max wins over the asked cores", sizeHost(ThreadAuto, 1600, 1600, 64*gb), 400, 2 * gb, true, 200, true, 200},
		// 10 GB at 2 GB a core is 5 cores, but only 3.5 are idle.
		{"above idle falls back to whole idle cores", sizeHost(ThreadAuto, 1600, 350, 32*gb), 300, 10 * gb, true, 0, false, 300},
		{"request above idle refused", sizeHost(ThreadAuto, 1600, 300, 32*gb), 400, 2 * gb, true, 0, false, 0},
		{"non-threadable cut to one core", sizeHost(ThreadAuto, 1600, 1600, 64*gb), 400, 2 * gb, false, 0, false, 100},
		{"total cores unknown", sizeHost(ThreadAuto, 0, 800, 32*gb), 100, 8 * gb, true, 0, false, 0},
	} {
		l := &Layer{Min: Resources{Cores: tc.cores, Mem: tc.mem, GPUs: 1, GPUMem: gb}, Threadable: tc.threadable, CoresMax: tc.max}
		got, ok := Size(tc.h, l, tc.selfish)
		if !ok {
			got.Cores = 0
		}
		if got.Cores != tc.want {
			t.Errorf("%s: cores %d (ok %v), want %d", tc.name, got.Cores, ok, tc.want)
		}
		if ok && (got.Mem != tc.mem || got.GPUs != 1 || got.GPUMem != gb) {
			t.Errorf("%s: size %+v does not carry the layer's minimums", tc.name, got)
		}
	}
}

func FuzzSize(f *testing.F) {
	f.Add(uint8(0), int64(1600), int64(1600), int64(64*gb), int64(0), int64(4*gb), true, int64(0), false)
	f.Add(uint8(1), int64(1600), int64(1250), int64(64*gb), int64(100), int64(4*gb), false, int64(0), false)
	f.Add(uint8(2), int64(1600), int64(199), int64(32*gb), int64(100), int64(8*gb), true, int64(0), false)
	f.Add(uint8(0), int64(1600), int64(350), int64(32*gb), int64(300), int64(10*gb), true, int64(800), true)
	f.Add(uint8(0), int64(800), int64(800), int64(8*gb), int64(-200), int64(gb), true, int64(0), false)
	f.Fuzz(func(t *testing.T, mode uint8, total, idle, idleMem, cores, mem int64, threadable bool, coresMax int64, selfish bool) {
		// A consistent host: idle within total.
		total = abs(total) % 25601
		idle = abs(idle) % (total + 1)
		idleMem = abs(idleMem) % (1 << 30)
		cores = cores % 6000
		mem = abs(mem) % (1 << 30)
		coresMax = coresMax % 6000
		h := &Host{
			ThreadMode: ThreadMode(mode % 3),
			Total:      Resources{Cores: total, Mem: 1 << 30},
			Idle:       Resources{Cores: idle, Mem: idleMem},
		}
		l := &Layer{Min: Resources{Cores: cores, Mem: mem}, Threadable: threadable, CoresMax: coresMax}
		size, ok := Size(h, l, selfish)
		if !ok {
			return
		}
		switch {
		case size.Cores <= 0:
			t.Fatalf("cores %d <= 0 for host %+v layer %+v", size.Cores, h, l.Min)
		case size.Cores > h.Idle.Cores:
			t.Fatalf("cores %d above idle %d (layer %+v max %d)", size.Cores, h.Idle.Cores, l.Min, coresMax)
		case cores >= 100 && coresMax > 0 && size.Cores > coresMax:
			t.Fatalf("cores %d above cores max %d", size.Cores, coresMax)
		case !threadable && size.Cores > 100:
			t.Fatalf("non-threadable layer got %d cores", size.Cores)
		case cores <= 0 && h.Idle.Cores != h.Total.Cores:
			t.Fatalf("request %d booked on a busy host (%d of %d idle)", cores, h.Idle.Cores, h.Total.Cores)
		case size.Mem != mem:
			t.Fatalf("memory %d, want the layer's %d", size.Mem, mem)
		}
	})
}

func abs(x int64) int64 {
	if x < 0 {
		if x == -x { // math.MinInt64
			return 0
		}
		return -x
	}
	return x
}
