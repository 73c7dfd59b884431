package migrations_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/cuebotsim"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/migrations"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// A site's three roles: the owner of Cuebot's tables applies the migrations;
// Cuebot's application role, with rights on Cuebot's tables only (none on
// schema cuesched), then does everything Cuebot does, and our triggers on
// its tables must let every write through.
func TestCuebotsRoleWritesThroughOurTriggers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t, pgtest.Cuebot)
	owner := db.NewRole(t, "owner", `CREATE ROLE %[1]s LOGIN NOSUPERUSER;
		GRANT CREATE ON DATABASE `+db.Name+` TO %[1]s;
		GRANT CREATE ON SCHEMA public TO %[1]s;
		DO $$
		DECLARE r record;
		BEGIN
			FOR r IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			          WHERE n.nspname = 'public' AND c.relkind = 'r' LOOP
				EXECUTE format('ALTER TABLE public.%%I OWNER TO %[1]s', r.relname);
			END LOOP;
		END $$`)
	if err := migrations.Up(ctx, db.DSN+" user="+owner); err != nil {
		t.Fatalf("migrations applied by the owner of Cuebot's tables: %v", err)
	}
	cuebot := db.NewRole(t, "cuebot", `CREATE ROLE %[1]s LOGIN NOSUPERUSER;
		GRANT USAGE ON SCHEMA public TO %[1]s;
		GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO %[1]s;
		GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO %[1]s`)
	pool, err := pgxpool.New(ctx, db.DSN+" user="+cuebot)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	s, err := seed.Load(ctx, db.Pool, &seed.Farm{
		Hosts: []seed.Host{{Name: "127.10.0.1", Alloc: "local.general", Cores: 1600, Mem: 64 * seed.GB}},
		Shows: []seed.Show{{Name: "managed", Managed: true,
			Subscriptions: []seed.Subscription{{Alloc: "local.general", Size: 100000, Burst: 100000}}}},
	}, 7)
	if err != nil {
		t.Fatal(err)
	}
	host := s.Hosts["127.10.0.1"]
	s.Pool = pool // from here on, every write is Cuebot's role's
	// No cuesched runs here to bring the managed show's counters back after
	// releases, so Cuebot lowers them itself, as an older Cuebot does.
	sim := &cuebotsim.Sim{Pool: pool, Counters: cuebotsim.CuebotCounters}
	k, err := s.Launch(ctx, seed.Job{Name: "by-cuebot", Show: "managed",
		Layers: []seed.Layer{{Name: "render", Frames: 3, Cores: 100, Mem: seed.GB}}})
	if err != nil {
		t.Fatalf("launch: %v", err)
	}
	book := func(frame string) {
		t.Helper()
		if _, err := sim.Book(ctx, k.Frames[frame], host, 100, seed.GB, 0, 0); err != nil {
			t.Fatalf("book %s: %v", frame, err)
		}
	}
	book("0001-render")
	book("0002-render")
	if err := sim.HostReport(ctx, host, 32*seed.GB); err != nil {
		t.Errorf("host report: %v", err)
	}
	if err := sim.Succeed(ctx, k.Frames["0001-render"]); err != nil {
		t.Errorf("completion: %v", err)
	}
	if err := sim.Retry(ctx, k.Frames["0002-render"]); err != nil {
		t.Errorf("retry: %v", err)
	}
	// The job trigger's hint still goes out when Cuebot's role unpauses:
	// listening from here, the unpause is the first to send one.
	listener, err := pgx.Connect(ctx, db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(ctx)
	if _, err := listener.Exec(ctx, "LISTEN cuesched_work"); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct{ name, sql string }{
		{"pause", `UPDATE job SET b_paused = true WHERE pk_job = $1`},
		{"unpause", `UPDATE job SET b_paused = false WHERE pk_job = $1`},
		{"kill: eat the frames", `UPDATE frame SET str_state = 'EATEN', ts_updated = current_timestamp
			WHERE pk_job = $1 AND str_state IN ('WAITING', 'DEPEND')`},
		{"kill: finish the job", `UPDATE job SET str_state = 'FINISHED', ts_stopped = current_timestamp
			WHERE pk_job = $1 AND str_state = 'PENDING'`},
	} {
		if _, err := pool.Exec(ctx, step.sql, k.ID); err != nil {
			t.Errorf("%s: %v", step.name, err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if n, err := listener.WaitForNotification(wctx); err != nil || n.Payload != "job:"+k.ID {
		t.Errorf("after the unpause: notification %v, %v; want job:%s", n, err, k.ID)
	}
	audittest.Clean(t, db.Pool)
}
