package cdc

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
)

// decode reads one pgoutput message (protocol version 2) into pglogrepl's
// message types. It is ours rather than pglogrepl.ParseV2 because that one
// trusts the lengths it reads: a short or garbled message panics it, and a
// huge count makes it allocate gigabytes before it notices. Here every count
// and length is checked against the bytes there are, and the error names the
// message and the field. inStream says whether a stream block is open: the
// changes inside one carry their (sub)transaction's xid first.
func decode(data []byte, inStream bool) (pglogrepl.Message, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("empty pgoutput message")
	}
	t := pglogrepl.MessageType(data[0])
	r := &reader{b: data[1:]}
	var m pglogrepl.Message
	switch t {
	case pglogrepl.MessageTypeBegin:
		b := &pglogrepl.BeginMessage{FinalLSN: r.lsn("final LSN"), CommitTime: r.time("commit time"), Xid: r.u32("xid")}
		b.SetType(t)
		m = b
	case pglogrepl.MessageTypeCommit:
		c := &pglogrepl.CommitMessage{Flags: r.u8("flags"), CommitLSN: r.lsn("commit LSN"),
			TransactionEndLSN: r.lsn("end LSN"), CommitTime: r.time("commit time")}
		c.SetType(t)
		m = c
	case pglogrepl.MessageTypeOrigin:
		o := &pglogrepl.OriginMessage{CommitLSN: r.lsn("origin LSN"), Name: r.str("origin name")}
		o.SetType(t)
		m = o
	case pglogrepl.MessageTypeRelation:
		rel := &pglogrepl.RelationMessageV2{}
		rel.Xid = r.xid(inStream)
		rel.RelationID, rel.Namespace, rel.RelationName = r.u32("relation id"), r.str("namespace"), r.str("relation name")
		rel.ReplicaIdentity, rel.ColumnNum = r.u8("replica identity"), r.u16("column count")
		// A column takes at least 10 bytes: never reserve more than fit.
		// (None is nil, as pglogrepl has it.)
		if n := min(int(rel.ColumnNum), r.left()/10); n > 0 {
			rel.Columns = make([]*pglogrepl.RelationMessageColumn, 0, n)
		}
		for i := range int(rel.ColumnNum) {
			c := &pglogrepl.RelationMessageColumn{Flags: r.u8("column flags")}
			c.Name = r.str(fmt.Sprintf("column %d name", i+1))
			c.DataType, c.TypeModifier = r.u32("column type"), int32(r.u32("column type modifier"))
			if r.err != nil {
				break
			}
			rel.Columns = append(rel.Columns, c)
		}
		rel.SetType(t)
		m = rel
	case pglogrepl.MessageTypeType:
		ty := &pglogrepl.TypeMessageV2{}
		ty.Xid = r.xid(inStream)
		ty.DataType, ty.Namespace, ty.Name = r.u32("type id"), r.str("type namespace"), r.str("type name")
		ty.SetType(t)
		m = ty
	case pglogrepl.MessageTypeInsert:
		in := &pglogrepl.InsertMessageV2{}
		in.Xid = r.xid(inStream)
		in.RelationID = r.u32("relation id")
		r.expect("tuple kind", 'N')
		in.Tuple = r.tuple("new tuple")
		in.SetType(t)
		m = in
	case pglogrepl.MessageTypeUpdate:
		up := &pglogrepl.UpdateMessageV2{}
		up.Xid = r.xid(inStream)
		up.RelationID = r.u32("relation id")
		kind := r.u8("tuple kind")
		if kind == 'K' || kind == 'O' {
			up.OldTupleType, up.OldTuple = kind, r.tuple("old tuple")
			kind = r.u8("tuple kind")
		}
		if r.err == nil && kind != 'N' {
			r.fail("tuple kind %q is not K, O or N", kind)
		}
		up.NewTuple = r.tuple("new tuple")
		up.SetType(t)
		m = up
	case pglogrepl.MessageTypeDelete:
		del := &pglogrepl.DeleteMessageV2{}
		del.Xid = r.xid(inStream)
		del.RelationID = r.u32("relation id")
		del.OldTupleType = r.u8("tuple kind")
		if r.err == nil && del.OldTupleType != 'K' && del.OldTupleType != 'O' {
			r.fail("tuple kind %q is not K or O", del.OldTupleType)
		}
		del.OldTuple = r.tuple("old tuple")
		del.SetType(t)
		m = del
	case pglogrepl.MessageTypeTruncate:
		tr := &pglogrepl.TruncateMessageV2{}
		tr.Xid = r.xid(inStream)
		tr.RelationNum, tr.Option = r.u32("relation count"), r.u8("options")
		if r.err == nil && uint64(tr.RelationNum)*4 > uint64(r.left()) {
			r.fail("%d relations need %d bytes, %d left", tr.RelationNum, uint64(tr.RelationNum)*4, r.left())
		}
		if r.err == nil {
			tr.RelationIDs = make([]uint32, tr.RelationNum)
			for i := range tr.RelationIDs {
				tr.RelationIDs[i] = r.u32("relation id")
			}
		}
		tr.SetType(t)
		m = tr
	case pglogrepl.MessageTypeMessage:
		lm := &pglogrepl.LogicalDecodingMessageV2{}
		lm.Xid = r.xid(inStream)
		flags := r.u8("flags")
		if r.err == nil && flags > 1 {
			r.fail("flags %d are not 0 or 1", flags)
		}
		lm.Transactional = flags == 1
		lm.LSN, lm.Prefix = r.lsn("LSN"), r.str("prefix")
		lm.Content = r.bytes("content", r.u32("content length"))
		lm.SetType(t)
		m = lm
	case pglogrepl.MessageTypeStreamStart:
		s := &pglogrepl.StreamStartMessageV2{Xid: r.u32("xid"), FirstSegment: r.u8("first segment")}
		s.SetType(t)
		m = s
	case pglogrepl.MessageTypeStreamStop:
		s := &pglogrepl.StreamStopMessageV2{}
		s.SetType(t)
		m = s
	case pglogrepl.MessageTypeStreamCommit:
		s := &pglogrepl.StreamCommitMessageV2{Xid: r.u32("xid"), Flags: r.u8("flags"), CommitLSN: r.lsn("commit LSN"),
			TransactionEndLSN: r.lsn("end LSN"), CommitTime: r.time("commit time")}
		s.SetType(t)
		m = s
	case pglogrepl.MessageTypeStreamAbort:
		s := &pglogrepl.StreamAbortMessageV2{Xid: r.u32("xid"), SubXid: r.u32("subtransaction xid")}
		s.SetType(t)
		m = s
	default:
		return nil, fmt.Errorf("unknown pgoutput message type %q (0x%02x, %d bytes)", data[0], data[0], len(data))
	}
	if r.err == nil && r.left() > 0 {
		r.fail("%d bytes left over at its end", r.left())
	}
	if r.err != nil {
		return nil, fmt.Errorf("pgoutput %s message of %d bytes: %w", t, len(data), r.err)
	}
	return m, nil
}

// reader takes fields off a message; the first field that does not fit
// sets err, and every read after that returns zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) left() int { return len(r.b) }

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, args...)
	}
}

func (r *reader) take(field string, n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.fail("%s: needs %d bytes, %d left", field, n, len(r.b))
		return nil
	}
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u8(field string) byte {
	if b := r.take(field, 1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16(field string) uint16 {
	if b := r.take(field, 2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32(field string) uint32 {
	if b := r.take(field, 4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u64(field string) uint64 {
	if b := r.take(field, 8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (r *reader) lsn(field string) LSN { return LSN(r.u64(field)) }

// pgEpoch is PostgreSQL's timestamp origin in Unix seconds: its times are
// microseconds since then.
const pgEpoch = 946684800

// time reads a timestamp exactly over the whole int64 range (in nanoseconds
// since 1970, as pglogrepl counts, it wraps past 2262).
func (r *reader) time(field string) time.Time {
	us := int64(r.u64(field))
	return time.Unix(pgEpoch+us/1e6, us%1e6*1e3).UTC()
}

// xid is the transaction id that starts a change inside a stream block.
func (r *reader) xid(inStream bool) uint32 {
	if !inStream {
		return 0
	}
	return r.u32("xid")
}

// str is a NUL-terminated string.
func (r *reader) str(field string) string {
	if r.err != nil {
		return ""
	}
	end := bytes.IndexByte(r.b, 0)
	if end < 0 {
		r.fail("%s: no terminating NUL in the %d bytes left", field, len(r.b))
		return ""
	}
	s := string(r.b[:end])
	r.b = r.b[end+1:]
	return s
}

// bytes is n bytes, n read from the message.
func (r *reader) bytes(field string, n uint32) []byte {
	if r.err == nil && uint64(n) > uint64(len(r.b)) {
		r.fail("%s: length %d, %d bytes left", field, n, len(r.b))
	}
	return r.take(field, int(n))
}

func (r *reader) expect(field string, want byte) {
	if got := r.u8(field); r.err == nil && got != want {
		r.fail("%s %q, want %q", field, got, want)
	}
}

// tuple is a TupleData: a column count, then each column's kind and, for
// text and binary ones, its length and bytes.
func (r *reader) tuple(field string) *pglogrepl.TupleData {
	n := r.u16(field + " column count")
	if r.err != nil {
		return nil
	}
	// A column takes at least one byte: never reserve more than fit. (None
	// is nil, as pglogrepl has it.)
	td := &pglogrepl.TupleData{ColumnNum: n}
	if c := min(int(n), r.left()); c > 0 {
		td.Columns = make([]*pglogrepl.TupleDataColumn, 0, c)
	}
	for i := range int(n) {
		name := fmt.Sprintf("%s column %d", field, i+1)
		c := &pglogrepl.TupleDataColumn{DataType: r.u8(name)}
		switch c.DataType {
		case pglogrepl.TupleDataTypeNull, pglogrepl.TupleDataTypeToast:
		case pglogrepl.TupleDataTypeText, pglogrepl.TupleDataTypeBinary:
			c.Length = r.u32(name + " length")
			c.Data = r.bytes(name, c.Length)
		default:
			r.fail("%s: kind %q is not n, u, t or b", name, c.DataType)
		}
		if r.err != nil {
			return nil
		}
		td.Columns = append(td.Columns, c)
	}
	return td
}
