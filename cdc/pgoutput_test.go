package cdc

import (
	"fmt"
	"slices"
	"testing"

	"github.com/jackc/pglogrepl"
)

func relMsg(id uint32, name string, cols ...string) *pglogrepl.RelationMessageV2 {
	m := &pglogrepl.RelationMessageV2{}
	m.RelationID, m.Namespace, m.RelationName = id, "public", name
	for _, c := range cols {
		m.Columns = append(m.Columns, &pglogrepl.RelationMessageColumn{Name: c})
	}
	return m
}

func tupleOf(vals ...string) *pglogrepl.TupleData {
	td := &pglogrepl.TupleData{ColumnNum: uint16(len(vals))}
	for _, v := range vals {
		switch v {
		case "<null>":
			td.Columns = append(td.Columns, &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeNull})
		case "<toast>":
			td.Columns = append(td.Columns, &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeToast})
		default:
			td.Columns = append(td.Columns, &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeText,
				Length: uint32(len(v)), Data: []byte(v)})
		}
	}
	return td
}

func ins(xid uint32, id string) *pglogrepl.InsertMessageV2 {
	m := &pglogrepl.InsertMessageV2{}
	m.Xid, m.RelationID, m.Tuple = xid, 1, tupleOf(id, "x")
	return m
}

func ids(t *Txn) []string {
	var out []string
	for _, c := range t.Changes {
		out = append(out, c.New[0].Text)
	}
	return out
}

// feed hands the messages to a fresh assembler and returns the
// transactions completed, in order.
func feed(tb testing.TB, msgs ...pglogrepl.Message) []*Txn {
	tb.Helper()
	a := newAssembler()
	var out []*Txn
	for i, m := range msgs {
		t, err := a.handle(m)
		if err != nil {
			tb.Fatalf("message %d (%T): %v", i, m, err)
		}
		if t != nil {
			out = append(out, t)
		}
	}
	return out
}

func TestAssembler(t *testing.T) {
	rel := relMsg(1, "t", "id", "v")
	begin := func(xid uint32) *pglogrepl.BeginMessage {
		return &pglogrepl.BeginMessage{Xid: xid, FinalLSN: pglogrepl.LSN(xid * 100)}
	}
	commit := func(xid uint32) *pglogrepl.CommitMessage {
		return &pglogrepl.CommitMessage{CommitLSN: pglogrepl.LSN(xid * 100), TransactionEndLSN: pglogrepl.LSN(xid*100 + 8)}
	}
	start := func(xid uint32, first bool) *pglogrepl.StreamStartMessageV2 {
		m := &pglogrepl.StreamStartMessageV2{Xid: xid}
		if first {
			m.FirstSegment = 1
		}
		return m
	}
	stop := &pglogrepl.StreamStopMessageV2{}
	scommit := func(xid uint32) *pglogrepl.StreamCommitMessageV2 {
		return &pglogrepl.StreamCommitMessageV2{Xid: xid, CommitLSN: pglogrepl.LSN(xid * 100), TransactionEndLSN: pglogrepl.LSN(xid*100 + 8)}
	}
	abort := func(xid, sub uint32) *pglogrepl.StreamAbortMessageV2 {
		return &pglogrepl.StreamAbortMessageV2{Xid: xid, SubXid: sub}
	}
	for _, tc := range []struct {
		name string
		msgs []pglogrepl.Message
		want []string // per transaction: its row ids joined, with its streamed flag
	}{
		{"plain transaction",
			[]pglogrepl.Message{rel, begin(5), ins(0, "a"), ins(0, "b"), commit(5)},
			[]string{"5 [a b] false"}},
		{"streamed transaction applied at stream commit, interleaved with a plain one",
			[]pglogrepl.Message{rel, start(7, true), ins(7, "a"), ins(7, "b"), stop,
				begin(6), ins(0, "p"), commit(6),
				start(7, false), ins(7, "c"), stop, scommit(7)},
			[]string{"6 [p] false", "7 [a b c] true"}},
		{"streamed transaction aborted",
			[]pglogrepl.Message{rel, start(7, true), ins(7, "a"), stop, start(7, false), ins(7, "b"), stop, abort(7, 7),
				begin(8), ins(0, "q"), commit(8)},
			[]string{"8 [q] false"}},
		{"aborted subtransaction of a streamed transaction dropped",
			[]pglogrepl.Message{rel, start(7, true), ins(7, "a"), ins(9, "sub1"), ins(10, "sub2"), stop,
				abort(7, 9), start(7, false), ins(7, "b"), ins(10, "sub2b"), stop, scommit(7)},
			[]string{"7 [a sub2 b sub2b] true"}},
		{"two transactions streamed at once",
			[]pglogrepl.Message{rel, start(7, true), ins(7, "a"), stop, start(8, true), ins(8, "x"), stop,
				start(7, false), ins(7, "b"), stop, scommit(8), scommit(7)},
			[]string{"8 [x] true", "7 [a b] true"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, txn := range feed(t, tc.msgs...) {
				got = append(got, fmt.Sprintf("%d %v %v", txn.Xid, ids(txn), txn.Streamed))
				if txn.EndLSN != txn.CommitLSN+8 {
					t.Errorf("xid %d: end %s, commit %s", txn.Xid, txn.EndLSN, txn.CommitLSN)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestAssemblerMessages: transactional messages travel with their
// transaction (streamed ones too, dropped with an aborted subtransaction);
// non-transactional ones are not kept.
func TestAssemblerMessages(t *testing.T) {
	rel := relMsg(1, "t", "id", "v")
	msg := func(xid uint32, transactional bool, content string) *pglogrepl.LogicalDecodingMessageV2 {
		m := &pglogrepl.LogicalDecodingMessageV2{}
		m.Xid, m.Transactional, m.Prefix, m.Content = xid, transactional, "p", []byte(content)
		return m
	}
	start := &pglogrepl.StreamStartMessageV2{Xid: 7, FirstSegment: 1}
	txns := feed(t, rel, msg(0, false, "loose"),
		&pglogrepl.BeginMessage{Xid: 5}, msg(0, true, "a"), ins(0, "x"), msg(0, true, "b"), &pglogrepl.CommitMessage{},
		start, msg(7, true, "s1"), msg(9, true, "sub"), ins(7, "y"), &pglogrepl.StreamStopMessageV2{},
		&pglogrepl.StreamAbortMessageV2{Xid: 7, SubXid: 9},
		&pglogrepl.StreamCommitMessageV2{Xid: 7})
	var got []string
	for _, txn := range txns {
		got = append(got, fmt.Sprintf("%d %v", txn.Xid, txn.Messages))
	}
	if want := []string{"5 [{p a} {p b}]", "7 [{p s1}]"}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if _, err := newAssembler().handle(msg(0, true, "outside")); err == nil {
		t.Fatal("a transactional message outside a transaction was accepted")
	}
}

func TestAssemblerValues(t *testing.T) {
	rel := relMsg(1, "t", "id", "v")
	upd := &pglogrepl.UpdateMessageV2{}
	upd.RelationID, upd.NewTuple = 1, tupleOf("a", "<toast>")
	del := &pglogrepl.DeleteMessageV2{}
	del.RelationID, del.OldTupleType, del.OldTuple = 1, pglogrepl.DeleteMessageTupleTypeKey, tupleOf("b", "<null>")
	txns := feed(t, rel, &pglogrepl.BeginMessage{Xid: 1}, upd, del, &pglogrepl.CommitMessage{})
	c := txns[0].Changes
	if c[0].Op != Update || c[0].New.Get(c[0].Rel, "v").Kind != Unchanged || c[0].New.Get(c[0].Rel, "id").Text != "a" {
		t.Fatalf("update: %+v", c[0])
	}
	if c[1].Op != Delete || c[1].Old.Get(c[1].Rel, "id").Text != "b" || c[1].Old.Get(c[1].Rel, "v").Kind != Null {
		t.Fatalf("delete: %+v", c[1])
	}
	if c[0].New.Get(c[0].Rel, "nope").Kind != Absent {
		t.Fatal("an unpublished column must read as absent")
	}
}

func TestAssemblerRefusesBrokenStreams(t *testing.T) {
	for name, msgs := range map[string][]pglogrepl.Message{
		"change before its relation":   {&pglogrepl.BeginMessage{Xid: 1}, ins(0, "a")},
		"change outside a transaction": {relMsg(1, "t", "id", "v"), ins(0, "a")},
		"commit without begin":         {&pglogrepl.CommitMessage{}},
		"nested begin":                 {&pglogrepl.BeginMessage{Xid: 1}, &pglogrepl.BeginMessage{Xid: 2}},
		"begin inside a stream block":  {&pglogrepl.StreamStartMessageV2{Xid: 7}, &pglogrepl.BeginMessage{Xid: 1}},
		"commit inside a stream block": {&pglogrepl.StreamStartMessageV2{Xid: 7}, &pglogrepl.CommitMessage{}},
		"stream start inside a transaction": {&pglogrepl.BeginMessage{Xid: 1},
			&pglogrepl.StreamStartMessageV2{Xid: 7}},
		"stream commit inside its block": {&pglogrepl.StreamStartMessageV2{Xid: 7},
			&pglogrepl.StreamCommitMessageV2{Xid: 7}},
		"stream abort inside a transaction": {&pglogrepl.BeginMessage{Xid: 1},
			&pglogrepl.StreamAbortMessageV2{Xid: 7, SubXid: 7}},
		"stream stop outside a block": {&pglogrepl.StreamStopMessageV2{}},
	} {
		t.Run(name, func(t *testing.T) {
			a := newAssembler()
			var err error
			for _, m := range msgs {
				if _, err = a.handle(m); err != nil {
					break
				}
			}
			if err == nil {
				t.Fatal("accepted")
			}
		})
	}
}
