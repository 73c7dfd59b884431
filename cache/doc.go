// Package cache is cuesched's replica of the hosts: an in-memory view of the
// database, fed by package cdc and read by package match.
//
// It holds the host index (per facility and tag, keyed by idle cores and idle
// memory, with one capacity record per host that matching checks out and
// back in), and usage and caps (implementing match.Hosts and match.Caps).
// The pending layers are not here: package queue keeps them, woken by the
// work hints this replica's stream hands on (ReplicaConfig.OnHint).
//
// The Replica (replica.go) keeps the host index, usage and caps equal to
// the database from cdc's replication stream, reads the limits by query when
// cuesched_limits says they changed (limits.go), and reports the procs it
// sees released for package counters to recompute; it writes nothing.
//
// Everything here is a replica: after any reconnect it is rebuilt from the
// database, which stays the source of truth.
package cache
