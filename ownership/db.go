package ownership

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/cuesched/cuesched/cluster"
)

// Channel is the notification channel of ownership changes. Payloads are
// hints only: every instance rereads the tables when one arrives.
const Channel = "cuesched_ownership"

// liveSQL is true for an instance row i whose liveness lock is held, that is
// whose coordination session is still open.
var liveSQL = fmt.Sprintf(`i.id IN (SELECT l.objid::bigint FROM pg_locks l
	WHERE l.locktype = 'advisory' AND l.classid = %d AND l.objsubid = 2 AND l.granted
	  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))`, cluster.LivenessLock)

// snapshotSQL reads every table of ours in one statement (one snapshot).
var snapshotSQL = `SELECT
  COALESCE((SELECT value FROM cuesched.setting WHERE name = 'tag_buckets'), '1'),
  COALESCE((SELECT json_agg(json_build_object('id', i.id, 'name', i.name, 'app_name', i.app_name,
      'static', i.static, 'live', ` + liveSQL + `) ORDER BY i.id) FROM cuesched.instance i), '[]'),
  COALESCE((SELECT json_agg(json_build_object('id', c.id, 'kind', c.kind, 'facility', c.facility,
      'alloc', COALESCE(c.alloc, ''), 'alloc_tag', COALESCE(c.alloc_tag, ''), 'bucket', COALESCE(c.bucket, 0),
      'owner', COALESCE(c.owner, 0), 'epoch', c.epoch) ORDER BY c.id) FROM cuesched.cluster c), '[]'),
  COALESCE((SELECT json_agg(json_build_object('cluster', h.cluster, 'giver', h.giver,
      'receiver', COALESCE(h.receiver, 0)) ORDER BY h.cluster) FROM cuesched.handover h), '[]')`

type instanceRow struct {
	ID      int32       `json:"id"`
	Name    string      `json:"name"`
	AppName string      `json:"app_name"`
	Static  restriction `json:"static"`
	Live    bool        `json:"live"`
}

type clusterRow struct {
	ID       int32  `json:"id"`
	Kind     int    `json:"kind"`
	Facility string `json:"facility"`
	Alloc    string `json:"alloc"`
	AllocTag string `json:"alloc_tag"`
	Bucket   int    `json:"bucket"`
	Owner    int32  `json:"owner"` // 0: none
	Epoch    int64  `json:"epoch"`
}

func (c clusterRow) key() cluster.Key {
	return cluster.Key{Kind: cluster.Kind(c.Kind), Facility: c.Facility, Alloc: c.Alloc, Bucket: c.Bucket}
}

func (c clusterRow) info() clusterInfo { return clusterInfo{Key: c.key(), AllocTag: c.AllocTag} }

type handoverRow struct {
	Cluster  int32 `json:"cluster"`
	Giver    int32 `json:"giver"`
	Receiver int32 `json:"receiver"` // 0: nobody may own it
}

// snapshot is the coordination tables as one statement saw them.
type snapshot struct {
	Buckets   int
	Instances []instanceRow
	Clusters  []clusterRow
	Handovers []handoverRow
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func readSnapshot(ctx context.Context, q querier) (*snapshot, error) {
	var buckets string
	var inst, clus, hand []byte
	if err := q.QueryRow(ctx, snapshotSQL).Scan(&buckets, &inst, &clus, &hand); err != nil {
		return nil, fmt.Errorf("read ownership tables: %w", err)
	}
	s := &snapshot{}
	n, err := strconv.Atoi(buckets)
	if err != nil || n < 1 {
		return nil, fmt.Errorf("setting tag_buckets %q is not a positive whole number", buckets)
	}
	s.Buckets = n
	for _, p := range []struct {
		what string
		raw  []byte
		into any
	}{{"instances", inst, &s.Instances}, {"clusters", clus, &s.Clusters}, {"handovers", hand, &s.Handovers}} {
		if err := json.Unmarshal(p.raw, p.into); err != nil {
			return nil, fmt.Errorf("decode %s: %w", p.what, err)
		}
	}
	return s, nil
}

// handover returns the pending handover of a cluster.
func (s *snapshot) handover(clusterID int32) (handoverRow, bool) {
	for _, h := range s.Handovers {
		if h.Cluster == clusterID {
			return h, true
		}
	}
	return handoverRow{}, false
}

// claims are the clusters instance id owns in s, by key and by id, less
// those it is asked to hand over (giving).
func (s *snapshot) claims(id int32) (byKey map[cluster.Key]Claim, byID map[int32]Claim, giving []int32) {
	byKey, byID = map[cluster.Key]Claim{}, map[int32]Claim{}
	for _, row := range s.Clusters {
		if row.Owner != id {
			continue
		}
		if h, ok := s.handover(row.ID); ok && h.Giver == id {
			giving = append(giving, row.ID)
			continue
		}
		cl := Claim{ID: row.ID, Key: row.key(), Epoch: row.Epoch}
		byKey[cl.Key], byID[cl.ID] = cl, cl
	}
	return byKey, byID, giving
}

func (s *snapshot) live() map[int32]instanceRow {
	out := map[int32]instanceRow{}
	for _, i := range s.Instances {
		if i.Live {
			out[i.ID] = i
		}
	}
	return out
}

// items turns the clusters into balancing items among the live instances,
// a pending handover's receiver counting as the owner. weights may be nil.
func (s *snapshot) items(live map[int32]instanceRow, weights map[cluster.Key]int64) []Item {
	items := make([]Item, 0, len(s.Clusters))
	for _, c := range s.Clusters {
		owner := c.Owner
		if h, ok := s.handover(c.ID); ok && h.Giver == c.Owner {
			owner = h.Receiver
		}
		if _, ok := live[owner]; !ok {
			owner = 0
		}
		info, buckets := c.info(), s.Buckets
		items = append(items, Item{ID: c.ID, Key: info.Key.String(), Owner: owner, Weight: weights[info.Key],
			Allowed: func(inst int32) bool {
				r, ok := live[inst]
				return ok && r.Static.covers(info, buckets)
			}})
	}
	return items
}

// renewSQL renews this instance's lease and, in the same statement, ends the
// sessions of instances whose lease has run out (hung but connected): their
// locks go with them and the dead-peer path takes over. Only sessions that
// began before the lease ran out are ended, so an instance that woke up and
// registered again is left alone. An instance that is itself late (its own
// lease had run out: a stall of the database or of the whole machine)
// judges nobody this time. $1 id, $2 lease in ms, $3 own application_name.
const renewSQL = `WITH prev AS (
    SELECT lease_until > now() AS on_time FROM cuesched.instance WHERE id = $1
), renewed AS (
    UPDATE cuesched.instance SET lease_until = now() + $2 * interval '1 millisecond' WHERE id = $1 RETURNING id
), late AS (
    SELECT i.id, i.app_name, i.lease_until FROM cuesched.instance i, prev
    WHERE prev.on_time AND i.id <> $1 AND i.lease_until < now() AND i.app_name <> $3
), ended AS (
    SELECT pg_terminate_backend(a.pid) AS ok FROM late l
    JOIN pg_stat_activity a ON a.application_name = l.app_name AND a.datname = current_database()
    WHERE a.backend_start < l.lease_until AND a.pid <> pg_backend_pid()
)
SELECT (SELECT count(*) FROM renewed), ARRAY(SELECT id FROM late ORDER BY id), (SELECT count(*) FROM ended WHERE ok)`
