package matchtest

import (
	"sync"

	"github.com/cuesched/cuesched/match"
)

// SubKey names a subscription: a show on an allocation.
type SubKey struct{ Show, Alloc string }

// Caps is an in-memory match.Caps. A job or folder it does not know is
// unlimited (a job's max match.NoMax, a folder's -1); a subscription or limit it does not know is absent. Fill the maps
// before use; Apply and Release keep usage as a commit and a release would.
type Caps struct {
	mu      sync.RWMutex
	Subs    map[SubKey]match.Subscription
	Jobs    map[string]match.Cap
	Folders map[string]match.Cap
	Limits  map[string]match.Limit
}

// NewCaps returns empty Caps.
func NewCaps() *Caps {
	return &Caps{
		Subs:    make(map[SubKey]match.Subscription),
		Jobs:    make(map[string]match.Cap),
		Folders: make(map[string]match.Cap),
		Limits:  make(map[string]match.Limit),
	}
}

var (
	unlimited    = match.Cap{MaxCores: -1, MaxGPUs: -1}
	unlimitedJob = match.Cap{MaxCores: match.NoMax, MaxGPUs: match.NoMax}
)

// Subscription implements match.Caps.
func (c *Caps) Subscription(showID, allocID string) (match.Subscription, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	s, ok := c.Subs[SubKey{showID, allocID}]
	return s, ok
}

// Job implements match.Caps.
func (c *Caps) Job(jobID string) match.Cap {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if j, ok := c.Jobs[jobID]; ok {
		return j
	}
	return unlimitedJob
}

// Folder implements match.Caps.
func (c *Caps) Folder(folderID string) match.Cap {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if f, ok := c.Folders[folderID]; ok {
		return f
	}
	return unlimited
}

// Limit implements match.Caps.
func (c *Caps) Limit(limitID string) (match.Limit, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	l, ok := c.Limits[limitID]
	return l, ok
}

// Apply counts a placement as committed: subscription, job, folder and limit
// usage rise by its size.
func (c *Caps) Apply(p match.Placement) { c.add(p.Layer, p.Host.Alloc, p.Size, 1) }

// Release counts a placement's proc as released.
func (c *Caps) Release(p match.Placement) {
	c.add(p.Layer, p.Host.Alloc, match.Resources{}.Sub(p.Size), -1)
}

func (c *Caps) add(l *match.Layer, alloc string, r match.Resources, frames int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := SubKey{l.ShowID, alloc}
	if s, ok := c.Subs[k]; ok {
		s.Cores += r.Cores
		s.GPUs += r.GPUs
		c.Subs[k] = s
	}
	bump := func(m map[string]match.Cap, id string, none match.Cap) {
		cp, ok := m[id]
		if !ok {
			cp = none
		}
		cp.Cores += r.Cores
		cp.GPUs += r.GPUs
		m[id] = cp
	}
	bump(c.Jobs, l.JobID, unlimitedJob)
	bump(c.Folders, l.FolderID, unlimited)
	for _, id := range l.Limits {
		if lim, ok := c.Limits[id]; ok {
			lim.Running += frames
			c.Limits[id] = lim
		}
	}
}
