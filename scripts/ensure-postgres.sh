#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries (15 or newer: the publication uses
# column lists) are installed, for the tests and the demo, which run their own
# throwaway clusters and never touch the system's own. On Debian as root it
# installs postgresql-15 with apt-get; elsewhere it says exactly what to
# install.
set -euo pipefail

have_server() {
	if [ -n "${CUESCHED_PG_BINDIR:-}" ] && [ -x "$CUESCHED_PG_BINDIR/initdb" ]; then return 0; fi
	for d in /usr/lib/postgresql/*/bin; do
		v=$(basename "$(dirname "$d")")
		if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ "${v%%.*}" -ge 15 ] 2>/dev/null; then return 0; fi
	done
	command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]
}

if have_server; then exit 0; fi

if [ -r /etc/debian_version ] && command -v apt-get >/dev/null 2>&1; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "PostgreSQL server binaries are missing: run  sudo apt-get update && sudo apt-get install -y postgresql-15" >&2
		exit 1
	fi
	echo "installing postgresql-15 with apt-get (cuesched runs its own throwaway clusters; the system cluster is left alone)" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq postgresql-15 >/dev/null
	have_server && exit 0
	echo "postgresql-15 installed but its binaries were not found under /usr/lib/postgresql" >&2
	exit 1
fi

echo "PostgreSQL server binaries (initdb, pg_ctl, postgres; version 15 or newer, with pg_stat_statements and uuid-ossp) are missing." >&2
echo "Install your platform's PostgreSQL server package (e.g. postgresql15-server and postgresql15-contrib)," >&2
echo "then point CUESCHED_PG_BINDIR at the directory holding initdb if it is not on the usual paths." >&2
exit 1
