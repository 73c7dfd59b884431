// Package shows hands shows between Cuebot and cuesched (`cuesched show
// list|manage|release`): show.b_scheduler_managed says which of the two books
// a show, and who keeps its five counters (subscription, layer_resource,
// job_resource, folder_resource, point: cores and GPUs).
//
// Who lowers the counters when a frame finishes is decided by Cuebot at each
// release, from the flag as it reads it then (DESIGN.md, "Release"): for a
// managed show it deletes the proc and leaves the counters to cuesched (whose
// counters writer recomputes the rows of managed shows only); for any other
// show it lowers them itself, in the transaction that deletes the proc. So
// once a show is released, the frames cuesched booked that still run are
// lowered by Cuebot when they finish, by exactly what cuesched's booking
// added: nothing waits for them.
//
// What can leave a released show's counters off their sums is the handover
// itself: releases done while the show was managed that no cuesched instance
// had recomputed yet (or none ran), and a Cuebot release that read the flag
// just before it flipped and deletes its proc just after, lowering nothing.
// No counters writer fixes either afterwards, the show being Cuebot's. So
// Release flips the flag in a transaction of its own, waits until every
// transaction that had read table show before that commit has ended (they
// hold a lock on it until they end: pg_locks), and then recomputes every
// counter row of the show with the counters package's lock-then-sum
// (counters.RecomputeReleased). That recompute is exact even while Cuebot
// books and releases the show: Cuebot changes a proc and its counters in
// one transaction holding the counter rows' locks, so the sum, taken after
// the locks, sees each such change whole or not at all. From then on Cuebot
// keeps the counters exact by itself. The wait is bounded: the transactions
// still open then are named, and release run again (on a show no longer
// managed it only recomputes) repairs what they leave.
//
// A Cuebot that caches the flag (upstream OpenCue documents a ~30 s cache
// for it) keeps taking the show for managed until its cache expires: give
// Release that lifetime as Settle, and the recompute runs after it.
//
// Frames running under cuesched are the procs it booked that still hold
// their resources: those with a row in its launch outbox, which lives as
// long as its proc.
package shows
