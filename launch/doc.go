// Package launch turns committed bookings into frames running on RQD, and
// undoes the bookings whose launch failed.
//
// The launch outbox (cuesched.launch_outbox, migration 0005) holds each
// booking from its commit until its proc is gone. The booking transaction
// (package dispatch) writes the row; this package moves it on:
//
//	pending  --launch accepted / "already running"-->  launched
//	pending  --refused, breaker open, bad rows------->  released (row deleted with the proc)
//	pending  --no verdict------------------------------> unsure --kill confirmed / host unreachable too long--> released
//	pending  --no verdict, another instance launched it-->  launched (left as it is)
//	(dry run)                                            dry
//
// Nothing polls the table: a row goes when its proc is deleted (a trigger on
// proc, in Cuebot's release or in our compensation), and an instance that
// starts or takes a cluster over resolves that cluster's pending and unsure
// rows once (Launcher.Resolve).
//
// A frame RQD no longer runs after a launch with no verdict (an unsure row
// whose kill finds nothing, or a pending row inherited from an owner that
// died mid-launch) may have run to its end with its completion report on
// its way to Cuebot: RQD would run it again if asked. Such a booking is
// released or launched only after Config.ReportGrace, or as soon as Cuebot
// records the completion, which ends it; RQD's status report (which frames
// it runs now) tells those frames from the ones it still runs.
//
// The Launcher (launcher.go) runs after commit on a bounded pool of
// workers, so slow hosts never hold up booking. It reads what RunFrame needs
// for a chunk of bookings in one query and builds each RunFrame the way
// Cuebot does (runframe.go, frameset.go); the RQDClient (rqdclient.go) calls
// LaunchFrame with a deadline and a breaker per host. A failed launch is
// compensated by releasing the booking in one version-guarded transaction
// (release.go); OnSettled reports every booking's outcome.
//
// Why launch imports dispatch and not the other way round: booking is the
// step that decides, launching the one that follows. launch needs
// dispatch's Booking; dispatch needs of a launcher only the two calls it
// makes after a commit, which it declares as the small dispatch.Launcher
// interface (Submit, and ResolveLater for a batch whose commit outcome is
// unknown). So dispatch neither knows RQD nor links gRPC, and booking is
// tested with a launcher that records.
package launch
