package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-migrate/migrate/v4"

	"github.com/cuesched/cuesched/internal/testworld/audittest"
	"github.com/cuesched/cuesched/internal/testworld/pgtest"
	"github.com/cuesched/cuesched/internal/testworld/seed"
	"github.com/cuesched/cuesched/migrations"
)

// migrateAhead applies to db (at this binary's latest migration L) the
// migrations L+1, L+2, ... whose up files are ups, with golang-migrate and
// this repository's files: the next release's migrations, as its `migrate
// up` would apply them.
func migrateAhead(t *testing.T, db *pgtest.DB, ups ...string) {
	t.Helper()
	latest, err := migrations.Latest()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ours, err := filepath.Glob("../../migrations/*.sql")
	if err != nil || len(ours) == 0 {
		t.Fatalf("migrations: %v %v", ours, err)
	}
	for _, f := range ours {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, up := range ups {
		v := latest + 1 + uint(i)
		name := filepath.Join(dir, fmt.Sprintf("%04d_next_%d", v, v))
		if err := os.WriteFile(name+".up.sql", []byte(up), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name+".down.sql", []byte("SELECT 1;"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m, err := migrate.New("file://"+dir, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Up(); err != nil {
		t.Fatalf("migrate up to %d: %v", latest+uint(len(ups)), err)
	}
}

// nextMigration is an up file of migration v: a table the release before it
// never reads, and its mark.
func nextMigration(v uint, compatible bool) string {
	return fmt.Sprintf(`CREATE TABLE cuesched.next_%d (id integer PRIMARY KEY);
INSERT INTO cuesched.migration (version, compatible, why) VALUES
    (%d, %t, 'adds cuesched.next_%d, a test''s table');
`, v, v, compatible, v)
}

// This binary is the previous release of a crafted next one: it runs on the
// next release's schema when the next migration records itself compatible
// (it books there, and `migrate status` shows the mark it read), and refuses
// when it does not, when it records nothing, or when two are ahead.
func TestPreviousReleaseOneMigrationAhead(t *testing.T) {
	t.Parallel()
	t.Run("compatible: runs and books", func(t *testing.T) {
		t.Parallel()
		db := pgtest.NewDB(t)
		latest, err := migrations.Latest()
		if err != nil {
			t.Fatal(err)
		}
		next := latest + 1
		migrateAhead(t, db, nextMigration(next, true))
		code, out := cli(t, nil, "migrate", "status", "--db", db.URL)
		want := regexp.MustCompile(fmt.Sprintf(`(?m)^%04d \(newer than this binary\) +yes +yes: adds cuesched.next_%d`, next, next))
		if code != 0 || !strings.Contains(out, fmt.Sprintf("at version %d of %d", next, latest)) || !want.MatchString(out) {
			t.Errorf("migrate status exited %d, want 0 with %s:\n%s", code, want, out)
		}
		if _, err := seed.Load(t.Context(), db.Pool, &seed.Farm{
			Hosts: []seed.Host{{Name: "127.10.0.1", Alloc: "local.general", Cores: 800, Mem: 32 * seed.GB}},
			Shows: []seed.Show{{Name: "managed", Managed: true,
				Subscriptions: []seed.Subscription{{Alloc: "local.general", Size: 800, Burst: 800}}}},
			Jobs: []seed.Job{{Name: "after-upgrade", Show: "managed",
				Layers: []seed.Layer{{Name: "render", Frames: 4, Cores: 100, Mem: seed.GB}}}},
		}, 7); err != nil {
			t.Fatal(err)
		}
		run := startRun(t, db)
		waitFor(t, time.Minute, "the four frames booked", func() bool {
			run.alive(t)
			var n int
			if err := db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM frame WHERE str_state = 'RUNNING'`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n == 4
		})
		run.stop(t)
		if want := "one ahead of this binary's, compatible with it"; !strings.Contains(run.out.String(), want) {
			t.Errorf("run did not log %q:\n%s", want, run.out.String())
		}
		audittest.Clean(t, db.Pool)
	})
	for _, tc := range []struct {
		name string
		ups  func(next uint) []string
		want func(latest uint) string
	}{
		{"not compatible", func(next uint) []string { return []string{nextMigration(next, false)} },
			func(l uint) string {
				return fmt.Sprintf("at version %d, one ahead of this binary's %d, and migration %d is not compatible with the release before it "+
					"(adds cuesched.next_%d, a test's table): stop this release's instances and run the cuesched that applied it", l+1, l, l+1, l+1)
			}},
		{"no mark", func(next uint) []string { return []string{fmt.Sprintf("CREATE TABLE cuesched.next_%d ();", next)} },
			func(l uint) string {
				return fmt.Sprintf("at version %d, one ahead of this binary's %d, and migration %d records no word on the release before it",
					l+1, l, l+1)
			}},
		{"two ahead, both compatible", func(next uint) []string {
			return []string{nextMigration(next, true), nextMigration(next+1, true)}
		}, func(l uint) string {
			return fmt.Sprintf("at version %d, 2 ahead of this binary's %d: an instance runs at most one migration behind the database; "+
				"run the cuesched that applied them", l+2, l)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := pgtest.NewDB(t)
			latest, err := migrations.Latest()
			if err != nil {
				t.Fatal(err)
			}
			migrateAhead(t, db, tc.ups(latest+1)...)
			want := tc.want(latest)
			// run refuses before it starts anything; status (and explain)
			// make the same check.
			for _, args := range [][]string{
				{"run", "--db", db.URL, "--dry-run", "--metrics-addr", "127.0.0.1:0"},
				{"status", "--db", db.URL},
			} {
				code, out := cli(t, nil, args...)
				if code != 1 || !strings.Contains(out, want) || errorLines(out, args[0]) != 1 {
					t.Errorf("%s exited %d, want 1 and one line with %q:\n%s", args[0], code, want, out)
				}
			}
		})
	}
}

// The previous release's check on this release's schema, the binary's
// version given: migration 0011 records itself not compatible (the release
// before it predates the marks), a database behind is told to migrate up,
// and a dirty one what to force.
func TestMigrationsRunnable(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t)
	st, err := migrations.Read(t.Context(), db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != st.Latest || st.Latest < 11 {
		t.Fatalf("a fresh database at version %d of %d", st.Version, st.Latest)
	}
	if err := migrationsRunnable(st); err != nil {
		t.Errorf("this release on its own schema: %v", err)
	}
	as := func(latest uint, dirty bool) migrations.Status {
		s := st
		s.Latest, s.Dirty = latest, dirty
		return s
	}
	l := st.Latest
	for _, tc := range []struct {
		name string
		st   migrations.Status
		want string
	}{
		{"migration 11 ahead of release 10", func() migrations.Status {
			s := as(10, false)
			s.Version = 11
			return s
		}(), "at version 11, one ahead of this binary's 10, and migration 11 is not compatible with the release before it (adds these marks;"},
		{"behind", as(l+1, false), fmt.Sprintf("at version %d of %d: run `cuesched migrate up --db ...` first", l, l+1)},
		{"dirty", as(l, true), fmt.Sprintf("dirty: migration %d failed half-way", l)},
		{"dirty, one ahead", as(l-1, true), fmt.Sprintf("dirty: migration %d failed half-way", l)},
	} {
		err := migrationsRunnable(tc.st)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	// Flipped by hand, the mark decides alone.
	if _, err := db.Pool.Exec(t.Context(), `UPDATE cuesched.migration SET compatible = true WHERE version = $1`, l); err != nil {
		t.Fatal(err)
	}
	if st, err = migrations.Read(t.Context(), db.Pool); err != nil {
		t.Fatal(err)
	}
	st.Latest = l - 1
	if err := migrationsRunnable(st); err != nil {
		t.Errorf("release %d on migration %d marked compatible: %v", l-1, l, err)
	}
}

// `migrate status` lists every migration with its mark: from the database
// once applied, from the binary's files before.
func TestMigrateStatusListsMarks(t *testing.T) {
	t.Parallel()
	ms, err := migrations.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		tpl     pgtest.Template
		applied string
	}{{pgtest.Full, "yes"}, {pgtest.Cuebot, "no"}} {
		t.Run(string(tc.tpl), func(t *testing.T) {
			t.Parallel()
			db := pgtest.NewDB(t, tc.tpl)
			code, out := cli(t, nil, "migrate", "status", "--db", db.URL)
			if code != 0 {
				t.Fatalf("migrate status exited %d:\n%s", code, out)
			}
			for _, m := range ms {
				compatible := "no"
				if m.Mark.Compatible {
					compatible = "yes"
				}
				want := regexp.MustCompile(fmt.Sprintf(`(?m)^%04d %s +%s +%s: %s$`, m.Version, m.Name, tc.applied, compatible,
					regexp.QuoteMeta(m.Mark.Why)))
				if !want.MatchString(out) {
					t.Errorf("migrate status lacks %s:\n%s", want, out)
				}
			}
		})
	}
}
