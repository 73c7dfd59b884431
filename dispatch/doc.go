// Package dispatch turns placements into bookings: the guarded, batched
// booking transaction. Launching what it booked is package launch.
//
// Booking (Booker.Book) is one transaction per batch of one cluster. A batch
// that would lock rows another batch of the same Booker holds waits for it
// first, in the Booker's gate, before it begins, and the batches that waited
// together are then booked in one transaction (gate.go says why). Then three
// round trips. The first: BEGIN with pg_try_advisory_xact_lock on each
// cluster's booking key (a cluster another transaction holds is reported
// busy, never waited on) and its Fence, and the batches' rows locked in
// DESIGN.md's lock order with the values the re-check needs. Between it and
// the second, the re-check in memory drops with a reason every placement
// the locked rows no longer admit, so that Cuebot's guard triggers never
// raise. The second: the write set as set-based statements plus one launch
// outbox row per booking (cuesched.launch_outbox, state 'pending', or 'dry'
// in a dry run). The third: COMMIT, and pg_current_wal_lsn() after it.
//
// After the commit the bookings go to the Launcher the Booker was given
// (BookerConfig.Launcher, an interface that launch.Launcher implements), and
// a batch whose COMMIT was cut off with no way to tell whether it committed
// (ErrCommitUnknown) is handed to it to resolve from the outbox later.
package dispatch
