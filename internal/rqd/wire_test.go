package rqd

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// wantRunFrame is RunFrame's wire layout as OpenCue's RQD reads it
// (shared/rqd/wire.md): field number -> wire type.
var wantRunFrame = map[protowire.Number]protowire.Type{
	1: protowire.BytesType, 2: protowire.BytesType, 3: protowire.BytesType,
	4: protowire.BytesType, 5: protowire.BytesType, 6: protowire.BytesType,
	7: protowire.BytesType, 8: protowire.BytesType, 9: protowire.BytesType,
	10: protowire.BytesType, 11: protowire.BytesType, 12: protowire.BytesType,
	13: protowire.BytesType, 14: protowire.BytesType, 15: protowire.BytesType,
	16: protowire.VarintType, // int64 start_time
	17: protowire.VarintType, // int32 uid
	18: protowire.VarintType, // int32 num_cores
	19: protowire.VarintType, // int32 gid
	20: protowire.VarintType, // bool ignore_nimby
	21: protowire.BytesType,  // map entry
	22: protowire.BytesType,  // map entry
	23: protowire.VarintType, // int32 num_gpus
	25: protowire.BytesType,  // string os
	26: protowire.VarintType, // int64 soft_memory_limit
	27: protowire.VarintType, // int64 hard_memory_limit
	28: protowire.VarintType, // int32 pid
	29: protowire.BytesType,  // string loki_url
}

func fullRunFrame() *RunFrame {
	return &RunFrame{
		ResourceId: "proc", JobId: "job", JobName: "jobname", FrameId: "frame",
		FrameName: "0001-render", LayerId: "layer", Command: "echo 1", UserName: "user",
		LogDir: "/logs", Show: "show", Shot: "shot", JobTempDir: "a", FrameTempDir: "b",
		LogFile: "c", LogDirFile: "d", StartTime: 1700000000000,
		UidOptional: &RunFrame_Uid{Uid: 1000}, NumCores: 200, Gid: 7, IgnoreNimby: true,
		Environment: map[string]string{"CUE3": "1"}, Attributes: map[string]string{"k": "v"},
		NumGpus: 1, Os: "linux", SoftMemoryLimit: 1677721, HardMemoryLimit: 2097152,
		Pid: 42, LokiUrl: "http://loki",
	}
}

func TestRunFrameWireLayout(t *testing.T) {
	b, err := proto.Marshal(fullRunFrame())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[protowire.Number]bool{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("bad tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		want, ok := wantRunFrame[num]
		if !ok {
			t.Fatalf("unexpected field %d on the wire", num)
		}
		if typ != want {
			t.Errorf("field %d: wire type %d, want %d", num, typ, want)
		}
		if num == 21 || num == 22 {
			checkMapEntry(t, num, b)
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			t.Fatalf("field %d: bad value: %v", num, protowire.ParseError(n))
		}
		b = b[n:]
		seen[num] = true
	}
	for num := range wantRunFrame {
		if !seen[num] {
			t.Errorf("field %d missing from the encoding of a fully set RunFrame", num)
		}
	}
}

// checkMapEntry checks a map<string,string> entry: key = 1, value = 2, both
// length-delimited.
func checkMapEntry(t *testing.T, field protowire.Number, b []byte) {
	t.Helper()
	entry, n := protowire.ConsumeBytes(b)
	if n < 0 {
		t.Fatalf("field %d: bad map entry", field)
	}
	for len(entry) > 0 {
		num, typ, m := protowire.ConsumeTag(entry)
		if m < 0 || (num != 1 && num != 2) || typ != protowire.BytesType {
			t.Fatalf("field %d: map entry has field %d type %d", field, num, typ)
		}
		entry = entry[m:]
		m = protowire.ConsumeFieldValue(num, typ, entry)
		if m < 0 {
			t.Fatalf("field %d: bad map entry value", field)
		}
		entry = entry[m:]
	}
}

func TestRequestWireLayout(t *testing.T) {
	kill, err := proto.Marshal(&RqdStaticKillRunningFrameRequest{FrameId: "f", Message: "m"})
	if err != nil {
		t.Fatal(err)
	}
	want := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "f")
	want = protowire.AppendString(protowire.AppendTag(want, 2, protowire.BytesType), "m")
	if string(kill) != string(want) {
		t.Errorf("kill request encodes as %x, want %x", kill, want)
	}

	rf := &RunFrame{FrameId: "f"}
	launch, err := proto.Marshal(&RqdStaticLaunchFrameRequest{RunFrame: rf})
	if err != nil {
		t.Fatal(err)
	}
	inner, err := proto.Marshal(rf)
	if err != nil {
		t.Fatal(err)
	}
	want = protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), inner)
	if string(launch) != string(want) {
		t.Errorf("launch request encodes as %x, want %x", launch, want)
	}
}

// An unset uid must not appear on the wire: RQD refuses uid <= 0.
func TestUnsetUIDIsAbsent(t *testing.T) {
	b, err := proto.Marshal(&RunFrame{FrameId: "f", NumCores: 100})
	if err != nil {
		t.Fatal(err)
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("bad tag: %v", protowire.ParseError(n))
		}
		if num == 17 {
			t.Fatal("uid on the wire although unset")
		}
		b = b[n:]
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			t.Fatalf("field %d: bad value", num)
		}
		b = b[n:]
	}
}

func TestMethodNames(t *testing.T) {
	desc := RqdInterface_ServiceDesc
	for _, c := range []struct{ got, want string }{
		{RqdInterface_LaunchFrame_FullMethodName, "/rqd.RqdInterface/LaunchFrame"},
		{RqdInterface_KillRunningFrame_FullMethodName, "/rqd.RqdInterface/KillRunningFrame"},
		{"/" + desc.ServiceName + "/" + desc.Methods[0].MethodName, "/rqd.RqdInterface/LaunchFrame"},
		{"/" + desc.ServiceName + "/" + desc.Methods[1].MethodName, "/rqd.RqdInterface/KillRunningFrame"},
		{RqdInterface_ReportStatus_FullMethodName, "/rqd.RqdInterface/ReportStatus"},
		{"/" + desc.ServiceName + "/" + desc.Methods[2].MethodName, "/rqd.RqdInterface/ReportStatus"},
	} {
		if c.got != c.want {
			t.Errorf("method %q, want %q", c.got, c.want)
		}
	}
	if n := len(desc.Methods); n != 3 {
		t.Errorf("%d methods, want 3", n)
	}
}

// TestHostReportReadsRunningFrames decodes a ReportStatus answer laid out
// as OpenCue's RQD sends it (report.HostReport: host = 1, frames = 2,
// core_info = 3; RunningFrameInfo: resource_id = 1, frame_id = 4, num_cores
// = 7, ...): the frames' ids come through and the fields cuesched leaves out
// are skipped.
func TestHostReportReadsRunningFrames(t *testing.T) {
	frame := func(proc, id string) []byte {
		var f []byte
		f = protowire.AppendTag(f, 1, protowire.BytesType)
		f = protowire.AppendString(f, proc)
		f = protowire.AppendTag(f, 3, protowire.BytesType)
		f = protowire.AppendString(f, "jobname")
		f = protowire.AppendTag(f, 4, protowire.BytesType)
		f = protowire.AppendString(f, id)
		f = protowire.AppendTag(f, 7, protowire.VarintType)
		f = protowire.AppendVarint(f, 100)
		return f
	}
	var host []byte
	host = protowire.AppendTag(host, 1, protowire.BytesType)
	host = protowire.AppendString(host, "render-01")
	var report []byte
	report = protowire.AppendTag(report, 1, protowire.BytesType)
	report = protowire.AppendBytes(report, host)
	report = protowire.AppendTag(report, 2, protowire.BytesType)
	report = protowire.AppendBytes(report, frame("proc-a", "frame-a"))
	report = protowire.AppendTag(report, 2, protowire.BytesType)
	report = protowire.AppendBytes(report, frame("proc-b", "frame-b"))
	var resp []byte
	resp = protowire.AppendTag(resp, 1, protowire.BytesType)
	resp = protowire.AppendBytes(resp, report)

	var got RqdStaticReportStatusResponse
	if err := proto.Unmarshal(resp, &got); err != nil {
		t.Fatal(err)
	}
	fs := got.GetHostReport().GetFrames()
	if len(fs) != 2 || fs[0].GetResourceId() != "proc-a" || fs[0].GetFrameId() != "frame-a" ||
		fs[1].GetResourceId() != "proc-b" || fs[1].GetFrameId() != "frame-b" {
		t.Fatalf("frames %v", fs)
	}
}
