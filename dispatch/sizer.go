package dispatch

import "sync"

// sizer adapts the batch size of each cluster within [min, max]: it halves
// after a transaction lost to a guard, a lock conflict or a busy cluster (a
// smaller batch holds its locks for less time and loses less when it rolls
// back), and doubles after a clean commit that used the whole size. It
// starts at max, the size that books fastest when nothing contends.
type sizer struct {
	min, max int
	mu       sync.Mutex
	cur      map[int32]int
}

func newSizer(lo, hi int) *sizer {
	lo = max(lo, 1)
	return &sizer{min: lo, max: max(hi, lo), cur: map[int32]int{}}
}

// size is the cluster's current batch size.
func (s *sizer) size(cluster int32) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n, ok := s.cur[cluster]; ok {
		return n
	}
	return s.max
}

// contended records a rollback or a busy cluster.
func (s *sizer) contended(cluster int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.cur[cluster]
	if !ok {
		n = s.max
	}
	s.cur[cluster] = max(s.min, n/2)
}

// committed records a clean commit of a batch of n placements.
func (s *sizer) committed(cluster int32, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.cur[cluster]
	if !ok || n < cur {
		return // a partial batch says nothing about a larger one
	}
	if cur = min(s.max, cur*2); cur == s.max {
		delete(s.cur, cluster)
	} else {
		s.cur[cluster] = cur
	}
}
