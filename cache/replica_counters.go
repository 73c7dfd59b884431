package cache

// What the replica reports for the counters of managed shows (DESIGN.md):
// Cuebot no longer lowers them when it releases a proc, and the feed is the
// record of releases. The replica only reports what it decoded
// (ReplicaConfig.OnCounters); package counters recomputes the rows.

// CounterRows names the counter rows a proc of a managed show is counted
// in: subscription (Show, Alloc), layer_resource (Layer), job_resource
// (Job), folder_resource (Folder) and point (Show, Dept). An empty key names
// no row.
type CounterRows struct{ Show, Alloc, Layer, Job, Folder, Dept string }

// ReleasedProc is a deleted proc of a managed show: its id, its host and
// the counter rows it was counted in.
type ReleasedProc struct {
	Proc, Host string
	Rows       CounterRows
}

// MovedHost is a subscription (Show, Alloc) that the procs of a managed
// show on Host left or joined when the host changed allocation: it is off
// its sum until recomputed.
type MovedHost struct{ Host, Show, Alloc string }

// CounterChanges is what one applied transaction, or one snapshot loaded,
// did to the counters of managed shows.
type CounterChanges struct {
	// Released are the procs of managed shows deleted (by the transaction,
	// or since the previous poll).
	Released []ReleasedProc
	// Moved are the subscriptions procs left and joined with their hosts.
	Moved []MovedHost
	// Capped are counter rows whose cap changed (a subscription's burst, a
	// job's maximums): a row Cuebot's guard refused may be accepted now.
	Capped []CounterRows
	// Shows, after a snapshot loaded whole (every (re)connect of the
	// stream, the first poll), are every managed show: releases while no
	// feed ran may have left any of their rows high.
	Shows []string
	// Polled is set after a poll that followed another: procs booked and
	// released between the two were seen by neither, so rows may be off
	// their sums unseen.
	Polled bool
}

func (c *CounterChanges) empty() bool {
	return len(c.Released) == 0 && len(c.Moved) == 0 && len(c.Capped) == 0 && len(c.Shows) == 0 && !c.Polled
}

// counters reports c when it holds anything.
func (r *Replica) counters(c CounterChanges) {
	if r.cfg.OnCounters != nil && !c.empty() {
		r.cfg.OnCounters(c)
	}
}
