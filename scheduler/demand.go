package scheduler

import (
	"sync"
	"time"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/dispatch"
	"github.com/cuesched/cuesched/match"
)

// demandDebounce is the least time between two recomputes of the demand
// from the queue: a busy queue applies reads far more often than the
// demand needs to follow them.
const demandDebounce = 50 * time.Millisecond

// demand is the demand side of tag pressure: what the queued layers of
// tag-bucket clusters, work that can run only on hosts carrying one of its
// tags, still want of those hosts. The host cache weighs it against the
// hosts' idle capacity (cache.Hosts.SetDemand) and leaves the hosts of a
// contested tag to that work while other hosts fit, so allocation-tagged
// work planned first does not take the only hosts tagged work may use.
//
// It reads memory only: the whole queue again, at the start of a round,
// when the queue has applied a read since the last time (debounced), and in
// between it is lowered as rounds book frames, because the queue reads a
// layer again on hints, not after every booking. The scheduler's workers
// share one (Scheduler.demand).
type demand struct {
	mu      sync.Mutex
	applied <-chan struct{} // the queue's signal taken at the last read; nil: never read
	at      time.Time       // when the queue was last read
	layers  map[string]*layerDemand
	// booked is the frames booked per layer since its Waiting was read, so a
	// read of the queue that has not read the layer again keeps them off.
	booked map[string]bookedSince
	total  map[match.TagDemand]match.Resources // by (Facility, Tag); Need zero
	// foreign holds the tags of queued work in clusters this instance does
	// not own, tag buckets and allocations alike. Their hosts are contested
	// outright: another instance books that work on them, and work here
	// that can go elsewhere would only race it for them (wasted attempts).
	// On the peer stress farm, where every host of an allocation carries a
	// manual tag, three instances wasted 7-12% of their attempts while only
	// foreign buckets counted, nearly all of them tag-bucket work and
	// another instance's allocation work planned onto the same hosts. A
	// bucket's need still counts (total): when every host is contested (each
	// carries a foreign tag), work goes to those whose tags' need leaves
	// room.
	foreign map[match.TagDemand]bool
}

// layerDemand is one tagged layer's share of demand.
type layerDemand struct {
	facility string
	tags     []string        // its non-allocation tags that name a host
	share    match.Resources // one waiting frame's minimums over the tags naming a host
	waiting  int64           // Layer.Waiting as read
	left     int64           // waiting frames not booked yet
}

type bookedSince struct {
	waiting int64 // Layer.Waiting when booked
	n       int64
}

func newDemand() *demand {
	return &demand{
		layers:  map[string]*layerDemand{},
		booked:  map[string]bookedSince{},
		total:   map[match.TagDemand]match.Resources{},
		foreign: map[match.TagDemand]bool{},
	}
}

// refresh reads the queue again when it changed since the last read (at
// most once per demandDebounce) and hands the demand to the host cache.
func (d *demand) refresh(s *Scheduler) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.applied != nil {
		select {
		case <-d.applied:
		default:
			return // the queue applied no read since
		}
		if s.cfg.Clock().Sub(d.at) < demandDebounce {
			return // the next round reads it
		}
	}
	q := s.deps.Queue
	// Taken before reading: a read applied meanwhile is read again later.
	d.applied = q.Applied()
	d.at = s.cfg.Clock()
	s.mu.Lock()
	keyer := s.keyer
	s.mu.Unlock()
	var layers []*match.Layer
	clear(d.foreign)
	for _, key := range q.Clusters() {
		mine := s.works(key)
		if key.Kind != cluster.KindTags && mine {
			continue // allocation work counts no demand
		}
		ls := q.Layers(key)
		if key.Kind == cluster.KindTags {
			layers = append(layers, ls...)
		}
		if !mine {
			d.addForeign(keyer, key, ls)
		}
	}
	d.recompute(layers, keyer, s.deps.Hosts.Tagged)
	s.deps.Hosts.SetDemand(d.demands())
}

// addForeign marks foreign the tags, in key's cluster, of the queued layers
// of a cluster this instance does not work: the tags of a tag bucket, or an
// allocation's tag.
func (d *demand) addForeign(keyer *cluster.Keyer, key cluster.Key, layers []*match.Layer) {
	for _, l := range layers {
		for _, t := range l.Tags {
			if keyer.OfTag(l.Facility, t) == key {
				d.foreign[match.TagDemand{Facility: l.Facility, Tag: t}] = true
			}
		}
	}
}

// invalidate makes the next refresh read the queue again: what this
// instance owns changed.
func (d *demand) invalidate() {
	d.mu.Lock()
	d.applied = nil
	d.mu.Unlock()
}

// recompute sets the demand from the queued layers of the tag-bucket
// clusters (a layer may come more than once). tagged reports whether any
// host of a facility carries a tag.
func (d *demand) recompute(layers []*match.Layer, keyer *cluster.Keyer, tagged func(facility, tag string) bool) {
	clear(d.layers)
	clear(d.total)
	seen := make(map[string]bool, len(layers))
	for _, l := range layers {
		if seen[l.ID] {
			continue // a layer with tags in several buckets
		}
		seen[l.ID] = true
		if ld := d.layerOf(keyer, tagged, l); ld != nil {
			d.layers[l.ID] = ld
			d.add(ld, 1)
		}
	}
	for id := range d.booked {
		if !seen[id] {
			delete(d.booked, id)
		}
	}
}

// layerOf is a layer's demand, nil when it has none: its minimums times its
// waiting frames not booked since they were read, spread evenly over the
// tags that name a host in its facility, of which only the non-allocation
// ones are kept (a layer that may also use an allocation's hosts needs the
// tagged hosts that much less).
func (d *demand) layerOf(keyer *cluster.Keyer, tagged func(facility, tag string) bool, l *match.Layer) *layerDemand {
	left := l.Waiting
	if b, ok := d.booked[l.ID]; ok {
		if b.waiting == l.Waiting {
			left -= b.n
		} else {
			delete(d.booked, l.ID) // read again since: Waiting counts the bookings
		}
	}
	if left <= 0 {
		return nil
	}
	var named int64
	var tags []string
	for _, t := range l.Tags {
		if !tagged(l.Facility, t) {
			continue
		}
		named++
		if keyer.OfTag(l.Facility, t).Kind == cluster.KindTags {
			tags = append(tags, t)
		}
	}
	if len(tags) == 0 {
		return nil
	}
	return &layerDemand{
		facility: l.Facility,
		tags:     tags,
		share:    match.Resources{Cores: max(l.Min.Cores, 0) / named, Mem: max(l.Min.Mem, 0) / named},
		waiting:  l.Waiting,
		left:     left,
	}
}

// add adds sign times the layer's demand to the totals.
func (d *demand) add(ld *layerDemand, sign int64) {
	for _, t := range ld.tags {
		k := match.TagDemand{Facility: ld.facility, Tag: t}
		v := d.total[k]
		v.Cores += sign * ld.left * ld.share.Cores
		v.Mem += sign * ld.left * ld.share.Mem
		if v.Cores <= 0 && v.Mem <= 0 {
			delete(d.total, k)
			continue
		}
		d.total[k] = v
	}
}

// bookedFrames lowers the demand of the layers whose frames a round booked
// and hands it to the host cache.
func (d *demand) bookedFrames(s *Scheduler, bookings []dispatch.Booking) {
	if len(bookings) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	layers := make([]*match.Layer, len(bookings))
	for i, b := range bookings {
		layers[i] = b.Layer
	}
	if d.lower(layers) {
		s.deps.Hosts.SetDemand(d.demands())
	}
}

// lower counts one booked frame per entry (the layer as the round read it)
// and reports whether the demand changed.
func (d *demand) lower(booked []*match.Layer) bool {
	changed := false
	for _, l := range booked {
		ld := d.layers[l.ID]
		if ld == nil || ld.waiting != l.Waiting {
			// No demand of its own, or read again since the round read it:
			// its Waiting counts the booking already, or will when read
			// again.
			continue
		}
		bs := d.booked[l.ID]
		if bs.waiting != l.Waiting {
			bs = bookedSince{waiting: l.Waiting}
		}
		bs.n++
		d.booked[l.ID] = bs
		if ld.left > 0 {
			d.add(ld, -1)
			ld.left--
			d.add(ld, 1)
			changed = true
		}
	}
	return changed
}

// demands is the totals as the host cache takes them.
func (d *demand) demands() []match.TagDemand {
	ds := make([]match.TagDemand, 0, len(d.total)+len(d.foreign))
	for k, v := range d.total {
		k.Need = v
		ds = append(ds, k)
	}
	for k := range d.foreign {
		k.Foreign = true
		ds = append(ds, k)
	}
	return ds
}
