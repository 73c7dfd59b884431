package launch

import (
	"slices"
	"strings"
	"testing"
)

func collect(fs frameSet) []int { return slices.Collect(fs.All()) }

func TestParseFrameSet(t *testing.T) {
	for _, c := range []struct {
		spec string
		want []int
	}{
		{"1", []int{1}},
		{"-3", []int{-3}},
		{"1-5", []int{1, 2, 3, 4, 5}},
		{"5-1", []int{5, 4, 3, 2, 1}},
		{"-2-2", []int{-2, -1, 0, 1, 2}},
		{"-1--3", []int{-1, -2, -3}},
		{"1-10x3", []int{1, 4, 7, 10}},
		{"1-9x3", []int{1, 4, 7}},
		{"10-1x-3", []int{10, 7, 4, 1}},
		{"3-3x5", []int{3}},
		{"1-10y3", []int{2, 3, 5, 6, 8, 9}},
		{"10-1y-3", []int{9, 8, 6, 5, 3, 2}},
		{"1-10:5", []int{1, 6, 2, 4, 8, 10, 3, 5, 7, 9}},
		{"1-10:2", []int{1, 3, 5, 7, 9, 2, 4, 6, 8, 10}},
		{"1-3:1", []int{1, 2, 3}},
		{"1-2:8", []int{1, 2}},
		{"10-1:-5", []int{10, 5, 9, 7, 3, 1, 8, 6, 4, 2}},
		{"1,5,9", []int{1, 5, 9}},
		{"1-3, 7, 10-12x2", []int{1, 2, 3, 7, 10, 12}},
		{"1-3,2", []int{1, 2, 3, 2}}, // no de-duplication, as in Cuebot
		{"10-1x1,4", []int{4}},       // an empty section, as in Cuebot
		{"1-10y1,4", []int{4}},
	} {
		fs, err := parseFrameSet(c.spec)
		if err != nil {
			t.Errorf("%q: %v", c.spec, err)
			continue
		}
		if got := collect(fs); !slices.Equal(got, c.want) {
			t.Errorf("%q: frames %v, want %v", c.spec, got, c.want)
		}
		if fs.Len() != int64(len(c.want)) {
			t.Errorf("%q: Len %d, want %d", c.spec, fs.Len(), len(c.want))
		}
	}
}

func TestParseFrameSetErrors(t *testing.T) {
	for _, spec := range []string{
		"", ",", "1,", ",1", "a", "1-", "-", "--1", "1-a", "1x2", "1-10x", "1-10x0", "1-10z2",
		"1-10x2x", "10-1x2", "1-10x-2", "5-5x-1", "1-10:0", "10-1:3", "+1", "1 -2", "1-10y0",
		"2147483648", "1-2147483648", "1-10x99999999999", "10-1x1", "1-10y1",
	} {
		if fs, err := parseFrameSet(spec); err == nil {
			t.Errorf("%q: want an error, got %v", spec, collect(fs))
		}
	}
}

func TestChunk(t *testing.T) {
	for _, c := range []struct {
		spec        string
		frame, size int
		want        []int
		wantErr     bool
	}{
		{"1-10", 1, 3, []int{1, 2, 3}, false},
		{"1-10", 4, 3, []int{4, 5, 6}, false},
		{"1-10", 10, 3, []int{10}, false},
		{"1-10", 9, 3, []int{9, 10}, false},
		{"1-100x10", 31, 3, []int{31, 41, 51}, false},
		{"1-5,10-20x5", 4, 4, []int{4, 5, 10, 15}, false},
		{"1-10y3", 3, 3, []int{3, 5, 6}, false},
		{"1-10:5", 6, 4, []int{6, 2, 4, 8}, false},
		{"1-10:5", 4, 3, []int{4, 8, 10}, false},
		{"1-3,2", 2, 5, []int{2, 3, 2}, false}, // first occurrence
		{"1-10", 5, 0, []int{5}, false},
		{"1-2000000000", 1999999999, 5, []int{1999999999, 2000000000}, false},
		{"1-10", 11, 2, nil, true},
		{"1-10x2", 2, 2, nil, true},
		{"1-10y2", 3, 2, nil, true},
		{"1-10", 1, maxChunkFrames + 1, nil, true},
	} {
		fs, err := parseFrameSet(c.spec)
		if err != nil {
			t.Fatalf("%q: %v", c.spec, err)
		}
		got, err := fs.Chunk(c.frame, c.size)
		if (err != nil) != c.wantErr {
			t.Errorf("%q chunk(%d,%d): error %v, want error %v", c.spec, c.frame, c.size, err, c.wantErr)
			continue
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%q chunk(%d,%d) = %v, want %v", c.spec, c.frame, c.size, got, c.want)
		}
	}
}

func TestFormatFrames(t *testing.T) {
	for _, c := range []struct {
		frames []int
		want   string
	}{
		{nil, ""},
		{[]int{7}, "7"},
		{[]int{1, 2}, "1-2"},
		{[]int{1, 3}, "1,3"},
		{[]int{1, 2, 3, 4}, "1-4"},
		{[]int{1, 3, 5, 7}, "1-7x2"},
		{[]int{1, 3, 4, 5}, "1,3-5"},
		{[]int{10, 9, 8}, "10-8"},
		{[]int{10, 7, 4}, "10-4x-3"},
		{[]int{-3, -2, -1}, "-3--1"},
		{[]int{5, 5, 5}, "5,5,5"},
		{[]int{1, 6, 2, 4, 8, 10}, "1,6,2,4,8,10"},
		{[]int{1, 6, 2, 4, 6, 8}, "1,6,2-8x2"},
	} {
		got := formatFrames(c.frames)
		if got != c.want {
			t.Errorf("formatFrames(%v) = %q, want %q", c.frames, got, c.want)
		}
		if len(c.frames) == 0 {
			continue
		}
		fs, err := parseFrameSet(got)
		if err != nil {
			t.Errorf("%q does not parse: %v", got, err)
		} else if back := collect(fs); !slices.Equal(back, c.frames) {
			t.Errorf("%q reads back as %v, want %v", got, back, c.frames)
		}
	}
}

// FuzzFrameSet: parsing never panics; a parsed set's length matches its
// frames; a chunk starts at its frame, stays in the set and round-trips
// through formatFrames.
func FuzzFrameSet(f *testing.F) {
	for _, s := range []string{"1-10", "1-100x3", "1-10y3", "1-10:5", "1,5,9", "10-1", "-5--1x-2", "1-3,2", ""} {
		f.Add(s, 3, 4)
	}
	f.Fuzz(func(t *testing.T, spec string, frame, size int) {
		fs, err := parseFrameSet(spec)
		if err != nil {
			if fs.Len() != 0 {
				t.Fatalf("%q: error %v with %d frames", spec, err, fs.Len())
			}
			return
		}
		if fs.Len() <= 0 {
			t.Fatalf("%q parsed with %d frames", spec, fs.Len())
		}
		if fs.Len() <= 5000 {
			all := collect(fs)
			if int64(len(all)) != fs.Len() {
				t.Fatalf("%q: Len %d, %d frames", spec, fs.Len(), len(all))
			}
			if len(all) > 0 {
				frame = all[uint(frame)%uint(len(all))]
			}
		}
		size = size % 64
		chunk, err := fs.Chunk(frame, size)
		if err != nil {
			if !strings.Contains(err.Error(), "not in the frame set") {
				t.Fatalf("%q chunk(%d,%d): %v", spec, frame, size, err)
			}
			return
		}
		if len(chunk) == 0 || chunk[0] != frame || len(chunk) > max(size, 1) {
			t.Fatalf("%q chunk(%d,%d) = %v", spec, frame, size, chunk)
		}
		back, err := parseFrameSet(formatFrames(chunk))
		if err != nil {
			t.Fatalf("%q: chunk %v formats as %q: %v", spec, chunk, formatFrames(chunk), err)
		}
		if got := collect(back); !slices.Equal(got, chunk) {
			t.Fatalf("%q: chunk %v reads back as %v", spec, chunk, got)
		}
	})
}

func BenchmarkChunk(b *testing.B) {
	fs, err := parseFrameSet("1-100000:64")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := fs.Chunk(77777, 10); err != nil {
			b.Fatal(err)
		}
	}
}
