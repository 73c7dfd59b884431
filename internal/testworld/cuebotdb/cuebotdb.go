// Package cuebotdb holds a Cuebot-compatible database schema for tests, the
// demo and benchmarks: the tables cuesched reads or writes and every table
// their triggers write, with Cuebot's columns, defaults, keys, indexes and
// triggers (catalog/*.tsv is the reference, checked by catalog_test.go), and
// the rows a freshly installed Cuebot holds.
//
// Production never uses it: production is the real Cuebot database.
package cuebotdb

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"

	"github.com/jackc/pgx/v5"
)

var (
	//go:embed tables.sql
	tablesSQL string
	//go:embed functions.sql
	functionsSQL string
	//go:embed triggers.sql
	triggersSQL string
	//go:embed fresh.sql
	freshSQL string
)

// Digest identifies the schema and rows Create builds: a SHA-256 of its SQL.
// Tests key caches of built databases by it.
func Digest() string {
	h := sha256.New()
	for _, sql := range []string{tablesSQL, functionsSQL, triggersSQL, freshSQL} {
		fmt.Fprintf(h, "%d\n%s", len(sql), sql)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Create builds the schema and its fresh rows in the connected database,
// which must be empty, in one transaction.
func Create(ctx context.Context, conn *pgx.Conn) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, part := range []struct{ name, sql string }{
			{"tables", tablesSQL},
			{"functions", functionsSQL},
			{"triggers", triggersSQL},
			{"fresh rows", freshSQL},
		} {
			if _, err := tx.Exec(ctx, part.sql); err != nil {
				return fmt.Errorf("create Cuebot schema (%s): %w", part.name, err)
			}
		}
		return nil
	})
}
