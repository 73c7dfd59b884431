package launch

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/cuesched/cuesched/internal/rqd"
	"github.com/cuesched/cuesched/match"
)

// launchSpec is what the launcher reads from the database for one booked frame:
// everything needed to build the RunFrame that RQD runs.
type launchSpec struct {
	ProcID    string // proc.pk_proc of this booking; RQD echoes it as resource_id
	Job       jobInfo
	Layer     layerInfo
	Frame     frameInfo
	Host      hostInfo
	Reserved  match.Resources // the proc's reservation: cores in core units, memory KB
	StartTime time.Time       // the launch moment (start_time, in ms)
}

// jobInfo holds the job's columns a RunFrame carries.
type jobInfo struct {
	ID      string // pk_job
	Name    string // str_name
	User    string // str_user
	LogDir  string // str_log_dir; must not be empty
	Show    string // show name (str_show)
	Shot    string // str_shot
	UID     *int32 // int_uid; nil when NULL
	LokiURL string // str_loki_url, "" when NULL
	Env     map[string]string
}

// layerInfo holds the layer's columns a RunFrame carries.
type layerInfo struct {
	ID         string // pk_layer
	Name       string // str_name
	Command    string // str_cmd, with #TOKENS#
	Range      string // str_range, an OpenCue frame set
	ChunkSize  int    // int_chunk_size
	Threadable bool   // b_threadable
	MemMin     int64  // int_mem_min, KB
	Env        map[string]string
}

// frameInfo identifies the booked frame.
type frameInfo struct {
	ID     string // pk_frame
	Name   string // str_name, e.g. 0001-render
	Number int    // int_number
}

// hostInfo is the host the frame was booked on.
type hostInfo struct {
	Name string // host.str_name
	OS   string // host_stat.str_os
}

// buildRunFrame fills the RunFrame for one booking the way Cuebot does: the
// command's #TOKENS# replaced (chunked layers run a range of frames), the job's
// environment, then the layer's, then the CUE_* variables, memory limits of
// 1.6 and 2.0 times the layer's minimum, and the uid only when set and
// positive. It refuses a spec RQD could not run: an empty log directory (RQD
// would accept the call and never run the command), a reservation without
// cores, or, for a chunked layer, a frame outside the layer's range.
func buildRunFrame(s launchSpec) (*rqd.RunFrame, error) {
	if err := checkSpec(s); err != nil {
		return nil, fmt.Errorf("build run frame for frame %s (proc %s): %w", s.Frame.ID, s.ProcID, err)
	}
	n := s.Frame.Number
	frameSpec, frameEnd := strconv.Itoa(n), n
	if s.Layer.ChunkSize > 1 {
		fs, err := parseFrameSet(s.Layer.Range)
		if err != nil {
			return nil, fmt.Errorf("build run frame for frame %s: layer %s: %w", s.Frame.ID, s.Layer.ID, err)
		}
		chunk, err := fs.Chunk(n, s.Layer.ChunkSize)
		if err != nil {
			return nil, fmt.Errorf("build run frame for frame %s: layer %s: %w", s.Frame.ID, s.Layer.ID, err)
		}
		frameSpec, frameEnd = formatFrames(chunk), chunk[len(chunk)-1]
	}

	// One pass: text substituted for a token is never scanned again (Cuebot
	// replaces token by token, so a layer named "#JOB#" would be rewritten).
	cmd := strings.NewReplacer(
		"#ZFRAME#", fmt.Sprintf("%04d", n),
		"#IFRAME#", strconv.Itoa(n),
		"#FRAME_START#", strconv.Itoa(n),
		"#FRAME_END#", strconv.Itoa(frameEnd),
		"#FRAME_CHUNK#", strconv.Itoa(s.Layer.ChunkSize),
		"#LAYER#", s.Layer.Name,
		"#JOB#", s.Job.Name,
		"#FRAMESPEC#", frameSpec,
		"#FRAME#", s.Frame.Name,
	).Replace(s.Layer.Command)

	env := make(map[string]string, len(s.Job.Env)+len(s.Layer.Env)+cueVars)
	for k, v := range s.Job.Env {
		env[k] = v
	}
	for k, v := range s.Layer.Env {
		env[k] = v
	}
	threadable := "0"
	if s.Layer.Threadable {
		threadable = "1"
	}
	env["CUE3"] = "1"
	env["CUE_THREADS"] = strconv.FormatInt(max(1, s.Reserved.Cores/100), 10)
	env["CUE_MEMORY"] = strconv.FormatInt(s.Reserved.Mem, 10)
	env["CUE_GPUS"] = strconv.FormatInt(s.Reserved.GPUs, 10)
	env["CUE_GPU_MEMORY"] = strconv.FormatInt(s.Reserved.GPUMem, 10)
	env["CUE_LOG_PATH"] = s.Job.LogDir
	env["CUE_RANGE"] = s.Layer.Range
	env["CUE_CHUNK"] = strconv.Itoa(s.Layer.ChunkSize)
	env["CUE_IFRAME"] = strconv.Itoa(n)
	env["CUE_LAYER"] = s.Layer.Name
	env["CUE_JOB"] = s.Job.Name
	env["CUE_FRAME"] = s.Frame.Name
	env["CUE_SHOW"] = s.Job.Show
	env["CUE_SHOT"] = s.Job.Shot
	env["CUE_USER"] = s.Job.User
	env["CUE_JOB_ID"] = s.Job.ID
	env["CUE_LAYER_ID"] = s.Layer.ID
	env["CUE_FRAME_ID"] = s.Frame.ID
	env["CUE_THREADABLE"] = threadable

	rf := &rqd.RunFrame{
		ResourceId:      s.ProcID,
		JobId:           s.Job.ID,
		JobName:         s.Job.Name,
		FrameId:         s.Frame.ID,
		FrameName:       s.Frame.Name,
		LayerId:         s.Layer.ID,
		Command:         cmd,
		UserName:        s.Job.User,
		LogDir:          s.Job.LogDir,
		Show:            s.Job.Show,
		Shot:            s.Job.Shot,
		StartTime:       s.StartTime.UnixMilli(),
		NumCores:        int32(s.Reserved.Cores),
		Environment:     env,
		NumGpus:         int32(s.Reserved.GPUs),
		Os:              s.Host.OS,
		SoftMemoryLimit: s.Layer.MemMin * 8 / 5,
		HardMemoryLimit: s.Layer.MemMin * 2,
		LokiUrl:         s.Job.LokiURL,
	}
	// RQD refuses uid <= 0; unset lets it run as the job's user.
	if s.Job.UID != nil && *s.Job.UID > 0 {
		rf.UidOptional = &rqd.RunFrame_Uid{Uid: *s.Job.UID}
	}
	return rf, nil
}

// cueVars is the number of CUE_* variables buildRunFrame sets (and CUE3).
const cueVars = 19

func checkSpec(s launchSpec) error {
	switch {
	case s.ProcID == "":
		return errors.New("no proc id")
	case s.Frame.ID == "":
		return errors.New("no frame id")
	case strings.TrimSpace(s.Job.LogDir) == "":
		return fmt.Errorf("job %s has no log directory: RQD would never run the frame", s.Job.ID)
	case s.Reserved.Cores <= 0 || s.Reserved.Cores > math.MaxInt32:
		return fmt.Errorf("reserved cores %d out of range", s.Reserved.Cores)
	case s.Reserved.GPUs < 0 || s.Reserved.GPUs > math.MaxInt32:
		return fmt.Errorf("reserved GPUs %d out of range", s.Reserved.GPUs)
	case s.Layer.MemMin < 0 || s.Layer.MemMin > math.MaxInt64/8:
		return fmt.Errorf("layer memory minimum %d out of range", s.Layer.MemMin)
	}
	return nil
}
