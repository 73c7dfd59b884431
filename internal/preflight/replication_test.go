package preflight

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cuesched/cuesched/internal/testworld/pgcluster"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
)

const pub = "cuesched_cache"

func TestReplicationChecks(t *testing.T) {
	ok := replicationFacts{walLevel: "logical", role: "cuesched", canReplicate: true, publication: pub,
		hasPublication: true, maxSlots: 10, usedSlots: 9, maxSenders: 10, usedSenders: 9}
	for _, tc := range []struct {
		name string
		edit func(*replicationFacts)
		want string // "" for no error, else a part of the message
	}{
		{"all fine", func(*replicationFacts) {}, ""},
		{"wal_level replica", func(f *replicationFacts) { f.walLevel = "replica" }, "wal_level is replica"},
		{"role without REPLICATION", func(f *replicationFacts) { f.canReplicate = false }, "ALTER ROLE cuesched REPLICATION"},
		{"publication missing", func(f *replicationFacts) { f.hasPublication = false }, "cuesched migrate up"},
		{"slots used up", func(f *replicationFacts) { f.usedSlots = 10 }, "no free replication slot"},
		{"WAL senders used up", func(f *replicationFacts) { f.usedSenders = 10 }, "no free WAL sender"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := ok
			tc.edit(&f)
			var err error
			for _, c := range replicationChecks {
				if err = c(f); err != nil {
					break
				}
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			case err != nil && strings.Contains(err.Error(), "\n"):
				t.Fatalf("not one line: %q", err)
			}
		})
	}
}

func TestReplicationOnRealDatabases(t *testing.T) {
	ctx := context.Background()
	db := pgtest.NewDB(t)
	if err := Replication(ctx, db.Pool, pub); err != nil {
		t.Fatalf("a migrated database on a logical cluster: %v", err)
	}

	bare := pgtest.NewDB(t, pgtest.Cuebot)
	if err := Replication(ctx, bare.Pool, pub); err == nil || !strings.Contains(err.Error(), "publication cuesched_cache is missing") {
		t.Fatalf("no migrations: %v", err)
	}

	role := fmt.Sprintf("norepl_%d", time.Now().UnixNano())
	if _, err := db.Pool.Exec(ctx, "CREATE ROLE "+role+" LOGIN"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Pool.Exec(context.Background(), "DROP ROLE IF EXISTS "+role) })
	conn, err := pgx.Connect(ctx, db.DSN+" user="+role)
	if err != nil {
		t.Fatal(err)
	}
	err = Replication(ctx, conn, pub)
	conn.Close(ctx)
	if err == nil || !strings.Contains(err.Error(), "role "+role+" lacks the REPLICATION attribute") {
		t.Fatalf("role without REPLICATION: %v", err)
	}
}

// TestReplicationOnAShortCluster runs a cluster of its own with wal_level
// replica and two slots and WAL senders, and uses them up.
func TestReplicationOnAShortCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Settings: map[string]string{
		"wal_level": "replica", "max_replication_slots": "2", "max_wal_senders": "2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop() })
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := Replication(ctx, conn, pub); err == nil || !strings.Contains(err.Error(), "wal_level is replica") {
		t.Fatalf("wal_level replica: %v", err)
	}
	facts := func() replicationFacts {
		f, err := readReplicationFacts(ctx, conn, pub)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	if err := checkSlots(facts()); err != nil {
		t.Fatalf("slots free: %v", err)
	}
	for i := range 2 {
		if _, err := conn.Exec(ctx, fmt.Sprintf("SELECT pg_create_physical_replication_slot('full_%d')", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := checkSlots(facts()); err == nil || !strings.Contains(err.Error(), "no free replication slot") {
		t.Fatalf("slots used up: %v", err)
	}
	if err := checkSenders(facts()); err != nil {
		t.Fatalf("senders free: %v", err)
	}
	for range 2 {
		cfg, err := pgconn.ParseConfig(c.DSN("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.RuntimeParams["replication"] = "true"
		rc, err := pgconn.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close(context.Background())
	}
	if err := checkSenders(facts()); err == nil || !strings.Contains(err.Error(), "no free WAL sender") {
		t.Fatalf("senders used up: %v", err)
	}
}
