// Package pgcluster starts throwaway PostgreSQL clusters from the system's
// binaries, for tests, the demo and benchmarks. It never touches the system's
// own cluster: each cluster lives in a fresh directory with its own port and
// socket directory and is removed when stopped.
//
// A cluster can also get a synchronous streaming standby and fail over to it
// (standby.go).
//
// PostgreSQL refuses to run initdb or the server as root, so when this
// process is root both run as the postgres OS user (runuser) in a directory
// that user owns.
package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ErrNotInstalled is returned when no PostgreSQL server binaries are found.
var ErrNotInstalled = errors.New("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: " +
	"install them (Debian 12: apt-get install -y postgresql-15; any PostgreSQL 15 or newer works) " +
	"or point CUESCHED_PG_BINDIR at their directory")

// Options tune a cluster. The zero value is what tests want.
type Options struct {
	// Settings are extra postgresql.conf lines (name -> value), applied after
	// the defaults below and overriding them.
	Settings map[string]string
	// Log receives the server log path in Cluster.LogPath; nothing else is
	// configurable about logging.

	// From is the data directory of a cluster stopped by Freeze: the new
	// cluster starts from a copy of it, with its databases, instead of a
	// fresh initdb (a file copy rather than a bootstrap and a schema build).
	From string
}

// Cluster is one running throwaway PostgreSQL cluster.
type Cluster struct {
	BinDir  string
	Dir     string // data directory, also the socket directory
	Port    int
	LogPath string
	asUser  string // OS user the server runs as; empty for the current user
	// settings are Options.Settings, which a standby of the cluster
	// (StartStandby) runs with too.
	settings map[string]string
}

// BinDir finds the directory of the server binaries: CUESCHED_PG_BINDIR,
// then `pg_config --bindir`, then the newest /usr/lib/postgresql/*/bin.
func BinDir() (string, error) {
	if d := os.Getenv("CUESCHED_PG_BINDIR"); d != "" {
		if hasServer(d) {
			return d, nil
		}
		return "", fmt.Errorf("CUESCHED_PG_BINDIR=%s: %w", d, ErrNotInstalled)
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if d := strings.TrimSpace(string(out)); hasServer(d) {
			return d, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if hasServer(d) {
			return d, nil
		}
	}
	return "", ErrNotInstalled
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func hasServer(dir string) bool {
	for _, b := range []string{"initdb", "pg_ctl", "postgres"} {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.IsDir() {
			return false
		}
	}
	return true
}

// Start initialises and starts a new cluster. The caller must Stop it.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cuesched-pg-")
	if err != nil {
		return nil, fmt.Errorf("create cluster directory: %w", err)
	}
	c := &Cluster{BinDir: bin, Dir: dir, LogPath: filepath.Join(dir, "server.log"), settings: opts.Settings}
	if os.Geteuid() == 0 {
		c.asUser = "postgres"
		if err := chownTo(dir, c.asUser); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if opts.From != "" {
		err = c.copyFrom(ctx, opts.From)
	} else {
		err = c.initdb(ctx)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// A port picked by the kernel can be taken again before the server binds
	// it; retry a few times rather than fail a test run on that race.
	for attempt := 0; ; attempt++ {
		c.Port, err = freePort()
		if err == nil {
			err = c.writeConf(opts)
		}
		if err == nil {
			err = c.pgctl(ctx, "start", "-w", "-t", "60", "-l", c.LogPath)
		}
		if err == nil {
			return c, nil
		}
		if attempt == 2 {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("start PostgreSQL in %s: %w", dir, err)
		}
	}
}

func chownTo(dir, name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("look up OS user %q to run PostgreSQL as (it comes with the postgresql package): %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return fmt.Errorf("chown %s to %s: %w", dir, name, err)
	}
	return nil
}

func (c *Cluster) command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	path := filepath.Join(c.BinDir, bin)
	if c.asUser != "" {
		return exec.CommandContext(ctx, "runuser", append([]string{"-u", c.asUser, "--", path}, args...)...)
	}
	return exec.CommandContext(ctx, path, args...)
}

func (c *Cluster) run(ctx context.Context, bin string, args ...string) error {
	cmd := c.command(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Dir = c.Dir
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", bin, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

func (c *Cluster) initdb(ctx context.Context) error {
	return c.run(ctx, "initdb", "-D", c.Dir, "-U", "postgres", "-A", "trust", "-E", "UTF8",
		"--locale=C", "--no-sync")
}

// copyFrom fills the cluster's directory with a copy of the frozen data
// directory src, owners and modes kept, without src's server log.
func (c *Cluster) copyFrom(ctx context.Context, src string) error {
	cmd := exec.CommandContext(ctx, "cp", "-a", src+"/.", c.Dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("copy cluster %s: %w\n%s", src, err, strings.TrimSpace(string(out)))
	}
	if err := os.Remove(c.LogPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("copy cluster %s: %w", src, err)
	}
	return nil
}

func (c *Cluster) pgctl(ctx context.Context, args ...string) error {
	return c.run(ctx, "pg_ctl", append(args, "-D", c.Dir)...)
}

// writeConf writes the settings every cuesched cluster needs. Durability
// (fsync, synchronous_commit) stays at PostgreSQL's defaults: benchmarks must
// pay real commit costs.
func (c *Cluster) writeConf(opts Options) error {
	settings := map[string]string{
		"listen_addresses":         "'127.0.0.1'",
		"port":                     strconv.Itoa(c.Port),
		"unix_socket_directories":  quote(c.Dir),
		"wal_level":                "logical",
		"max_replication_slots":    "64",
		"max_wal_senders":          "64",
		"max_connections":          "300",
		"shared_preload_libraries": "'pg_stat_statements'",
		"shared_buffers":           "256MB",
		"max_wal_size":             "4GB",
		"log_line_prefix":          "'%m [%p] app=%a '",
		"log_min_messages":         "warning",
		"wal_sender_timeout":       "30s",
	}
	for k, v := range opts.Settings {
		settings[k] = v
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# written by cuesched's pgcluster; later lines override earlier ones\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, settings[k])
	}
	conf := filepath.Join(c.Dir, "postgresql.auto.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", conf, err)
	}
	hba := "local all all trust\nlocal replication all trust\n" +
		"host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n"
	if err := os.WriteFile(filepath.Join(c.Dir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return fmt.Errorf("write pg_hba.conf: %w", err)
	}
	if c.asUser != "" {
		for _, f := range []string{conf, filepath.Join(c.Dir, "pg_hba.conf")} {
			if err := chownTo(f, c.asUser); err != nil {
				return err
			}
		}
	}
	return nil
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// DSN is a libpq key=value connection string for database db as the
// superuser over loopback TCP.
func (c *Cluster) DSN(db string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=%s sslmode=disable", c.Port, db)
}

// URL is the same connection as a postgres:// URL (for golang-migrate's CLI).
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, db)
}

// StopMode is how pg_ctl stops the server.
type StopMode string

const (
	// Fast terminates every session and stops with a shutdown checkpoint.
	Fast StopMode = "fast"
	// Immediate stops every process at once, as a crash does: the next start
	// recovers from the WAL.
	Immediate StopMode = "immediate"
)

// Restart stops the server (fast mode: sessions are terminated, as a crash of
// the database looks to clients) and starts it again on the same port.
func (c *Cluster) Restart(ctx context.Context) error {
	return c.RestartMode(ctx, Fast)
}

// RestartMode is Restart with the stop mode given.
func (c *Cluster) RestartMode(ctx context.Context, mode StopMode) error {
	if mode != Fast && mode != Immediate {
		return fmt.Errorf("restart: stop mode %q: want %q or %q", mode, Fast, Immediate)
	}
	if err := c.pgctl(ctx, "stop", "-m", string(mode), "-w"); err != nil {
		return err
	}
	return c.pgctl(ctx, "start", "-w", "-t", "60", "-l", c.LogPath)
}

// Freeze stops the server cleanly (a shutdown checkpoint, so a copy needs no
// recovery) and keeps its data directory, for Options.From. The caller
// removes Dir when no cluster is to start from it any more.
func (c *Cluster) Freeze(ctx context.Context) error {
	return c.pgctl(ctx, "stop", "-m", "fast", "-w")
}

// Running reports whether the server is up (its pid file is there).
func (c *Cluster) Running() bool {
	_, err := os.Stat(filepath.Join(c.Dir, "postmaster.pid"))
	return err == nil
}

// Stop stops the server and removes the cluster's directory.
func (c *Cluster) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var err error
	// A server already shut down (Shutdown, a failed-over primary): only
	// its directory is left to remove.
	if c.Running() {
		err = c.pgctl(ctx, "stop", "-m", "immediate", "-w")
	}
	if rmErr := os.RemoveAll(c.Dir); err == nil {
		err = rmErr
	}
	return err
}
