package ownership

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/cuesched/cuesched/cluster"
	"github.com/cuesched/cuesched/internal/config"
)

// Static is an instance's static restriction, OpenCue v1 style (the
// --facility, --alloc-tags and --manual-tags settings). With no alloc-tags
// and no manual-tags the instance may own every cluster (of its facility,
// when one is given); otherwise only the allocation clusters of its
// alloc-tags, where it books only the shows named with that tag, and the tag
// buckets holding its manual tags, where it books every show.
type Static struct {
	Facility   string            // facility name; empty: every facility
	AllocTags  []config.AllocTag // show:tag
	ManualTags []string
}

// restriction is a Static resolved against the database and normalised: the
// form kept in cuesched.instance.static and compared between instances.
type restriction struct {
	Facility     string              `json:"facility,omitempty"` // pk_facility
	FacilityName string              `json:"facility_name,omitempty"`
	AllocTags    map[string][]string `json:"alloc_tags,omitempty"` // normalised tag -> sorted show names
	ManualTags   []string            `json:"manual_tags,omitempty"`
}

// resolve normalises s; facilityID is the key of s.Facility.
func (s Static) resolve(facilityID string) restriction {
	r := restriction{Facility: facilityID, FacilityName: strings.TrimSpace(s.Facility)}
	for _, at := range s.AllocTags {
		tag, show := cluster.Normalize(at.Tag), strings.TrimSpace(at.Show)
		if tag == "" || show == "" {
			continue
		}
		if r.AllocTags == nil {
			r.AllocTags = map[string][]string{}
		}
		if !slices.Contains(r.AllocTags[tag], show) {
			r.AllocTags[tag] = append(r.AllocTags[tag], show)
			slices.Sort(r.AllocTags[tag])
		}
	}
	for _, t := range s.ManualTags {
		if t = cluster.Normalize(t); t != "" && !slices.Contains(r.ManualTags, t) {
			r.ManualTags = append(r.ManualTags, t)
		}
	}
	slices.Sort(r.ManualTags)
	return r
}

// listed reports whether the instance is limited to listed tags.
func (r restriction) listed() bool { return len(r.AllocTags) > 0 || len(r.ManualTags) > 0 }

// clusterInfo is what restrictions look at in a cluster.
type clusterInfo struct {
	Key      cluster.Key
	AllocTag string // the allocation's tag, for allocation clusters
}

// covers reports whether the instance may own the cluster; buckets is the
// deployment's tag bucket count.
func (r restriction) covers(c clusterInfo, buckets int) bool {
	if r.Facility != "" && c.Key.Facility != r.Facility {
		return false
	}
	if !r.listed() {
		return true
	}
	switch c.Key.Kind {
	case cluster.KindAlloc:
		_, ok := r.AllocTags[cluster.Normalize(c.AllocTag)]
		return ok && c.AllocTag != ""
	case cluster.KindTags:
		for _, t := range r.ManualTags {
			if cluster.Bucket(t, buckets) == c.Key.Bucket {
				return true
			}
		}
	}
	return false
}

// allowsShow reports whether the instance books the show (by name) in a
// cluster it covers.
func (r restriction) allowsShow(c clusterInfo, show string) bool {
	if !r.listed() || c.Key.Kind != cluster.KindAlloc {
		return true
	}
	return slices.Contains(r.AllocTags[cluster.Normalize(c.AllocTag)], show)
}

// splitWith reports an allocation tag whose clusters both restrictions may
// own while booking different shows in them: one cluster would be split
// between two instances, and whichever owns it would leave the other's
// shows unbooked. Tag buckets are never split (their owner books every
// show). An empty result means no conflict.
func (r restriction) splitWith(o restriction) (tag string, mine, theirs []string) {
	if r.Facility != "" && o.Facility != "" && r.Facility != o.Facility {
		return "", nil, nil
	}
	// showsFor: which shows r books in the allocation clusters of tag (nil:
	// every show) and whether it may own them at all.
	showsFor := func(r restriction, tag string) ([]string, bool) {
		if !r.listed() {
			return nil, true
		}
		s, ok := r.AllocTags[tag]
		return s, ok
	}
	var tags []string
	for t := range r.AllocTags {
		tags = append(tags, t)
	}
	for t := range o.AllocTags {
		if _, ok := r.AllocTags[t]; !ok {
			tags = append(tags, t)
		}
	}
	sort.Strings(tags)
	for _, t := range tags {
		a, okA := showsFor(r, t)
		b, okB := showsFor(o, t)
		if okA && okB && !slices.Equal(a, b) {
			return t, a, b
		}
	}
	return "", nil, nil
}

// ConfigError is a configuration this instance cannot start with: a
// restriction naming what does not exist, or one that would split a cluster
// with a live instance. The command exits 2 on it.
type ConfigError struct {
	Field string // the setting at fault: facility, alloc-tags, instance
	Msg   string
}

func (e *ConfigError) Error() string { return e.Field + ": " + e.Msg }

func showList(shows []string) string {
	if shows == nil {
		return "every show"
	}
	return "shows " + strings.Join(shows, ",")
}

func splitError(tag string, mine, theirs []string, other string) *ConfigError {
	return &ConfigError{Field: "alloc-tags", Msg: fmt.Sprintf(
		"the allocation clusters of tag %q would be split with live instance %s: this instance would book %s there, "+
			"it books %s; give both the same shows for that tag", tag, other, showList(mine), showList(theirs))}
}
