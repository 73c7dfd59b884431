package scheduler

// Start reading the loop here. A round of a cluster reads its work from the
// Queue and the Hosts (with usage and caps, match.Caps), plans it (match),
// submits the placements to the Booker, holds what was booked (Holder), and
// asks Ownership which clusters and shows are its own and the Resolver to
// launch what a previous owner left. In the way Nomad's scheduler reads a
// State and submits to a Planner, the loop knows these parts only by these
// interfaces, each as small as the loop uses it: package instance wires the
// concrete parts (queue, cache, dispatch, launch, ownership) to them, and package
// schedulertest fakes them in memory. The loop sleeps between rounds until
// one of the Events wakes it.

import (
	"context"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/dispatch"
	"github.com/cuesched/cuesched/match"
	"github.com/cuesched/cuesched/ownership"
)

// Queue is the pending work: the layers with waiting frames, by cluster
// (queue.Queue implements it).
type Queue interface {
	// Layers returns copies of a cluster's queued layers, each with its
	// show's name, without frames, highest priority first.
	Layers(key cluster.Key) []*match.Layer
	// Frames reads up to limit waiting frames of each layer into its Frames.
	Frames(ctx context.Context, layers []*match.Layer, limit int) error
	// Drained forgets a layer Frames found without waiting frames.
	Drained(layerID string)
	// Requeue has layers read again, waking their clusters (Events.Wake).
	Requeue(layerIDs ...string)
	// Clusters is every cluster with queued layers, for tag pressure's
	// demand.
	Clusters() []cluster.Key
	// Applied returns a channel closed when the queue next applies a read.
	Applied() <-chan struct{}
}

// Hosts is the host cache: the index matching draws from (match.Hosts: Walk,
// Tagged, Take, Return ...) and what the loop reads of the hosts besides
// (cache.Hosts implements it).
type Hosts interface {
	match.Hosts
	// Host returns a host as the cache holds it now.
	Host(hostID string) (match.Host, bool)
	// Allocs is every allocation known, which cluster keys are made of.
	Allocs() []cluster.Alloc
	// ClusterKeys is every cluster a known host belongs to.
	ClusterKeys(k *cluster.Keyer) []cluster.Key
	// SetDemand gives tag pressure the demand of the queued tagged work.
	SetDemand(ds []match.TagDemand)
	// SetReservations gives the index the reservations the rounds honour,
	// so their walks leave out the hosts held for other layers
	// (match.Claim).
	SetReservations(set *match.ReservationSet)
}

// Booker commits placements of one cluster in guarded transactions
// (dispatch.Booker implements it).
type Booker interface {
	// BatchSize is how many placements one transaction of the cluster takes
	// now: the loop hands over one batch at a time.
	BatchSize(clusterID int32) int
	// Book commits what still fits and drops the rest with a reason; an
	// error is dispatch.ErrFenced when another instance owns the cluster.
	Book(ctx context.Context, c dispatch.Cluster, placements []match.Placement) (dispatch.BatchResult, error)
}

// Holder holds the capacity a round booked as taken until the host cache
// has seen the bookings come back in its feed (instance adapts the
// replica's Booked to it).
type Holder interface {
	Hold(booked dispatch.BatchResult)
}

// Resolver hands the launch outbox rows of clusters to the launcher: the
// bookings a previous owner, or an unknown commit outcome, left unlaunched
// (launch.Launcher implements it). A gained cluster books nothing before
// its rows are resolved.
type Resolver interface {
	Resolve(ctx context.Context, clusterIDs []int32) (int, error)
}

// Ownership is what the loop needs of the coordination between instances
// (package ownership implements it).
type Ownership interface {
	View() ownership.View
	// Changes returns a channel closed when the claims of this instance may
	// have changed; a new one must be taken after each signal.
	Changes() <-chan struct{}
	// SetClusters gives the clusters there are, from the replicated hosts.
	SetClusters(keys []cluster.Key)
	// AllowsShow reports whether this instance may book show (its name)
	// inside the cluster (static mode restricts shows per allocation).
	AllowsShow(key cluster.Key, show string) bool
}

// Events are what wakes the loop; the parts that see them call these
// methods of the Scheduler (instance registers them after building it).
// Nothing else wakes a sleeping cluster: the loop reads no work on a timer.
type Events interface {
	// Wake: new or changed work in a cluster, or a layer's start-after time
	// came (the queue's OnWork).
	Wake(key cluster.Key)
	// HostsChanged: capacity grew on hosts (a release, a host offered, a
	// host whose breaker lets it back), or the set of clusters may have changed.
	HostsChanged(grown []match.Host, topology bool)
	// Released: a booking was undone and its frame is WAITING again; its
	// layer is read again.
	Released(layerID string)
}

var _ Events = (*Scheduler)(nil)

// Running is what planning reservations reads beyond the host index.
type Running interface {
	// Running is the hosts and the frames running on them for one
	// planning, read with ctx.
	Running(ctx context.Context) RunningRead
}

// RunningRead is match.Running for one planning, with the first read that
// failed in it.
type RunningRead interface {
	match.Running
	Err() error
}

// RunningFunc is a func as a Running.
type RunningFunc func(ctx context.Context) RunningRead

// Running implements Running.
func (f RunningFunc) Running(ctx context.Context) RunningRead { return f(ctx) }

// Reservations are the reservations in the database (package reservation
// implements it).
type Reservations interface {
	// All reads every cluster's.
	All(ctx context.Context) ([]match.Reservation, error)
	// Load reads a cluster's, whoever wrote them.
	Load(ctx context.Context, clusterID int32) ([]match.Reservation, error)
	// Save makes rs the cluster's, written by instance owner at the
	// cluster's epoch behind the booking fence.
	Save(ctx context.Context, clusterID, owner int32, epoch int64, rs []match.Reservation) error
}

// Deps are the parts the loop joins.
type Deps struct {
	Queue    Queue
	Hosts    Hosts
	Caps     match.Caps
	Booker   Booker
	Hold     Holder   // nil: nothing held
	Launcher Resolver // resolves what a cluster inherits; nil: nothing to resolve
	Owner    Ownership
	// Running lists every host of a tag and the frames running on each
	// with their expected runs, for reservations (Config.Reservations);
	// nil: none are planned.
	Running Running
	// Reservations keeps them in the database (package reservation), where
	// every instance's rounds honour them; nil: in the loop alone (the
	// simulator, one instance).
	Reservations Reservations
	// Buckets is the deployment's tag bucket count (cuesched.setting).
	Buckets int
	// RecomputeCounters brings every counter row of the managed shows back
	// to SUM(proc) (counters.RecomputeManaged) when clusters are gained;
	// nil: nothing to recompute.
	RecomputeCounters func(ctx context.Context) error
}
