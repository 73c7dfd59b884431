package scheduler

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/match"
)

// showNames maps pk_show to show.str_name for Ownership.AllowsShow: a static
// restriction names shows (OpenCue's --alloc-tags show:tag) while layers
// carry the show's key. Cuebot never renames a show, so each name is read
// once, when a layer of the show is first planned.
type showNames struct {
	mu    sync.Mutex
	names map[string]string
}

// of returns the names of the layers' shows, reading those not known yet.
func (n *showNames) of(ctx context.Context, pool *pgxpool.Pool, layers []*match.Layer) (map[string]string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.names == nil {
		n.names = map[string]string{}
	}
	var missing []string
	for _, l := range layers {
		if _, ok := n.names[l.ShowID]; !ok {
			missing = append(missing, l.ShowID)
		}
	}
	if len(missing) > 0 {
		rows, err := pool.Query(ctx, `SELECT pk_show, str_name FROM show WHERE pk_show = ANY($1)`, missing)
		if err != nil {
			return nil, fmt.Errorf("read names of %d shows: %w", len(missing), err)
		}
		defer rows.Close()
		for rows.Next() {
			var id, name string
			if err := rows.Scan(&id, &name); err != nil {
				return nil, fmt.Errorf("read show names: %w", err)
			}
			n.names[id] = name
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read show names: %w", err)
		}
	}
	out := make(map[string]string, len(layers))
	for _, l := range layers {
		out[l.ShowID] = n.names[l.ShowID]
	}
	return out, nil
}
