package scenario

import (
	"fmt"

	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/match/matchtest"
)

// Run plans the scenario's rounds with match.Plan against in-memory hosts
// and caps (package matchtest): the running lines' frames are taken first;
// each round plans the layers' remaining frames and commits every
// placement; between rounds the Finish oldest procs end (the running lines'
// first, then placements in order).
func Run(s *Scenario) (*Outcome, error) {
	in := s.Inputs()
	hosts := matchtest.NewHosts(in.Hosts)
	for _, c := range in.Contested {
		hosts.SetContested(c.Facility, c.Tag, true)
	}
	running, err := s.start(hosts, in)
	if err != nil {
		return nil, err
	}
	out := NewOutcome()
	rounds := s.Options.Rounds
	for round := range rounds {
		opt := in.Options
		opt.Seed += int64(round)
		res := match.Plan(in.Layers, hosts, in.Caps, opt)
		took := map[*match.Layer]int{}
		for _, p := range res.Placements {
			if want := p.Layer.Frames[took[p.Layer]]; p.Frame != want {
				return nil, fmt.Errorf("%s: round %d: layer %s placed frame %s out of order (want %s)",
					s.File, round, p.Layer.ID, p.Frame.ID, want.ID)
			}
			took[p.Layer]++
			in.Caps.Apply(p)
			running = append(running, p)
			out.Place(p.Host.ID, p.Layer.ID)
		}
		for l, n := range took {
			l.Frames = l.Frames[n:]
		}
		out.Waits = map[string]Wait{}
		for _, w := range res.Waits {
			out.Waits[w.Layer.ID] = Wait{Reason: string(w.Reason), Detail: w.Detail}
		}
		if round < rounds-1 {
			n := min(s.Options.Finish, len(running))
			for _, p := range running[:n] {
				hosts.Return(p.Host.ID, p.Size)
				in.Caps.Release(p)
			}
			running = running[n:]
		}
	}
	out.Subs = map[SubKey]int64{}
	for k, sub := range in.Caps.Subs {
		out.Subs[SubKey{Show: k.Show, Alloc: k.Alloc}] = sub.Cores
	}
	return out, nil
}

// start takes the running lines' frames from the hosts and counts them in
// the caps; it returns them, the oldest first.
func (s *Scenario) start(hosts *matchtest.Hosts, in *Inputs) ([]match.Placement, error) {
	var running []match.Placement
	i := 0
	for _, r := range s.Running {
		for range r.N {
			p := in.Running[i]
			i++
			if !hosts.Take(p.Host.ID, p.Size) {
				return nil, fmt.Errorf("%s:%d: running %s does not fit on %s", s.File, r.Line, r.Layer, r.Host)
			}
			in.Caps.Apply(p)
			running = append(running, p)
		}
	}
	return running, nil
}
