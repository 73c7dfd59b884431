package cdc

import (
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pglogrepl"
)

// LSN is a position in the write-ahead log.
type LSN = pglogrepl.LSN

// Op is what a change did to its row.
type Op uint8

const (
	Insert Op = iota + 1
	Update
	Delete
	// Truncate emptied Change.Rel (and possibly other tables, each its own
	// change). Consumers that cannot follow it resync.
	Truncate
)

func (o Op) String() string {
	switch o {
	case Insert:
		return "insert"
	case Update:
		return "update"
	case Delete:
		return "delete"
	case Truncate:
		return "truncate"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Relation is a published table as the stream (or a snapshot load) describes
// it: its published columns, in order.
type Relation struct {
	ID        uint32
	Namespace string
	Name      string
	Columns   []string
	index     map[string]int
}

// NewRelation describes a table by its columns.
func NewRelation(id uint32, namespace, name string, columns []string) *Relation {
	r := &Relation{ID: id, Namespace: namespace, Name: name, Columns: columns, index: make(map[string]int, len(columns))}
	for i, c := range columns {
		r.index[c] = i
	}
	return r
}

// Col is the position of column name, -1 when it is not published.
func (r *Relation) Col(name string) int {
	if i, ok := r.index[name]; ok {
		return i
	}
	return -1
}

// ValueKind says what a Value holds.
type ValueKind uint8

const (
	// Absent: the column is not in the tuple (not published).
	Absent ValueKind = iota
	Null
	Text
	// Unchanged is a TOASTed value an UPDATE did not change: the stream does
	// not send it, so the consumer keeps the value it already has.
	Unchanged
)

// Value is one column of a tuple, in PostgreSQL's text format.
type Value struct {
	Kind ValueKind
	Text string
}

// Tuple is a row's published columns, aligned with Relation.Columns.
type Tuple []Value

// Get returns the named column of t (Absent when rel does not publish it).
func (t Tuple) Get(rel *Relation, name string) Value {
	i := rel.Col(name)
	if i < 0 || i >= len(t) {
		return Value{}
	}
	return t[i]
}

// Change is one row change of a transaction. New is the row after an insert
// or update; Old is the key (replica identity) of a deleted row, or of an
// updated row whose key changed.
type Change struct {
	Op  Op
	Rel *Relation
	Old Tuple
	New Tuple
}

// Message is a transactional logical decoding message a transaction sent
// with pg_logical_emit_message(true, prefix, content).
type Message struct {
	Prefix  string
	Content string
}

// Txn is one committed transaction's changes to the published tables, in
// the order they were made.
type Txn struct {
	Xid        uint32
	CommitLSN  LSN // the commit record
	EndLSN     LSN // the end of the commit record; the stream has applied up to it
	CommitTime time.Time
	Changes    []Change
	// Messages are the transactional messages the transaction sent, in the
	// order sent (non-transactional ones are not kept: they are not bound
	// to a commit).
	Messages []Message
	// Streamed: the transaction arrived in protocol v2 stream blocks while
	// it was still running, and was buffered until its stream commit.
	Streamed bool
}

// assembler turns pgoutput messages (protocol version 2, streaming on) into
// committed transactions. Changes of a transaction streamed while in progress
// are buffered per top-level transaction, with the subtransaction each came
// from, so that an aborted subtransaction (or the whole transaction) can be
// dropped; nothing is handed on before its commit.
type assembler struct {
	rels     map[uint32]*Relation
	cur      *Txn // the non-streamed transaction between Begin and Commit
	inStream bool
	streamOf uint32 // top-level xid of the open stream block
	streams  map[uint32]*streamed
}

type streamed struct {
	changes  []subChange
	messages []subMessage
}

type subChange struct {
	xid uint32 // the (sub)transaction that made the change
	c   Change
}

type subMessage struct {
	xid uint32 // the (sub)transaction that sent the message
	m   Message
}

func newAssembler() *assembler {
	return &assembler{rels: map[uint32]*Relation{}, streams: map[uint32]*streamed{}}
}

// busy reports whether a non-streamed transaction is being received: the
// server's position in a keepalive then says nothing about what has been
// applied.
func (a *assembler) busy() bool { return a.cur != nil || a.inStream }

// parse decodes one XLogData payload.
func (a *assembler) parse(data []byte) (pglogrepl.Message, error) {
	return decode(data, a.inStream)
}

// handle takes one message and returns the transaction it completed, if any.
// A message out of the protocol's order (a begin inside a transaction, a
// stream commit inside a stream block, ...) is an error naming both: the
// state can no longer be trusted, and the stream reconnects and resyncs.
func (a *assembler) handle(m pglogrepl.Message) (*Txn, error) {
	if err := a.order(m); err != nil {
		return nil, err
	}
	switch m := m.(type) {
	case *pglogrepl.RelationMessageV2:
		cols := make([]string, len(m.Columns))
		for i, c := range m.Columns {
			cols[i] = c.Name
		}
		a.rels[m.RelationID] = NewRelation(m.RelationID, m.Namespace, m.RelationName, cols)
	case *pglogrepl.BeginMessage:
		a.cur = &Txn{Xid: m.Xid, CommitLSN: m.FinalLSN, CommitTime: m.CommitTime}
	case *pglogrepl.CommitMessage:
		t := a.cur
		a.cur = nil
		t.CommitLSN, t.EndLSN, t.CommitTime = m.CommitLSN, m.TransactionEndLSN, m.CommitTime
		return t, nil
	case *pglogrepl.InsertMessageV2:
		return nil, a.change(m.Xid, m.RelationID, Insert, nil, m.Tuple)
	case *pglogrepl.UpdateMessageV2:
		old := m.OldTuple
		return nil, a.change(m.Xid, m.RelationID, Update, old, m.NewTuple)
	case *pglogrepl.DeleteMessageV2:
		return nil, a.change(m.Xid, m.RelationID, Delete, m.OldTuple, nil)
	case *pglogrepl.TruncateMessageV2:
		for _, id := range m.RelationIDs {
			if err := a.change(m.Xid, id, Truncate, nil, nil); err != nil {
				return nil, err
			}
		}
	case *pglogrepl.StreamStartMessageV2:
		a.inStream, a.streamOf = true, m.Xid
		if a.streams[m.Xid] == nil {
			a.streams[m.Xid] = &streamed{}
		}
	case *pglogrepl.StreamStopMessageV2:
		a.inStream = false
	case *pglogrepl.StreamCommitMessageV2:
		s := a.streams[m.Xid]
		delete(a.streams, m.Xid)
		t := &Txn{Xid: m.Xid, CommitLSN: m.CommitLSN, EndLSN: m.TransactionEndLSN, CommitTime: m.CommitTime, Streamed: true}
		if s != nil {
			t.Changes = make([]Change, len(s.changes))
			for i, sc := range s.changes {
				t.Changes[i] = sc.c
			}
			for _, sm := range s.messages {
				t.Messages = append(t.Messages, sm.m)
			}
		}
		return t, nil
	case *pglogrepl.StreamAbortMessageV2:
		s := a.streams[m.Xid]
		if s == nil {
			return nil, nil
		}
		if m.SubXid == m.Xid {
			delete(a.streams, m.Xid)
			return nil, nil
		}
		s.changes = slices.DeleteFunc(s.changes, func(sc subChange) bool { return sc.xid == m.SubXid })
		s.messages = slices.DeleteFunc(s.messages, func(sm subMessage) bool { return sm.xid == m.SubXid })
	case *pglogrepl.LogicalDecodingMessageV2:
		if !m.Transactional {
			return nil, nil
		}
		msg := Message{Prefix: m.Prefix, Content: string(m.Content)}
		if a.inStream {
			s := a.streams[a.streamOf]
			s.messages = append(s.messages, subMessage{xid: m.Xid, m: msg})
			return nil, nil
		}
		if a.cur == nil {
			return nil, fmt.Errorf("transactional message %q outside a transaction", m.Prefix)
		}
		a.cur.Messages = append(a.cur.Messages, msg)
	}
	// Type and origin messages carry nothing the cache needs.
	return nil, nil
}

// order refuses m where the protocol never sends it. A non-streamed
// transaction is sent whole between its begin and commit, with nothing else
// in between; a stream block (start to stop) holds changes of its one
// transaction only; a streamed transaction's commit or abort comes between
// blocks.
func (a *assembler) order(m pglogrepl.Message) error {
	var what string
	switch m := m.(type) {
	case *pglogrepl.BeginMessage:
		what = fmt.Sprintf("begin of xid %d", m.Xid)
	case *pglogrepl.CommitMessage:
		switch {
		case a.cur != nil:
			return nil
		case a.inStream:
			return fmt.Errorf("commit at %s inside the stream block of xid %d", m.CommitLSN, a.streamOf)
		}
		return fmt.Errorf("commit at %s without begin", m.CommitLSN)
	case *pglogrepl.StreamStartMessageV2:
		what = fmt.Sprintf("stream start of xid %d", m.Xid)
	case *pglogrepl.StreamStopMessageV2:
		if !a.inStream {
			return fmt.Errorf("stream stop outside a stream block")
		}
		return nil
	case *pglogrepl.StreamCommitMessageV2:
		what = fmt.Sprintf("stream commit of xid %d", m.Xid)
	case *pglogrepl.StreamAbortMessageV2:
		what = fmt.Sprintf("stream abort of xid %d", m.Xid)
	default:
		return nil
	}
	switch {
	case a.cur != nil:
		return fmt.Errorf("%s inside xid %d (begun, not committed)", what, a.cur.Xid)
	case a.inStream:
		return fmt.Errorf("%s inside the stream block of xid %d", what, a.streamOf)
	}
	return nil
}

func (a *assembler) change(xid, relID uint32, op Op, old, new *pglogrepl.TupleData) error {
	rel := a.rels[relID]
	if rel == nil {
		return fmt.Errorf("%s on relation %d before its relation message", op, relID)
	}
	c := Change{Op: op, Rel: rel, Old: tuple(old), New: tuple(new)}
	if a.inStream {
		s := a.streams[a.streamOf]
		s.changes = append(s.changes, subChange{xid: xid, c: c})
		return nil
	}
	if a.cur == nil {
		return fmt.Errorf("%s on %s outside a transaction", op, rel.Name)
	}
	a.cur.Changes = append(a.cur.Changes, c)
	return nil
}

func tuple(td *pglogrepl.TupleData) Tuple {
	if td == nil {
		return nil
	}
	t := make(Tuple, len(td.Columns))
	for i, c := range td.Columns {
		switch c.DataType {
		case pglogrepl.TupleDataTypeNull:
			t[i] = Value{Kind: Null}
		case pglogrepl.TupleDataTypeToast:
			t[i] = Value{Kind: Unchanged}
		default:
			t[i] = Value{Kind: Text, Text: string(c.Data)}
		}
	}
	return t
}
