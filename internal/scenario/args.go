package scenario

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// args are a directive's words: positional names and key=value pairs. The
// readers note the first bad value and every key they were asked for, so
// finish can refuse a bad value or a key the directive does not know.
type args struct {
	directive string
	pos       []string
	keys      map[string]string
	order     []string // keys as written
	read      map[string]bool
	err       error
}

func splitArgs(directive string, words []string) *args {
	a := &args{directive: directive, keys: map[string]string{}, read: map[string]bool{}}
	for _, w := range words {
		if k, v, ok := strings.Cut(w, "="); ok {
			a.keys[k] = v
			a.order = append(a.order, k)
		} else {
			a.pos = append(a.pos, w)
		}
	}
	return a
}

// names checks that n names lead the positional words and the others are
// among flags.
func (a *args) names(n int, flags ...string) error {
	if len(a.pos) < n {
		return fmt.Errorf("%s needs %d name(s), got %q", a.directive, n, a.pos)
	}
	for _, w := range a.pos[n:] {
		if !slices.Contains(flags, w) {
			return fmt.Errorf("%s: unexpected word %q", a.directive, w)
		}
	}
	return nil
}

// finish reports the first bad value, then the first unknown key.
func (a *args) finish() error {
	if a.err != nil {
		return a.err
	}
	for _, k := range a.order {
		if !a.read[k] {
			return fmt.Errorf("%s: unknown key %q", a.directive, k)
		}
	}
	return nil
}

func (a *args) value(k string) (string, bool) {
	a.read[k] = true
	v, ok := a.keys[k]
	return v, ok && a.err == nil
}

func (a *args) fail(k, v string, err error) {
	a.err = fmt.Errorf("%s=%q: %w", k, v, err)
}

func (a *args) str(k, def string) string {
	if v, ok := a.value(k); ok {
		return v
	}
	return def
}

// list reads a comma-separated list; nil when absent or empty.
func (a *args) list(k string) []string {
	if v := a.str(k, ""); v != "" {
		return strings.Split(v, ",")
	}
	return nil
}

func (a *args) num(k string, def int64) int64 {
	v, ok := a.value(k)
	if !ok {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		a.fail(k, v, err)
	}
	return n
}

// count reads a number in [least, maxCount].
func (a *args) count(k string, def, least int64) int64 {
	n := a.num(k, def)
	if a.err == nil && (n < least || n > maxCount) {
		a.fail(k, strconv.FormatInt(n, 10), fmt.Errorf("want %d to %d", least, maxCount))
		return def
	}
	return n
}

func (a *args) cores(k string, def int64) int64 {
	v, ok := a.value(k)
	if !ok {
		return def
	}
	c, err := parseCores(v)
	if err != nil {
		a.fail(k, v, err)
	}
	return c
}

func (a *args) size(k string, def int64) int64 {
	v, ok := a.value(k)
	if !ok {
		return def
	}
	n, err := parseSize(v)
	if err != nil {
		a.fail(k, v, err)
	}
	return n
}
