package preflight

import (
	"context"
	"fmt"
)

// replicationFacts is what the replication checks look at, read in one
// query.
type replicationFacts struct {
	walLevel       string
	role           string
	canReplicate   bool
	publication    string
	hasPublication bool
	maxSlots       int
	usedSlots      int
	maxSenders     int
	usedSenders    int
}

func readReplicationFacts(ctx context.Context, q Querier, publication string) (replicationFacts, error) {
	f := replicationFacts{publication: publication}
	err := q.QueryRow(ctx, `SELECT current_setting('wal_level'), current_user,
			coalesce((SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), false),
			EXISTS (SELECT FROM pg_publication WHERE pubname = $1),
			current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_replication_slots)::int,
			current_setting('max_wal_senders')::int,
			(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender')::int`, publication).
		Scan(&f.walLevel, &f.role, &f.canReplicate, &f.hasPublication, &f.maxSlots, &f.usedSlots, &f.maxSenders,
			&f.usedSenders)
	if err != nil {
		return f, fmt.Errorf("check replication settings: %w", err)
	}
	return f, nil
}

// Each replication check says in one line what is wrong and what to do.
var (
	checkWALLevel = func(f replicationFacts) error {
		if f.walLevel != "logical" {
			return fmt.Errorf("wal_level is %s, the host cache's replication stream needs logical: "+
				"set wal_level = logical in postgresql.conf and restart PostgreSQL", f.walLevel)
		}
		return nil
	}
	checkRole = func(f replicationFacts) error {
		if !f.canReplicate {
			return fmt.Errorf("role %s lacks the REPLICATION attribute the host cache's replication stream needs: "+
				"ALTER ROLE %s REPLICATION (and allow it replication connections in pg_hba.conf)", f.role, f.role)
		}
		return nil
	}
	checkPublication = func(f replicationFacts) error {
		if !f.hasPublication {
			return fmt.Errorf("publication %s is missing: run `cuesched migrate up` on this database", f.publication)
		}
		return nil
	}
	checkSlots = func(f replicationFacts) error {
		if f.usedSlots >= f.maxSlots {
			return fmt.Errorf("no free replication slot: %d of max_replication_slots = %d in use; "+
				"raise max_replication_slots (restart needed) or drop unused slots", f.usedSlots, f.maxSlots)
		}
		return nil
	}
	checkSenders = func(f replicationFacts) error {
		if f.usedSenders >= f.maxSenders {
			return fmt.Errorf("no free WAL sender: %d of max_wal_senders = %d in use; "+
				"raise max_wal_senders (restart needed)", f.usedSenders, f.maxSenders)
		}
		return nil
	}
	replicationChecks = []func(replicationFacts) error{checkWALLevel, checkRole, checkPublication, checkSlots, checkSenders}
)

// Replication checks that the database can feed the host cache's logical
// replication stream from publication (cdc.Publication): wal_level logical,
// a role allowed to replicate, the publication in place, and a replication
// slot and a WAL sender free for this instance. It returns the first
// problem found.
func Replication(ctx context.Context, q Querier, publication string) error {
	f, err := readReplicationFacts(ctx, q, publication)
	if err != nil {
		return err
	}
	for _, check := range replicationChecks {
		if err := check(f); err != nil {
			return err
		}
	}
	return nil
}
