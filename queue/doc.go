// Package queue is cuesched's pending-layer queue: the layers of managed,
// active shows' PENDING, unpaused jobs that have waiting frames, grouped by
// the clusters their tags fall in, each a *match.Layer ready for matching.
//
// It exists so the loop never scans the job tables to find work: a round
// reads the layers of one cluster from memory (Layers) and only their
// first waiting frames from the database (Frames), and the queue wakes
// only the clusters it holds work for. The database stays the record: the
// queue holds what its query returned, and hints are never the record, so
// whenever hints may have been lost it runs the whole query again.
//
// How it learns of work, through hints naming a job, show, folder, limit
// or allocation, each re-read in one query (Run applies them in batches):
//
//   - Notifications: migrations/0004's triggers notify cdc.WorkChannel when
//     work may have become dispatchable; a cdc.Listener hands them to
//     Notify, and every (re)connect of the listener to Resync, since
//     notifications sent while it was away are gone.
//   - The change stream's hints: a retried frame's hint rides the
//     replication stream instead (migrations/0008: a transactional message,
//     no NOTIFY on Cuebot's hottest write); cache.Replica hands it to
//     StreamHint, and every load of the stream to ResyncLater.
//   - The poller: where LISTEN cannot work (a transaction-mode pooler),
//     Poll rebuilds the whole queue every interval instead (poll.go).
//   - Dispatch: Requeue when a booking found the queue stale, Drained when
//     a layer had no waiting frames left.
//
// The visibility wait: the stream can decode a commit a moment before the
// committing session has left the proc array, so a read taken at once
// could miss the retry for good. A read asked for by StreamHint checks, in
// the same REPEATABLE READ transaction, that its snapshot sees the hinting
// transaction committed (snapshotSees), and reads again until it does.
//
// The loop hears of work through OnWork, per cluster, after every read
// that stored layers of it and when a queued layer's start-after time
// comes.
package queue
