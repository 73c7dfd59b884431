// Package dispatch turns placements into bookings and bookings into frames
// running on RQD.
//
// Booking (Booker.Book) is one transaction per batch of one cluster, in five
// round trips: BEGIN with pg_try_advisory_xact_lock on the cluster's booking
// key (a cluster another transaction holds is reported busy, never waited
// on) and the Fence; the batch's rows locked in DESIGN.md's lock order with
// the values the re-check needs; the re-check in memory, dropping with a
// reason every placement the locked rows no longer admit, so that Cuebot's
// guard triggers never raise; the write set as set-based statements plus one
// launch outbox row per booking; COMMIT; pg_current_wal_lsn().
//
// The launch outbox (cuesched.launch_outbox, migration 0005) holds each
// booking from its commit until its proc is gone:
//
//	pending  --launch accepted / "already running"-->  launched
//	pending  --refused, breaker open, bad rows------->  released (row deleted with the proc)
//	pending  --no verdict------------------------------> unsure --kill confirmed / host unreachable too long--> released
//	(dry run)                                            dry
//
// Nothing polls the table: a row goes when its proc is deleted (a trigger on
// proc, in Cuebot's release or in our compensation), and an instance that
// starts or takes a cluster over resolves that cluster's pending and unsure
// rows once (Launcher.Resolve).
//
// Launching (Launcher) runs after commit on a bounded pool of workers, so
// slow hosts never hold up booking; a failed launch is compensated by
// releasing the booking in one version-guarded transaction (release.go).
package dispatch
