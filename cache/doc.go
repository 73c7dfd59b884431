// Package cache is cuesched's in-memory view of the database, fed by package
// cdc and read by package match.
//
// It holds the host index (per facility and tag, keyed by idle cores and idle
// memory, with one capacity record per host that matching checks out and
// back in), usage and caps (implementing match.Hosts and match.Caps), and the
// pending-layer queue (queue.go): the layers of managed shows that have
// waiting frames, grouped per cluster, kept fresh by the cuesched_work
// hints (notifications, and the retry messages of the replication stream) or
// by polling (poll.go), and by dispatch results.
//
// The Replica (replica.go) keeps the host index, usage and caps equal to
// the database from cdc's replication stream, reads the limits by query when
// cuesched_limits says they changed (limits.go), and reports the procs it
// sees released for package counters to recompute; it writes nothing.
//
// Everything here is a replica: after any reconnect it is rebuilt from the
// database, which stays the source of truth.
package cache
