package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cuesched/cuesched/internal/testworld/pgcluster"
)

// startPgbouncer runs a pgbouncer in transaction mode in front of cluster c
// on a free loopback port, letting in role (trust, as the cluster does), and
// returns the DSN of database db through it. It is stopped when the test
// ends. The test is skipped, saying what to install, when no pgbouncer
// binary is found.
func startPgbouncer(t *testing.T, c *pgcluster.Cluster, role, db string) string {
	t.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		bin = "/usr/sbin/pgbouncer" // Debian's package puts it off a user's PATH
		if _, err := os.Stat(bin); err != nil {
			t.Skip("pgbouncer is not installed (Debian: apt-get install -y pgbouncer): " +
				"the booking pool cannot be tested through a transaction pooler")
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	// Not t.TempDir: its parent is private to this user, and pgbouncer may
	// run as another.
	dir, err := os.MkdirTemp("", "cuesched-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ini := fmt.Sprintf(`[databases]
* = host=127.0.0.1 port=%d

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = transaction
max_client_conn = 500
default_pool_size = 20
`, c.Port, port, filepath.Join(dir, "userlist.txt"))
	files := map[string]string{"pgbouncer.ini": ini, "userlist.txt": strconv.Quote(role) + ` ""` + "\n"}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	if os.Geteuid() == 0 {
		// pgbouncer refuses to run as root: run it as the cluster's user.
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("pgbouncer cannot run as root and there is no postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	out := newOutput()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start pgbouncer: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("pgbouncer output:\n%s", tail(out.String(), 50))
		}
	})

	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s sslmode=disable", port, role, db)
	waitFor(t, 30*time.Second, "pgbouncer accepting connections", func() bool {
		select {
		case <-done:
			t.Fatalf("pgbouncer exited:\n%s", out.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn+" default_query_exec_mode=exec")
		if err != nil {
			return false
		}
		defer conn.Close(ctx)
		var one int
		return conn.QueryRow(ctx, "SELECT 1").Scan(&one) == nil
	})
	return dsn
}
