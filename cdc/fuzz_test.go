package cdc

import (
	"context"
	"encoding/binary"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// wire builds pgoutput messages (protocol version 2) as the walsender sends
// them, for the fuzz targets' seeds.
type wire []byte

func (w wire) u8(v byte) wire    { return append(w, v) }
func (w wire) u16(v uint16) wire { return binary.BigEndian.AppendUint16(w, v) }
func (w wire) u32(v uint32) wire { return binary.BigEndian.AppendUint32(w, v) }
func (w wire) u64(v uint64) wire { return binary.BigEndian.AppendUint64(w, v) }
func (w wire) str(s string) wire { return append(append(w, s...), 0) }

// xid writes the transaction id that changes carry inside a stream block.
func (w wire) xid(inStream bool, xid uint32) wire {
	if inStream {
		return w.u32(xid)
	}
	return w
}

// tuple writes values: "<null>" and "<toast>" as such, anything else as text.
func (w wire) tuple(vals ...string) wire {
	w = w.u16(uint16(len(vals)))
	for _, v := range vals {
		switch v {
		case "<null>":
			w = w.u8('n')
		case "<toast>":
			w = w.u8('u')
		default:
			w = w.u8('t').u32(uint32(len(v)))
			w = append(w, v...)
		}
	}
	return w
}

func wRelation(inStream bool, xid, id uint32, name string, cols ...string) []byte {
	w := wire{'R'}.xid(inStream, xid).u32(id).str("public").str(name).u8('d').u16(uint16(len(cols)))
	for i, c := range cols {
		flags := byte(0)
		if i == 0 {
			flags = 1
		}
		w = w.u8(flags).str(c).u32(25).u32(0xffffffff)
	}
	return w
}

func wBegin(xid uint32, final uint64) []byte {
	return wire{'B'}.u64(final).u64(0).u32(xid)
}

func wCommit(commit, end uint64) []byte {
	return wire{'C'}.u8(0).u64(commit).u64(end).u64(0)
}

func wInsert(inStream bool, xid, rel uint32, vals ...string) []byte {
	return wire{'I'}.xid(inStream, xid).u32(rel).u8('N').tuple(vals...)
}

func wUpdate(inStream bool, xid, rel uint32, key []string, vals ...string) []byte {
	w := wire{'U'}.xid(inStream, xid).u32(rel)
	if key != nil {
		w = w.u8('K').tuple(key...)
	}
	return w.u8('N').tuple(vals...)
}

func wDelete(inStream bool, xid, rel uint32, key ...string) []byte {
	return wire{'D'}.xid(inStream, xid).u32(rel).u8('K').tuple(key...)
}

func wTruncate(inStream bool, xid uint32, rels ...uint32) []byte {
	w := wire{'T'}.xid(inStream, xid).u32(uint32(len(rels))).u8(0)
	for _, r := range rels {
		w = w.u32(r)
	}
	return w
}

func wMessage(inStream bool, xid uint32, transactional bool, prefix, content string) []byte {
	flags := byte(0)
	if transactional {
		flags = 1
	}
	w := wire{'M'}.xid(inStream, xid).u8(flags).u64(0).str(prefix).u32(uint32(len(content)))
	return append(w, content...)
}

func wStreamStart(xid uint32, first bool) []byte {
	f := byte(0)
	if first {
		f = 1
	}
	return wire{'S'}.u32(xid).u8(f)
}

func wStreamStop() []byte { return []byte{'E'} }

func wStreamCommit(xid uint32, commit, end uint64) []byte {
	return wire{'c'}.u32(xid).u8(0).u64(commit).u64(end).u64(0)
}

func wStreamAbort(xid, sub uint32) []byte { return wire{'A'}.u32(xid).u32(sub) }

func wOrigin(name string) []byte { return wire{'O'}.u64(7).str(name) }

func wType(inStream bool, xid uint32) []byte {
	return wire{'Y'}.xid(inStream, xid).u32(600).str("public").str("point")
}

// frames joins messages into one fuzz input: each message is preceded by
// its length in one byte (so a seed message stays under 256 bytes).
func frames(msgs ...[]byte) []byte {
	var out []byte
	for _, m := range msgs {
		if len(m) > 255 {
			panic("seed message too long")
		}
		out = append(append(out, byte(len(m))), m...)
	}
	return out
}

// unframe splits a fuzz input back into messages; a length running past the
// end takes what is left.
func unframe(data []byte) [][]byte {
	var out [][]byte
	for len(data) > 0 {
		n := min(int(data[0]), len(data)-1)
		out = append(out, data[1:1+n])
		data = data[1+n:]
	}
	return out
}

// recordingSink keeps what the stream applies.
type recordingSink struct{ txns []*Txn }

func (s *recordingSink) Reset(context.Context, pgx.Tx, LSN) error { return nil }
func (s *recordingSink) Apply(t *Txn) error                       { s.txns = append(s.txns, t); return nil }
func (s *recordingSink) Advance(LSN)                              {}

// FuzzStream feeds the replication consumer arbitrary pgoutput messages, in
// any order, each wrapped as the walsender wraps it (XLogData; an empty one
// stands for a keepalive). Whatever they hold, decoding and assembling them
// never panics: a message it cannot follow ends the session with an error
// naming what is wrong (the stream then reconnects and resyncs), and every
// transaction it applies before that is well formed.
// (testdata/fuzz/FuzzStream: messages that panicked pglogrepl's parser or
// made it allocate gigabytes.)
func FuzzStream(f *testing.F) {
	const rel = 1
	plain := [][]byte{
		wRelation(false, 0, rel, "host", "pk_host", "int_cores_idle"),
		wBegin(5, 500), wInsert(false, 0, rel, "h1", "800"), wUpdate(false, 0, rel, []string{"h0"}, "h1", "<toast>"),
		wDelete(false, 0, rel, "h1", "<null>"), wMessage(false, 0, true, WorkChannel, "job:abc"),
		wOrigin("o"), wType(false, 0), wCommit(500, 508),
		wMessage(false, 0, false, "loose", "x"),
		wBegin(6, 600), wTruncate(false, 0, rel), wCommit(600, 608),
	}
	streamed := [][]byte{
		wRelation(false, 0, rel, "host", "pk_host", "int_cores_idle"),
		wStreamStart(7, true), wRelation(true, 7, 2, "proc", "pk_proc"), wInsert(true, 7, rel, "a", "1"),
		wInsert(true, 9, 2, "sub"), wMessage(true, 7, true, WorkChannel, "job:x"), wType(true, 7), wStreamStop(),
		wBegin(6, 600), wInsert(false, 0, rel, "p", "2"), wCommit(600, 608),
		wStreamAbort(7, 9), wStreamStart(7, false), wUpdate(true, 7, rel, nil, "a", "3"),
		wDelete(true, 7, 2, "sub"), wTruncate(true, 7, 2), wStreamStop(),
		wStreamCommit(7, 700, 708), wStreamStart(8, true), wInsert(true, 8, rel, "b", "1"), wStreamStop(),
		wStreamAbort(8, 8),
	}
	f.Add(frames(plain...))
	f.Add(frames(streamed...))
	f.Add(frames(append(plain[:3:3], []byte{})...))
	// Each message alone, and each cut short by one byte.
	for _, m := range append(plain, streamed...) {
		f.Add(frames(m))
		if len(m) > 1 {
			f.Add(frames(plain[0], plain[1], m[:len(m)-1]))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sink := &recordingSink{}
		s := NewStream("", sink, slog.New(slog.DiscardHandler))
		asm := newAssembler()
		next := time.Now()
		for i, m := range unframe(data) {
			var copyData []byte
			if len(m) == 0 {
				copyData = wire{pglogrepl.PrimaryKeepaliveMessageByteID}.u64(uint64(i) * 10).u64(0).u8(0)
			} else {
				copyData = append(wire{pglogrepl.XLogDataByteID}.u64(uint64(i)*10).u64(uint64(i)*10).u64(0), m...)
				sameAsPglogrepl(t, m, asm.inStream)
			}
			if err := s.copyData(nil, asm, copyData, &next); err != nil {
				if msg := err.Error(); !strings.Contains(msg, "pgoutput") || strings.HasSuffix(msg, ": ") {
					t.Fatalf("message %d: the error does not say what is wrong: %q", i, msg)
				}
				break
			}
		}
		for _, txn := range sink.txns {
			for j, c := range txn.Changes {
				if c.Rel == nil || c.Op < Insert || c.Op > Truncate {
					t.Fatalf("xid %d change %d: %+v", txn.Xid, j, c)
				}
				if (c.Op == Insert || c.Op == Update) && c.New == nil || c.Op == Delete && c.Old == nil {
					t.Fatalf("xid %d change %d: %s without its row: %+v", txn.Xid, j, c.Op, c)
				}
			}
		}
	})
}

// FuzzAssemblerOrder hands the assembler well-formed messages in arbitrary
// orders (two bytes a message: which one, and its transaction among a few),
// the orders a broken or misread stream could bring. It never panics; an
// order it cannot follow is an error naming the messages that conflict.
// (testdata/fuzz/FuzzAssemblerOrder: a stream committed inside its own
// block, which panicked.)
func FuzzAssemblerOrder(f *testing.F) {
	f.Add([]byte{0, 0, 1, 1, 3, 0, 2, 1})                         // relation, begin, insert, commit
	f.Add([]byte{0, 0, 5, 1, 3, 1, 6, 0, 5, 1, 3, 2, 6, 0, 7, 1}) // a streamed transaction
	f.Add([]byte{0, 0, 5, 1, 3, 2, 6, 0, 8, 1, 8, 2, 7, 1})       // streamed, a subtransaction aborted
	f.Fuzz(func(t *testing.T, ops []byte) {
		a := newAssembler()
		for i := 0; i+1 < len(ops); i += 2 {
			xid := uint32(ops[i+1]%4) + 1
			var m pglogrepl.Message
			switch ops[i] % 12 {
			case 0:
				m = relMsg(1, "t", "id", "v")
			case 1:
				m = &pglogrepl.BeginMessage{Xid: xid}
			case 2:
				m = &pglogrepl.CommitMessage{}
			case 3:
				m = ins(xid, "a")
			case 4:
				d := &pglogrepl.DeleteMessageV2{}
				d.Xid, d.RelationID, d.OldTuple = xid, uint32(ops[i+1]%2)+1, tupleOf("a", "b")
				m = d
			case 5:
				m = &pglogrepl.StreamStartMessageV2{Xid: xid}
			case 6:
				m = &pglogrepl.StreamStopMessageV2{}
			case 7:
				m = &pglogrepl.StreamCommitMessageV2{Xid: xid}
			case 8:
				m = &pglogrepl.StreamAbortMessageV2{Xid: 1 + xid%2, SubXid: xid}
			case 9:
				lm := &pglogrepl.LogicalDecodingMessageV2{}
				lm.Xid, lm.Transactional, lm.Prefix = xid, ops[i+1]%2 == 0, WorkChannel
				m = lm
			case 10:
				tr := &pglogrepl.TruncateMessageV2{}
				tr.Xid, tr.RelationIDs = xid, []uint32{1}
				m = tr
			case 11:
				m = &pglogrepl.OriginMessage{}
			}
			txn, err := a.handle(m)
			if err != nil {
				if err.Error() == "" {
					t.Fatalf("message %d (%T): an empty error", i/2, m)
				}
				return
			}
			if txn != nil {
				for _, c := range txn.Changes {
					if c.Rel == nil {
						t.Fatalf("message %d: xid %d holds a change without its relation", i/2, txn.Xid)
					}
				}
			}
		}
	})
}

// sameAsPglogrepl: a message decode takes is well formed, and pglogrepl's
// parser (asked only then: it is the one that panics and over-allocates)
// reads the same from it whenever it takes it too (it wants a few bytes more
// of some messages, such as an insert of no column).
func sameAsPglogrepl(t *testing.T, msg []byte, inStream bool) {
	t.Helper()
	ours, err := decode(msg, inStream)
	if err != nil {
		return
	}
	theirs, err := pglogrepl.ParseV2(msg, inStream)
	if err != nil {
		return
	}
	if !reflect.DeepEqual(ours, sameInstants(ours, theirs)) {
		t.Fatalf("%q (in stream %v):\n ours   %#v\n theirs %#v", msg, inStream, ours, theirs)
	}
}

// sameInstants is theirs with its time in UTC (pglogrepl reads times in the
// local zone, decode in UTC), or with ours when that is beyond the years
// 1678-2262, where pglogrepl's nanoseconds wrap.
func sameInstants(ours, theirs pglogrepl.Message) pglogrepl.Message {
	fix := func(ours, theirs *time.Time) {
		if ours.Year() < 1678 || ours.Year() > 2261 {
			*theirs = *ours
		} else {
			*theirs = theirs.UTC()
		}
	}
	switch m := theirs.(type) {
	case *pglogrepl.BeginMessage:
		fix(&ours.(*pglogrepl.BeginMessage).CommitTime, &m.CommitTime)
	case *pglogrepl.CommitMessage:
		fix(&ours.(*pglogrepl.CommitMessage).CommitTime, &m.CommitTime)
	case *pglogrepl.StreamCommitMessageV2:
		fix(&ours.(*pglogrepl.StreamCommitMessageV2).CommitTime, &m.CommitTime)
	}
	return theirs
}

// TestDecodeAgreesWithPglogrepl: on well-formed messages, decode reads what
// pglogrepl's own parser reads (which it replaces for not checking lengths).
func TestDecodeAgreesWithPglogrepl(t *testing.T) {
	for _, tc := range []struct {
		msg      []byte
		inStream bool
	}{
		{wRelation(false, 0, 1, "host", "pk_host", "int_cores_idle"), false},
		{wRelation(true, 7, 1, "host", "pk_host"), true},
		{wBegin(5, 500), false}, {wCommit(500, 508), false}, {wOrigin("o"), false}, {wType(false, 0), false},
		{wInsert(false, 0, 1, "h1", "<null>", "<toast>", ""), false}, {wInsert(true, 9, 1, "h1"), true},
		{wUpdate(false, 0, 1, []string{"h0"}, "h1", "2"), false}, {wUpdate(true, 7, 1, nil, "h1"), true},
		{wDelete(false, 0, 1, "h1"), false}, {wDelete(true, 7, 1, "h1"), true},
		{wTruncate(false, 0, 1, 2), false}, {wTruncate(true, 7, 1), true},
		{wMessage(false, 0, true, WorkChannel, "job:abc"), false}, {wMessage(true, 7, false, "p", ""), true},
		{wStreamStart(7, true), false}, {wStreamStop(), true}, {wStreamCommit(7, 700, 708), false},
		{wStreamAbort(7, 9), false},
	} {
		ours, err := decode(tc.msg, tc.inStream)
		if err != nil {
			t.Errorf("%q: %v", tc.msg[0], err)
			continue
		}
		theirs, err := pglogrepl.ParseV2(tc.msg, tc.inStream)
		if err != nil {
			t.Fatalf("%q: pglogrepl: %v", tc.msg[0], err)
		}
		if !reflect.DeepEqual(ours, sameInstants(ours, theirs)) {
			t.Errorf("%q:\n ours   %#v\n theirs %#v", tc.msg[0], ours, theirs)
		}
	}
}

// TestDecodeNamesWhatIsWrong: a message that does not fit its own lengths
// is refused with the message, the field and the sizes.
func TestDecodeNamesWhatIsWrong(t *testing.T) {
	huge := wire{'I'}.u32(1).u8('N').u16(1).u8('t').u32(4_000_000_000).u8('x')
	for _, tc := range []struct {
		msg  []byte
		want string
	}{
		{nil, "empty pgoutput message"},
		{[]byte{'Z', 1}, `unknown pgoutput message type 'Z'`},
		{huge, "pgoutput Insert message of 14 bytes: new tuple column 1: length 4000000000, 1 bytes left"},
		{wire{'T'}.u32(1 << 30).u8(0).u32(1), "pgoutput Truncate message of 10 bytes: 1073741824 relations need 4294967296 bytes, 4 left"},
		{wBegin(1, 2)[:10], "pgoutput Begin message of 10 bytes: commit time: needs 8 bytes, 1 left"},
		{append(wCommit(1, 2), 0), "pgoutput Commit message of 27 bytes: 1 bytes left over at its end"},
		{wire{'R'}.u32(1).str("public").u8('x'), "pgoutput Relation message of 13 bytes: relation name: no terminating NUL"},
		{wire{'U'}.u32(1).u8('X'), `pgoutput Update message of 6 bytes: tuple kind 'X' is not K, O or N`},
		{wire{'I'}.u32(1).u8('N').u16(1).u8('q'), `new tuple column 1: kind 'q' is not n, u, t or b`},
	} {
		_, err := decode(tc.msg, false)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.msg, err, tc.want)
		}
	}
}

// TestDecodeTimes: timestamps are read exactly, far beyond the years where
// nanoseconds since 1970 wrap.
func TestDecodeTimes(t *testing.T) {
	for _, tc := range []struct {
		us   int64
		want string
	}{
		{0, "2000-01-01T00:00:00Z"},
		{86_400_000_000 + 1, "2000-01-02T00:00:00.000001Z"},
		{-1, "1999-12-31T23:59:59.999999Z"},
		{0x3030303030303030, "112033-09-13T21:50:27.680304Z"}, // 110,033.7 Gregorian years after 2000
	} {
		m, err := decode(wire{'B'}.u64(1).u64(uint64(tc.us)).u32(5), false)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.(*pglogrepl.BeginMessage).CommitTime.Format("2006-01-02T15:04:05.999999Z07:00"); got != tc.want {
			t.Errorf("%d µs: %s, want %s", tc.us, got, tc.want)
		}
	}
}
