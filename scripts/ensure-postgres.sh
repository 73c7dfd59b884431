#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries (15 or newer: the publication uses
# column lists) are installed, for the tests and the demo, which run their own
# throwaway clusters and never touch the system's own, pgbouncer, which the
# acceptance test of --feed poll runs in front of one (skipped without), and
# chromium, in which a test loads the demo's HTML report headless (skipped
# without, failed under CI=true). On Debian as root it installs postgresql-15, pgbouncer
# and chromium with apt-get; elsewhere it says exactly what to install.
set -euo pipefail

have_server() {
	if [ -n "${CUESCHED_PG_BINDIR:-}" ] && [ -x "$CUESCHED_PG_BINDIR/initdb" ]; then return 0; fi
	for d in /usr/lib/postgresql/*/bin; do
		v=$(basename "$(dirname "$d")")
		if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ "${v%%.*}" -ge 15 ] 2>/dev/null; then return 0; fi
	done
	command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]
}

have_pgbouncer() {
	command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]
}

have_chromium() {
	command -v chromium >/dev/null 2>&1
}

if have_server && have_pgbouncer && have_chromium; then exit 0; fi

if [ -r /etc/debian_version ] && command -v apt-get >/dev/null 2>&1; then
	missing=()
	have_server || missing+=(postgresql-15)
	have_pgbouncer || missing+=(pgbouncer)
	have_chromium || missing+=(chromium)
	if [ "$(id -u)" -ne 0 ]; then
		if ! have_server; then
			echo "PostgreSQL server binaries are missing: run  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
			exit 1
		fi
		have_pgbouncer || echo "pgbouncer is missing, so the test of --feed poll behind a pooler will be skipped: run  sudo apt-get install -y pgbouncer" >&2
		have_chromium || echo "chromium is missing, so the test loading the demo's report in a browser will be skipped: run  sudo apt-get install -y chromium" >&2
		exit 0
	fi
	echo "installing ${missing[*]} with apt-get (cuesched runs its own throwaway clusters and poolers; the system's are left alone)" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq "${missing[@]}" >/dev/null
	if [[ " ${missing[*]} " == *" pgbouncer "* ]] && command -v systemctl >/dev/null 2>&1; then
		# The tests start pgbouncers of their own: the package's service is not wanted.
		systemctl disable --now pgbouncer >/dev/null 2>&1 || true
	fi
	have_server && exit 0
	echo "postgresql-15 installed but its binaries were not found under /usr/lib/postgresql" >&2
	exit 1
fi

if have_server; then
	have_pgbouncer || echo "pgbouncer is missing, so the test of --feed poll behind a pooler will be skipped: install your platform's pgbouncer package" >&2
	have_chromium || echo "chromium is missing, so the test loading the demo's report in a browser will be skipped: install your platform's chromium package" >&2
	exit 0
fi

echo "PostgreSQL server binaries (initdb, pg_ctl, postgres; version 15 or newer, with pg_stat_statements and uuid-ossp) are missing." >&2
echo "Install your platform's PostgreSQL server package (e.g. postgresql15-server and postgresql15-contrib)," >&2
echo "then point CUESCHED_PG_BINDIR at the directory holding initdb if it is not on the usual paths." >&2
exit 1
