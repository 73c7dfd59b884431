// Package migrations holds cuesched's changes to a Cuebot database as
// golang-migrate SQL pairs (NNNN_name.up.sql / .down.sql). They are embedded
// in the binary and usable as they stand by the migrate CLI:
//
//	migrate -path migrations -database "$DB" up
//
// Both use golang-migrate's default schema_migrations table. The migrations
// never change Cuebot's own rows or its flyway history, and every step has a
// down that removes exactly what its up added.
//
// From 0011 on, every migration ends by recording in cuesched.migration
// whether the release before it runs on the schema it leaves (see Mark), in
// one fixed form that this package also reads from the embedded files:
//
//	INSERT INTO cuesched.migration (version, compatible, why) VALUES
//	    (12, true, 'adds ..., which the release before it does not read');
//
// and its down deletes that row.
package migrations

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
)

//go:embed *.sql
var files embed.FS

// Status is where a database stands.
type Status struct {
	Version uint // 0: no migration applied
	Dirty   bool // a migration failed half-way; fix by hand, then `migrate force`
	Latest  uint // the newest migration this binary holds
	// Recorded is what the applied migrations recorded in cuesched.migration,
	// by version, including those of migrations newer than this binary's.
	Recorded map[uint]Mark
}

// Mark is one migration's word on the release before it.
type Mark struct {
	// Compatible: the release before this migration runs on the schema it
	// leaves, beside the release that brings it, so replicas may be replaced
	// one at a time after it is applied.
	Compatible bool
	Why        string
}

// open returns a migrator on dsn (a libpq URL or key=value string) and a
// closer for it.
func open(ctx context.Context, dsn string) (*migrate.Migrate, func(), error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, nil, fmt.Errorf("open database: %w", err)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("connect: %w", err)
	}
	driver, err := migratepgx.WithInstance(db, &migratepgx.Config{})
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("migration driver: %w", err)
	}
	src, err := iofs.New(files, ".")
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("embedded migrations: %w", err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "pgx5", driver)
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("migrator: %w", err)
	}
	// A driver made WithInstance does not close the *sql.DB it was given.
	return m, func() { m.Close(); db.Close() }, nil
}

// Up applies every migration not yet applied.
func Up(ctx context.Context, dsn string) error {
	m, done, err := open(ctx, dsn)
	if err != nil {
		return err
	}
	defer done()
	if err := m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("migrate up: %w", err)
	}
	return nil
}

// Down rolls back every applied migration.
func Down(ctx context.Context, dsn string) error {
	m, done, err := open(ctx, dsn)
	if err != nil {
		return err
	}
	defer done()
	if err := m.Down(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("migrate down: %w", err)
	}
	return nil
}

// Force records version as applied and clean without running anything
// (golang-migrate's force): the way out of a dirty database once it has been
// fixed by hand. Version 0 records that none is applied.
func Force(ctx context.Context, dsn string, version uint) error {
	versions, err := versions()
	if err != nil {
		return err
	}
	if version != 0 && !slices.Contains(versions, version) {
		return fmt.Errorf("force: there is no migration %d (this binary holds 1 to %d)", version, versions[len(versions)-1])
	}
	m, done, err := open(ctx, dsn)
	if err != nil {
		return err
	}
	defer done()
	v := int(version)
	if version == 0 {
		v = database.NilVersion
	}
	if err := m.Force(v); err != nil {
		return fmt.Errorf("migrate force %d: %w", version, err)
	}
	return nil
}

// Querier is a pgx connection, pool or transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Read reports where the database stands and, unlike opening golang-migrate
// (which creates its table as it opens), changes nothing.
func Read(ctx context.Context, q Querier) (Status, error) {
	var st Status
	latest, err := Latest()
	if err != nil {
		return st, err
	}
	st.Latest = latest
	// golang-migrate keeps its table in the connection's current schema; a
	// regclass prints as a quoted name that is safe to put in SQL.
	var table *string
	if err := q.QueryRow(ctx, `SELECT to_regclass(quote_ident(current_schema()) || '.schema_migrations')::text`).
		Scan(&table); err != nil {
		return st, fmt.Errorf("find schema_migrations: %w", err)
	}
	if table == nil {
		return st, nil
	}
	if st.Recorded, err = readMarks(ctx, q); err != nil {
		return st, err
	}
	var version int64
	err = q.QueryRow(ctx, `SELECT version, dirty FROM `+*table+` LIMIT 1`).Scan(&version, &st.Dirty)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return st, nil
	case err != nil:
		return st, fmt.Errorf("read %s: %w", *table, err)
	}
	// A negative version is golang-migrate's "none applied" (kept when a
	// roll back to nothing failed half-way, dirty).
	if version > 0 {
		st.Version = uint(version)
	}
	return st, nil
}

// readMarks reads cuesched.migration, or nothing before 0011 made it.
func readMarks(ctx context.Context, q Querier) (map[uint]Mark, error) {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regclass('cuesched.migration') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, fmt.Errorf("find cuesched.migration: %w", err)
	}
	if !exists {
		return nil, nil
	}
	// One row of JSON, as a Querier has no Query: the table holds a row per
	// migration, a few kilobytes.
	var marks map[uint]Mark
	if err := q.QueryRow(ctx, `SELECT coalesce(jsonb_object_agg(version, jsonb_build_object('Compatible', compatible, 'Why', why)), '{}')
		FROM cuesched.migration`).Scan(&marks); err != nil {
		return nil, fmt.Errorf("read cuesched.migration: %w", err)
	}
	return marks, nil
}

// Migration is one migration this binary holds.
type Migration struct {
	Version uint
	Name    string // from its file name: 0011_compatibility is "compatibility"
	Mark    Mark
	Marked  bool // an embedded file records its mark (0011 those before it, every later one its own)
}

// markInsert is the one statement that records marks; markRow is one row of
// its VALUES, the text a standard SQL string (a quote in it doubled).
var (
	markInsert = "INSERT INTO cuesched.migration (version, compatible, why) VALUES"
	markRow    = regexp.MustCompile(`^\s*\(\s*(\d+)\s*,\s*(true|false)\s*,\s*'((?:[^']|'')*)'\s*\)\s*([,;])`)
)

// parseMarks reads the marks an up file records: none when it has no
// markInsert, an error when the statement does not have the fixed form.
func parseMarks(name, sql string) (map[uint]Mark, error) {
	i := strings.Index(sql, markInsert)
	if i < 0 {
		return nil, nil
	}
	if strings.Contains(sql[i+len(markInsert):], markInsert) {
		return nil, fmt.Errorf("%s: records its marks in more than one statement", name)
	}
	rest := sql[i+len(markInsert):]
	marks := map[uint]Mark{}
	for {
		m := markRow.FindStringSubmatch(rest)
		if m == nil {
			return nil, fmt.Errorf("%s: a row of %q is not (VERSION, true|false, 'why')", name, markInsert)
		}
		v, err := strconv.ParseUint(m[1], 10, 0)
		if err != nil {
			return nil, fmt.Errorf("%s: version %s: %w", name, m[1], err)
		}
		marks[uint(v)] = Mark{Compatible: m[2] == "true", Why: strings.ReplaceAll(m[3], "''", "'")}
		rest = rest[len(m[0]):]
		if m[4] == ";" {
			return marks, nil
		}
	}
}

// Migrations lists the migrations this binary holds, oldest first, each
// with the mark recorded for it by the embedded files (its own, or 0011's
// for those before it).
func Migrations() ([]Migration, error) {
	ups, err := fs.Glob(files, "*.up.sql")
	if err != nil {
		return nil, fmt.Errorf("embedded migrations: %w", err)
	}
	var out []Migration
	marks := map[uint]Mark{}
	for _, f := range ups {
		num, name, _ := strings.Cut(strings.TrimSuffix(path.Base(f), ".up.sql"), "_")
		v, err := strconv.ParseUint(num, 10, 0)
		if err != nil {
			return nil, fmt.Errorf("embedded migration %s: no version", f)
		}
		b, err := files.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("embedded migrations: %w", err)
		}
		ms, err := parseMarks(f, string(b))
		if err != nil {
			return nil, err
		}
		for mv, m := range ms {
			marks[mv] = m
		}
		out = append(out, Migration{Version: uint(v), Name: name})
	}
	slices.SortFunc(out, func(a, b Migration) int { return int(a.Version) - int(b.Version) })
	for i := range out {
		out[i].Mark, out[i].Marked = marks[out[i].Version]
	}
	return out, nil
}

// Digest identifies the embedded migrations by their content: a SHA-256 of
// every file's name and bytes. Tests key caches of migrated databases by it.
func Digest() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(files, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := files.ReadFile(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %d\n", path, len(b))
		h.Write(b)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("embedded migrations: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Latest is the newest migration version embedded in this binary.
func Latest() (uint, error) {
	vs, err := versions()
	if err != nil {
		return 0, err
	}
	return vs[len(vs)-1], nil
}

// versions lists the migration versions embedded in this binary, oldest
// first.
func versions() ([]uint, error) {
	src, err := iofs.New(files, ".")
	if err != nil {
		return nil, fmt.Errorf("embedded migrations: %w", err)
	}
	defer src.Close()
	v, err := src.First()
	if err != nil {
		return nil, fmt.Errorf("embedded migrations: %w", err)
	}
	out := []uint{v}
	for {
		next, err := src.Next(v)
		if err != nil {
			return out, nil
		}
		out = append(out, next)
		v = next
	}
}
