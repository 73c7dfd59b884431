// Package migrations holds cuesched's changes to a Cuebot database as
// golang-migrate SQL pairs (NNNN_name.up.sql / .down.sql). They are embedded
// in the binary and usable as they stand by the migrate CLI:
//
//	migrate -path migrations -database "$DB" up
//
// Both use golang-migrate's default schema_migrations table. The migrations
// never change Cuebot's own rows or its flyway history, and every step has a
// down that removes exactly what its up added.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"

	"github.com/golang-migrate/migrate/v4"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
)

//go:embed *.sql
var files embed.FS

// Status is where a database stands.
type Status struct {
	Version uint // 0: no migration applied
	Dirty   bool // a migration failed half-way; fix by hand, then `migrate force`
	Latest  uint // the newest migration this binary holds
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

// Get reports where the database stands.
func Get(ctx context.Context, dsn string) (Status, error) {
	var st Status
	latest, err := Latest()
	if err != nil {
		return st, err
	}
	st.Latest = latest
	m, done, err := open(ctx, dsn)
	if err != nil {
		return st, err
	}
	defer done()
	st.Version, st.Dirty, err = m.Version()
	if errors.Is(err, migrate.ErrNilVersion) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("migration version: %w", err)
	}
	return st, nil
}

// Latest is the newest migration version embedded in this binary.
func Latest() (uint, error) {
	src, err := iofs.New(files, ".")
	if err != nil {
		return 0, fmt.Errorf("embedded migrations: %w", err)
	}
	defer src.Close()
	v, err := src.First()
	if err != nil {
		return 0, fmt.Errorf("embedded migrations: %w", err)
	}
	for {
		next, err := src.Next(v)
		if err != nil {
			return v, nil
		}
		v = next
	}
}
