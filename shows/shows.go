package shows

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Show is one show and its work.
type Show struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Managed bool   `json:"managed"` // show.b_scheduler_managed: cuesched books it
	Active  bool   `json:"active"`  // show.b_active
	Running int64  `json:"running"` // RUNNING frames of its unfinished jobs
	Waiting int64  `json:"waiting"` // WAITING frames of its unfinished jobs
	// Cuesched is how many of its procs cuesched booked and still hold
	// their resources (a frame running, or its proc being released).
	Cuesched int64 `json:"running_under_cuesched"`
}

// showsSQL reads every show (or the one named $1 when not NULL) with its
// frame counts and the procs cuesched booked (their launch outbox rows).
const showsSQL = `
SELECT s.pk_show, s.str_name, s.b_scheduler_managed, s.b_active,
       coalesce(w.running, 0), coalesce(w.waiting, 0), coalesce(c.procs, 0)
  FROM show s
  LEFT JOIN (SELECT j.pk_show, sum(st.int_running_count) AS running, sum(st.int_waiting_count) AS waiting
               FROM job j JOIN job_stat st ON st.pk_job = j.pk_job
              WHERE j.str_state <> 'FINISHED' GROUP BY j.pk_show) w ON w.pk_show = s.pk_show
  LEFT JOIN (SELECT p.pk_show, count(*) AS procs
               FROM proc p JOIN cuesched.launch_outbox o ON o.proc_id = p.pk_proc GROUP BY p.pk_show) c
         ON c.pk_show = s.pk_show
 WHERE $1::text IS NULL OR s.str_name = $1
 ORDER BY s.str_name`

// List reads every show, by name.
func List(ctx context.Context, pool *pgxpool.Pool) ([]Show, error) {
	out, err := read(ctx, pool, nil)
	if err != nil {
		return nil, fmt.Errorf("list shows: %w", err)
	}
	return out, nil
}

// read reads every show, or the one named *name.
func read(ctx context.Context, pool *pgxpool.Pool, name *string) ([]Show, error) {
	rows, err := pool.Query(ctx, showsSQL, name)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Show, error) {
		var s Show
		err := row.Scan(&s.ID, &s.Name, &s.Managed, &s.Active, &s.Running, &s.Waiting, &s.Cuesched)
		return s, err
	})
}

// Get reads the show named name; an unknown name is an *UnknownError.
func Get(ctx context.Context, pool *pgxpool.Pool, name string) (Show, error) {
	ss, err := read(ctx, pool, &name)
	if err != nil {
		return Show{}, fmt.Errorf("read show %q: %w", name, err)
	}
	if len(ss) == 0 {
		return Show{}, unknown(ctx, pool, name)
	}
	return ss[0], nil
}

// UnknownError is a show name no show has, with the names nearest to it.
type UnknownError struct {
	Name string
	Near []string // the closest names first; empty: none is close
	All  int      // how many shows there are
}

func (e *UnknownError) Error() string {
	switch {
	case len(e.Near) > 0:
		return fmt.Sprintf("no show is named %q; did you mean %s? (cuesched show list names them all)",
			e.Name, strings.Join(quoted(e.Near), ", "))
	case e.All == 0:
		return fmt.Sprintf("no show is named %q: the database has no shows", e.Name)
	}
	return fmt.Sprintf("no show is named %q, nor anything close (cuesched show list names the %d shows)", e.Name, e.All)
}

func quoted(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// unknown is the UnknownError for name, with the shows' nearest names.
func unknown(ctx context.Context, pool *pgxpool.Pool, name string) error {
	rows, err := pool.Query(ctx, `SELECT str_name FROM show ORDER BY str_name`)
	if err != nil {
		return fmt.Errorf("no show is named %q (and the show names could not be read: %w)", name, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("no show is named %q (and the show names could not be read: %w)", name, err)
	}
	return &UnknownError{Name: name, Near: Near(name, names, 5), All: len(names)}
}

// Near returns up to limit of names close to name: the same but for case, the
// ones containing it or contained in it, and those a few edits away, closest
// first.
func Near(name string, names []string, limit int) []string {
	type cand struct {
		name string
		dist int
	}
	lower := strings.ToLower(name)
	var cs []cand
	for _, n := range names {
		ln := strings.ToLower(n)
		d := editDistance(lower, ln)
		switch {
		case ln == lower:
			d = 0
		case len(lower) >= 3 && (strings.Contains(ln, lower) || strings.Contains(lower, ln)):
			d = min(d, 1)
		case d > max(2, len([]rune(lower))/3):
			continue
		}
		cs = append(cs, cand{n, d})
	}
	slices.SortStableFunc(cs, func(a, b cand) int { return a.dist - b.dist })
	var out []string
	for _, c := range cs[:min(len(cs), limit)] {
		out = append(out, c.name)
	}
	return out
}

// editDistance is Levenshtein's distance between a and b, in runes.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev, cur := make([]int, len(rb)+1), make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

// ErrInactive is a show Cuebot has deactivated (show.b_active false).
var ErrInactive = errors.New("show is not active")

// denied explains a refused write: the show commands run as a role that may
// update table show, which cuesched's own role need not be.
func denied(err error, what string) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42501" {
		return fmt.Errorf("%s: %s: run it as the owner of Cuebot's tables (the role of `cuesched migrate up`), "+
			"or a role with UPDATE on show and on the five counter tables", what, pe.Message)
	}
	return fmt.Errorf("%s: %w", what, err)
}
