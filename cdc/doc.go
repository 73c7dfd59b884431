// Package cdc is cuesched's change data capture: it turns what the database
// says about its own changes into typed events for package cache, and owns
// the connections that carry them, their reconnects and the resyncs that
// follow.
//
// Two feeds, each on a dedicated connection (never a pool, never a
// transaction pooler):
//
//   - The logical replication consumer (replication.go, pgoutput.go:
//     pgoutput protocol v2, a temporary slot and an exported snapshot per
//     session) feeds hosts, usage and caps (publication cuesched_cache,
//     migrations/0002). It also carries the transactional messages
//     transactions send (Txn.Messages): migrations/0008 sends a retried
//     frame's hint that way.
//   - The Listener (listen.go) LISTENs for the coalesced hints cuesched's
//     triggers send (migrations/0004: channel cuesched_work) and feeds the
//     pending-layer queue.
//
// Hints are never the record: those sent while a listener or the stream is
// disconnected are gone, so every (re)connect is followed by a rebuild from
// a query (Listener.OnConnect; the stream's Sink.Reset).
//
// A notification arrives once its transaction is visible; a decoded
// transaction can arrive a moment before: the walsender sends the commit
// record once it is flushed, and the committing session leaves the proc
// array after that. Whoever queries the database because of a Txn must wait
// for it to be visible (queue.Queue.StreamHint checks its snapshot; the
// counter recomputes lock the released rows).
package cdc
