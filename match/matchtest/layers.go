package matchtest

import (
	"fmt"

	"github.com/cuesched/cuesched/match"
)

// StressLayers returns n pending layers shaped like the peer stress farm's
// (DESIGN.md): n/4 jobs of 4 threadable layers in one show and folder,
// minimums cycling 1/2/4/8 cores and 2/4/8/16 GB, job priorities 1-100,
// each with frames waiting frames. tag(i) is layer i's one tag.
func StressLayers(n, frames int, show, folder string, tag func(i int) string) []*match.Layer {
	const gb = 1048576 // KB
	layers := make([]*match.Layer, n)
	for i := range layers {
		job := i / 4
		l := &match.Layer{
			ID: fmt.Sprintf("layer%04d", i), JobID: fmt.Sprintf("job%03d", job), ShowID: show, FolderID: folder,
			Facility: "local", Priority: int64(1 + (job*37)%100), Tags: []string{tag(i)}, Threadable: true,
			Min: match.Resources{Cores: int64(100) << (i % 4), Mem: int64(2*gb) << ((i / 4) % 4)},
		}
		l.Frames = make([]match.Frame, frames)
		for k := range l.Frames {
			l.Frames[k] = match.Frame{ID: fmt.Sprintf("%s/%d", l.ID, k), Number: int64(k)}
		}
		layers[i] = l
	}
	return layers
}
