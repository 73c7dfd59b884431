// Package cluster names the units cuesched splits a farm into and decides
// which of them a layer or a host belongs to.
//
// An allocation cluster is one (facility, allocation): every managed show
// subscribed to that allocation books inside it, so shows compete there by
// subscription tier as in Cuebot. Manual, hardware and hostname tags are
// grouped per facility into buckets by a stable hash of the tag name, so
// adding a tag never reshuffles the others; the bucket count is one setting
// for the whole deployment (cuesched.setting "tag_buckets"), never per
// instance. Keys are built only from database keys and that count, so every
// instance computes the same keys.
package cluster

import (
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
)

// Kind is what a cluster groups by.
type Kind uint8

const (
	// KindAlloc is one allocation of one facility.
	KindAlloc Kind = 1
	// KindTags is one hash bucket of a facility's non-allocation tags.
	KindTags Kind = 2
)

// Key identifies a cluster.
type Key struct {
	Kind     Kind
	Facility string // pk_facility
	Alloc    string // pk_alloc, for KindAlloc
	Bucket   int    // for KindTags
}

// String is the key's stable text form, used in the database and in logs:
// "alloc/<pk_alloc>" or "tags/<pk_facility>/<bucket>".
func (k Key) String() string {
	if k.Kind == KindAlloc {
		return "alloc/" + k.Alloc
	}
	return fmt.Sprintf("tags/%s/%d", k.Facility, k.Bucket)
}

// Less orders keys by their text form, the order every instance takes
// clusters in.
func (k Key) Less(o Key) bool { return k.String() < o.String() }

// Normalize is how tags are compared everywhere: trimmed and lower-cased.
func Normalize(tag string) string { return strings.ToLower(strings.TrimSpace(tag)) }

// SplitLayerTags splits layer.str_tags ('|'-separated) into normalized tags
// with no whitespace inside either, dropping empty ones and duplicates:
// Cuebot reads a layer's tags as a regular expression in expanded mode,
// which ignores whitespace, so "gen eral" is the tag "general" (match's
// ParseTags says more).
func SplitLayerTags(s string) []string {
	var out []string
	for _, t := range strings.Split(s, "|") {
		if t = Normalize(strings.Join(strings.Fields(t), "")); t != "" && !contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// Bucket is the bucket of a tag among n: FNV-1a of the normalized tag, so
// the same tag falls in the same bucket in every instance and every release.
func Bucket(tag string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(Normalize(tag)))
	return int(h.Sum32() % uint32(n))
}

// Alloc is one allocation as cluster assignment needs it.
type Alloc struct {
	ID       string // pk_alloc
	Facility string // pk_facility
	Tag      string // alloc.str_tag (may be empty)
}

// Keyer maps tags to clusters for one view of the allocations.
type Keyer struct {
	buckets int
	// byTag maps (facility, normalized allocation tag) to pk_alloc. Tags are
	// not unique across facilities (local.general and cloud.general share
	// "general"), hence the facility in the key.
	byTag map[[2]string]string
}

// NewKeyer builds a Keyer from the allocations and the deployment's bucket
// count. When two allocations of one facility share a tag (Cuebot does not
// forbid it), the one with the smaller key wins, the same in every instance.
func NewKeyer(allocs []Alloc, buckets int) *Keyer {
	if buckets < 1 {
		buckets = 1
	}
	k := &Keyer{buckets: buckets, byTag: map[[2]string]string{}}
	for _, a := range allocs {
		t := Normalize(a.Tag)
		if t == "" {
			continue
		}
		key := [2]string{a.Facility, t}
		if cur, ok := k.byTag[key]; !ok || a.ID < cur {
			k.byTag[key] = a.ID
		}
	}
	return k
}

// Buckets is the bucket count the Keyer was built with.
func (k *Keyer) Buckets() int { return k.buckets }

// OfTag is the cluster a tag of a facility belongs to.
func (k *Keyer) OfTag(facility, tag string) Key {
	t := Normalize(tag)
	if alloc, ok := k.byTag[[2]string{facility, t}]; ok {
		return Key{Kind: KindAlloc, Facility: facility, Alloc: alloc}
	}
	return Key{Kind: KindTags, Facility: facility, Bucket: Bucket(t, k.buckets)}
}

// OfLayer is every cluster a layer of a job in facility may book in: one per
// distinct cluster of its tags, in key order.
func (k *Keyer) OfLayer(facility string, tags []string) []Key {
	var out []Key
	for _, t := range tags {
		key := k.OfTag(facility, t)
		dup := false
		for _, o := range out {
			if o == key {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, key)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// OfHost is every cluster a host belongs to: its allocation's cluster and
// the buckets of its other tags (tags equal to an allocation tag of its
// facility count as that allocation's, as matching treats them).
func (k *Keyer) OfHost(facility, alloc string, tags []string) []Key {
	out := []Key{{Kind: KindAlloc, Facility: facility, Alloc: alloc}}
	for _, t := range tags {
		key := k.OfTag(facility, t)
		if key.Kind == KindAlloc {
			continue
		}
		dup := false
		for _, o := range out {
			if o == key {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, key)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}
