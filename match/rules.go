package match

import (
	"math"
	"strings"
	"time"
)

// Cuebot's host minimums: a host report under any of them is not booked
// (HostReportHandler in OpenCue's cuebot).
const (
	minIdleCores = 10     // Dispatcher.CORE_POINTS_RESERVED_MIN, core units
	minIdleMem   = 262144 // dispatcher.memory.mem_reserved_min, KB (256 MB)
	minMemFree   = 524288 // 512 MB of reported free memory (host_stat.int_mem_free), KB

	// minTempPercent is Cuebot's temp-space floor. OpenCue's cuebot
	// (HostReportHandler.isTempDirStorageEnough, AcademySoftwareFoundation/OpenCue)
	// books a host only while its free temp space (mcp) is at least
	// dispatcher.min_available_temp_storage_percentage of the total, 5 by
	// default in opencue.properties, and exempts hosts whose only OS is
	// Windows. The percentage is Cuebot's default; sites that changed it are
	// not modelled.
	minTempPercent = 5
	windowsOS      = "windows"
)

// ParseTags splits a layer.str_tags value ('|'-separated) into lower-cased
// tags without whitespace, empties or repeats, the form Layer.Tags holds
// (package cluster's SplitLayerTags reads it the same way).
//
// Cuebot matches a layer's tags as the case-insensitive regular expression
// '(?x)' || str_tags against host.str_tags: '|' separates the tags, and
// expanded mode ignores every whitespace character, so "gen eral" is the tag
// "general". Each tag is taken literally here: for tags of letters, digits,
// '_', '-' and '.' that is the host tag Cuebot's expression finds; for other
// regular-expression metacharacters Cuebot's match is accidental (or an SQL
// error), and a layer is offered only the hosts carrying exactly its tag.
func ParseTags(s string) []string {
	var tags []string
	for _, t := range strings.Split(s, "|") {
		t = strings.ToLower(strings.Join(strings.Fields(t), ""))
		if t == "" || containsTag(tags, t) {
			continue
		}
		tags = append(tags, t)
	}
	return tags
}

func containsTag(tags []string, t string) bool {
	for _, x := range tags {
		if x == t {
			return true
		}
	}
	return false
}

// tagsMatch: a layer runs on a host that carries any one of its tags,
// compared case-insensitively. Plan walks one index per (facility, tag), so
// the index already guarantees this for every host it is offered; the rule is
// the definition the index must keep.
func tagsMatch(layerTags, hostTags []string) bool {
	for _, lt := range layerTags {
		for _, ht := range hostTags {
			if strings.EqualFold(lt, ht) {
				return true
			}
		}
	}
	return false
}

// osMatch: job.str_os NULL or empty runs anywhere, otherwise it must equal
// host_stat.str_os.
func osMatch(jobOS, hostOS string) bool {
	return jobOS == "" || jobOS == hostOS
}

// threadModeAllows: an ALL-mode host takes only threadable layers; a
// VARIABLE-mode host never gives a threadable layer of one core or more a
// single core, so it refuses one while it has fewer than two whole idle cores
// (size.go reaches the same verdict step by step).
func threadModeAllows(h *Host, l *Layer) bool {
	switch h.ThreadMode {
	case ThreadAll:
		return l.Threadable
	case ThreadVariable:
		return !(l.Threadable && l.Min.Cores >= 100 && h.Idle.Cores < 200)
	}
	return true
}

// idleMinimums: Cuebot books no host under 10 idle core units or 256 MB of
// idle memory.
func idleMinimums(h *Host) bool {
	return h.Idle.Cores >= minIdleCores && h.Idle.Mem >= minIdleMem
}

// memFreeMinimum: Cuebot books no host reporting under 512 MB free memory.
func memFreeMinimum(h *Host) bool {
	return h.MemFree >= minMemFree
}

// tempSpaceMinimum: free temp space at least minTempPercent of the total,
// Windows hosts exempt. Cuebot divides in floating point, so a total of zero
// passes when anything is free (+Inf) and fails when nothing is (NaN); the
// integer form below keeps both outcomes. The exemption is tested last, as
// the dearer test.
func tempSpaceMinimum(h *Host) bool {
	if h.TempTotal <= 0 && h.TempFree > 0 || h.TempTotal > 0 && h.TempFree*100 >= minTempPercent*h.TempTotal {
		return true
	}
	return strings.EqualFold(h.OS, windowsOS)
}

// hostMinimums is every Cuebot host minimum at once.
func hostMinimums(h *Host) bool {
	return idleMinimums(h) && memFreeMinimum(h) && tempSpaceMinimum(h)
}

// fitsIdle: the sized proc fits the host's idle cores, memory, GPUs and GPU
// memory.
func fitsIdle(h *Host, size Resources) bool {
	return h.Idle.Covers(size)
}

// startAfterPassed: the booking guard accepts a layer whose ts_start_after is
// NULL or not after now.
func startAfterPassed(l *Layer, now time.Time) bool {
	return l.StartAfter.IsZero() || !l.StartAfter.After(now)
}

// BurstAllows is Cuebot's subscription guard (trigger verify_subscription:
// when a booking raises int_cores with int_burst unchanged, it refuses
// int_cores above int_burst; GPUs are not guarded), plus Cuebot's booking rule
// that a show books on an allocation only through a subscription row with a
// positive burst. sub.Cores includes this round's placements. The re-check
// (package dispatch) keeps exactly these rules.
func BurstAllows(sub Subscription, found bool, cores int64) bool {
	return found && sub.Burst > 0 && (cores <= 0 || sumAtMost(sub.Cores, cores, sub.Burst))
}

// sumAtMost: used+add <= max, where a sum past the int64 range counts as the
// side it overflowed to (odd rows must not wrap around under a cap).
func sumAtMost(used, add, max int64) bool {
	switch {
	case add > 0 && used > math.MaxInt64-add:
		return false
	case add < 0 && used < math.MinInt64-add:
		return true
	}
	return used+add <= max
}

// NoMax is a job cap's max that never refuses. Cuebot's job guard has no
// "unlimited" value (a negative max refuses every booking), so this is what a
// job whose job_resource row is not known yet is given: the booking's
// re-check reads the row itself.
const NoMax int64 = math.MaxInt64

// JobAllows is Cuebot's job_resource guard (trigger verify_job_resources): it
// runs when a booking raises int_cores or int_gpus with the maxes unchanged,
// and then refuses int_cores above int_max_cores or int_gpus above
// int_max_gpus, both checked whichever grew. So a CPU proc is refused on a
// job whose GPUs are above its GPU max (an operator lowered it), and a
// negative max refuses everything. c includes this round's placements.
func JobAllows(c Cap, size Resources) bool {
	if size.Cores <= 0 && size.GPUs <= 0 {
		return true // no counter grows: the guard does not run
	}
	return atMost(c.Cores, size.Cores, c.MaxCores) && atMost(c.GPUs, size.GPUs, c.MaxGPUs)
}

// FolderAllows is the folder cap. folder_resource has no guard trigger, so
// this rule is cuesched's own, kept by matching and the re-check alike: a
// negative max is unlimited (folder_resource's default is -1), and otherwise
// both counters stay within their maxes after the booking, the job guard's
// shape. c includes this round's placements.
func FolderAllows(c Cap, size Resources) bool {
	return (c.MaxCores < 0 || atMost(c.Cores, size.Cores, c.MaxCores)) &&
		(c.MaxGPUs < 0 || atMost(c.GPUs, size.GPUs, c.MaxGPUs))
}

// atMost: used+add <= max, without overflowing at NoMax.
func atMost(used, add, max int64) bool {
	return max == NoMax || sumAtMost(used, add, max)
}

// limitAllows: a layer linked to a limit record runs only while the running
// frames of all the limit's layers stay below its max. An unknown limit (the
// record is gone) limits nothing. lim.Running includes this round's
// placements.
func limitAllows(lim Limit, found bool) bool {
	return !found || lim.Running < lim.Max
}
