// Package grants is the one list of what cuesched's database role needs, and
// nothing more: `cuesched grants` prints it as SQL and `cuesched run` checks
// it at start (package preflight), so the two never disagree.
//
// The list comes from every statement cuesched runs and from Cuebot's
// triggers that fire on what it writes, which run as cuesched's role: a
// frame's state change moves layer_stat and job_stat counts and opens or
// drops its frame_history row (reading config and host). SELECT ... FOR
// UPDATE or FOR SHARE needs UPDATE, and an UPDATE or DELETE with a WHERE
// clause needs SELECT. The REPLICATION attribute, which the change stream
// needs, is checked with the other replication settings (preflight.Replication).
package grants

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// Kind is the kind of object a Grant is on.
type Kind string

const (
	Database Kind = "database"
	Schema   Kind = "schema"
	Table    Kind = "table"
	Sequence Kind = "sequence"
)

// Grant is privileges on one object. Name is schema-qualified for tables and
// sequences; a Database grant is on the database cuesched connects to.
type Grant struct {
	Kind       Kind
	Name       string
	Privileges []string
	Why        string // a comment printed above it
}

var (
	read      = []string{"SELECT"}
	update    = []string{"SELECT", "UPDATE"}
	readWrite = []string{"SELECT", "INSERT", "UPDATE", "DELETE"}
)

// List is what cuesched's role needs, in the order the start-up check names
// the first one missing.
var List = []Grant{
	{Database, "", []string{"CONNECT"}, "connect to Cuebot's database"},
	{Schema, "public", []string{"USAGE"}, "Cuebot's tables"},
	{Table, "public.schema_migrations", read, "the migration version, checked at start"},
	{Table, "public.alloc", read, "host cache, clusters, explain"},
	{Table, "public.facility", read, "clusters, status"},
	{Table, "public.folder", read, "counter recompute, explain"},
	{Table, "public.host_stat", update, "host cache; booking share-locks it (a host taken DOWN waits for it)"},
	{Table, "public.host_tag", read, "host cache, explain"},
	{Table, "public.show", read, "host cache, managed shows"},
	{Table, "public.job", update, "pending work, counters; booking share-locks it (a kill or pause waits for it)"},
	{Table, "public.layer", read, "pending work, booking"},
	{Table, "public.job_env", read, "launching a frame"},
	{Table, "public.layer_env", read, "launching a frame"},
	{Table, "public.limit_record", update, "limits; booking locks them FOR UPDATE"},
	{Table, "public.layer_limit", read, "limits"},
	{Table, "public.config", read, "Cuebot's frame_history trigger, on our bookings"},
	{Table, "public.host", update, "booking: idle resources (locked FOR UPDATE)"},
	{Table, "public.layer_stat", update, "booking locks it; Cuebot's frame trigger moves its counts"},
	{Table, "public.layer_mem", read, "memory from history: the most a layer's frames used"},
	{Table, "public.layer_usage", read, "reservations: the mean run of a layer's finished frames"},
	{Table, "public.job_usage", read, "reservations: the mean run of a job's finished frames"},
	{Table, "public.job_stat", update, "booking locks it; Cuebot's frame trigger moves its counts"},
	{Table, "public.frame", update, "booking: frame RUNNING, or back to WAITING"},
	{Table, "public.proc", readWrite, "booking inserts it, compensation deletes it"},
	{Table, "public.subscription", update, "counters"},
	{Table, "public.layer_resource", update, "counters"},
	{Table, "public.job_resource", update, "counters"},
	{Table, "public.folder_resource", update, "counters"},
	{Table, "public.point", update, "counters"},
	{Table, "public.frame_history", readWrite, "Cuebot's frame_history trigger, on our bookings"},
	{Schema, "cuesched", []string{"USAGE"}, "cuesched's own schema"},
	{Table, "cuesched.setting", read, "deployment settings"},
	{Table, "cuesched.migration", read, "which migration the previous release runs on, checked at start"},
	{Table, "cuesched.instance", readWrite, "instances"},
	{Table, "cuesched.cluster", readWrite, "clusters and their owners"},
	{Table, "cuesched.handover", readWrite, "handovers"},
	{Table, "cuesched.cluster_wait", readWrite, "status"},
	{Table, "cuesched.launch_outbox", readWrite, "the launch outbox"},
	{Table, "cuesched.reservation", readWrite, "reservations: written by their cluster's owner, read by matching and the re-check"},
	{Table, "cuesched.limit_change", read, "when limits were lowered, for the audit"},
	{Sequence, "cuesched.instance_id_seq", []string{"USAGE"}, "instance ids"},
	{Sequence, "cuesched.cluster_id_seq", []string{"USAGE"}, "cluster ids"},
}

// CheckRole says what is wrong with a role name, or nil.
func CheckRole(name string) error {
	if err := checkName("--role", "cuesched's database role", name); err != nil {
		return err
	}
	if strings.HasPrefix(strings.ToLower(name), "pg_") {
		return fmt.Errorf("--role %q: names starting with pg_ are reserved for PostgreSQL's own roles", name)
	}
	return nil
}

// checkName refuses what PostgreSQL would refuse or silently truncate as an
// identifier; anything else is quoted.
func checkName(flag, what, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%s is empty: give the name of %s", flag, what)
	case !utf8.ValidString(name) || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("%s %q: a name must be valid UTF-8 without control characters", flag, name)
	case len(name) > 63:
		return fmt.Errorf("%s %q: a name has at most 63 bytes (PostgreSQL truncates longer ones)", flag, name)
	}
	return nil
}

// SQL is the statements giving role everything in List on database, and,
// with replication (the change stream of --feed events), the REPLICATION
// attribute: to be run as the owner of Cuebot's tables (the ALTER ROLE by a
// superuser).
func SQL(role, database string, replication bool) (string, error) {
	if err := CheckRole(role); err != nil {
		return "", err
	}
	if err := checkName("--database", "Cuebot's database", database); err != nil {
		return "", err
	}
	r := pgx.Identifier{role}.Sanitize()
	var b strings.Builder
	fmt.Fprintf(&b, "-- What cuesched's role %s needs, and nothing more (cuesched grants).\n", r)
	if replication {
		fmt.Fprintf(&b, "-- The change stream needs REPLICATION, which a superuser gives.\n")
		fmt.Fprintf(&b, "ALTER ROLE %s REPLICATION;\n", r)
	}
	for _, g := range List {
		var on string
		switch g.Kind {
		case Database:
			on = "DATABASE " + pgx.Identifier{database}.Sanitize()
		case Schema:
			on = "SCHEMA " + pgx.Identifier{g.Name}.Sanitize()
		default:
			on = strings.ToUpper(string(g.Kind)) + " " + pgx.Identifier(strings.Split(g.Name, ".")).Sanitize()
		}
		fmt.Fprintf(&b, "-- %s\nGRANT %s ON %s TO %s;\n", g.Why, strings.Join(g.Privileges, ", "), on, r)
	}
	return b.String(), nil
}
