package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// A failover (issue 12): a cluster gets a streaming standby that it waits
// for at every commit (synchronous_standby_names), the primary is stopped and
// the standby promoted. Clients name both servers in one DSN (MultiHostDSN)
// and find whichever accepts writes.

// StartStandby starts a streaming standby of the running cluster c from a
// base backup of it, on port (0: a free one), and makes it c's synchronous
// standby: once StartStandby returns, c acknowledges no commit the standby
// has not flushed, so a promoted standby has every commit a client saw. name
// is the standby's application_name on c, the one synchronous_standby_names
// gives. The standby runs with c's Options.Settings; the caller must Stop it.
func (c *Cluster) StartStandby(ctx context.Context, name string, port int) (*Cluster, error) {
	dir, err := os.MkdirTemp("", "cuesched-pg-")
	if err != nil {
		return nil, fmt.Errorf("create standby directory: %w", err)
	}
	s := &Cluster{BinDir: c.BinDir, Dir: dir, LogPath: filepath.Join(dir, "server.log"), asUser: c.asUser,
		settings: c.settings}
	if err := s.startStandby(ctx, c, name, port); err != nil {
		if s.Running() {
			s.pgctl(context.Background(), "stop", "-m", "immediate", "-w")
		}
		// The standby's log says why it did not start; its directory goes.
		if log, readErr := os.ReadFile(s.LogPath); readErr == nil {
			err = fmt.Errorf("%w\n%s", err, tailLines(string(log), 10))
		}
		os.RemoveAll(dir)
		return nil, fmt.Errorf("standby %s of the cluster on port %d: %w", name, c.Port, err)
	}
	return s, nil
}

func (s *Cluster) startStandby(ctx context.Context, primary *Cluster, name string, port int) error {
	if s.asUser != "" {
		if err := chownTo(s.Dir, s.asUser); err != nil {
			return err
		}
	}
	// --no-sync: a throwaway cluster, as initdb's; -c fast: no wait for the
	// primary's next checkpoint.
	if err := s.run(ctx, "pg_basebackup", "-D", s.Dir, "-d", fmt.Sprintf("host=127.0.0.1 port=%d user=postgres",
		primary.Port), "-X", "stream", "-c", "fast", "--no-sync"); err != nil {
		return err
	}
	// The primary's log and socket lock files (its data directory is its
	// socket directory) came with the copy: a lock file of the port the
	// standby takes would keep it from starting.
	stale, _ := filepath.Glob(filepath.Join(s.Dir, ".s.PGSQL.*"))
	for _, f := range append(stale, s.LogPath) {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	signal := filepath.Join(s.Dir, "standby.signal")
	if err := os.WriteFile(signal, nil, 0o600); err != nil {
		return fmt.Errorf("write standby.signal: %w", err)
	}
	if s.asUser != "" {
		if err := chownTo(signal, s.asUser); err != nil {
			return err
		}
	}
	settings := maps.Clone(s.settings)
	if settings == nil {
		settings = map[string]string{}
	}
	settings["primary_conninfo"] = quote(fmt.Sprintf("host=127.0.0.1 port=%d user=postgres application_name=%s",
		primary.Port, name))
	s.settings = settings
	if err := s.startAt(ctx, port); err != nil {
		return err
	}
	// Only now that the standby streams does the primary wait for it: set
	// earlier, every commit would hang until it connects.
	if err := primary.psql(ctx, "ALTER SYSTEM SET synchronous_standby_names = "+quote(`"`+name+`"`)); err != nil {
		return err
	}
	if err := primary.psql(ctx, "SELECT pg_reload_conf()"); err != nil {
		return err
	}
	return primary.waitSync(ctx, name)
}

// startAt writes the configuration and starts the server on port, or on a
// free port (retried: one picked can be taken before the server binds it).
func (s *Cluster) startAt(ctx context.Context, port int) error {
	opts := Options{Settings: s.settings}
	for attempt := 0; ; attempt++ {
		var err error
		s.Port = port
		if port == 0 {
			s.Port, err = freePort()
		}
		if err == nil {
			err = s.writeConf(opts)
		}
		if err == nil {
			err = s.pgctl(ctx, "start", "-w", "-t", "60", "-l", s.LogPath)
		}
		if err == nil || port != 0 || attempt == 2 {
			return err
		}
	}
}

// waitSync waits until the standby name streams from c as its synchronous
// standby.
func (c *Cluster) waitSync(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	q := "SELECT count(*) FROM pg_stat_replication WHERE application_name = " + quote(name) +
		" AND state = 'streaming' AND sync_state = 'sync'"
	for {
		out, err := c.query(ctx, q)
		if err == nil && out == "1" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s to stream as the synchronous standby: %w (last: %q, %v)", name, ctx.Err(), out, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Promote makes the standby a primary and waits until it accepts writes.
func (c *Cluster) Promote(ctx context.Context) error {
	return c.pgctl(ctx, "promote", "-w", "-t", "60")
}

// Shutdown stops the server in mode (smart, fast or immediate) and keeps its
// directory: a primary that fails over. Stop still removes it.
func (c *Cluster) Shutdown(ctx context.Context, mode string) error {
	return c.pgctl(ctx, "stop", "-m", mode, "-w")
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// psql runs sql on the cluster's postgres database.
func (c *Cluster) psql(ctx context.Context, sql string) error {
	_, err := c.query(ctx, sql)
	return err
}

// query runs sql on the cluster's postgres database and returns its output,
// unaligned and without headers.
func (c *Cluster) query(ctx context.Context, sql string) (string, error) {
	cmd := c.command(ctx, "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
		"-p", strconv.Itoa(c.Port), "-U", "postgres", "-d", "postgres", "-c", sql)
	cmd.Dir = c.Dir
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			stderr = strings.TrimSpace(string(ee.Stderr))
		}
		return "", fmt.Errorf("psql -c %q: %w %s", sql, err, stderr)
	}
	return strings.TrimSpace(string(out)), nil
}

// MultiHostDSN is a libpq key=value connection string for database db as the
// superuser over loopback TCP, naming a server at each port: a client
// connects to the first that accepts writes (target_session_attrs), so it
// follows a failover among them.
func MultiHostDSN(db string, ports ...int) string {
	hosts := make([]string, len(ports))
	ps := make([]string, len(ports))
	for i, p := range ports {
		hosts[i], ps[i] = "127.0.0.1", strconv.Itoa(p)
	}
	return fmt.Sprintf("host=%s port=%s user=postgres dbname=%s sslmode=disable target_session_attrs=read-write",
		strings.Join(hosts, ","), strings.Join(ps, ","), db)
}
