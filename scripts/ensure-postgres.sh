#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries (15 or newer: the publication uses
# column lists) are installed, for the tests and the demo, which run their own
# throwaway clusters and never touch the system's own, pgbouncer, which the
# acceptance test of --feed poll runs in front of one (it is skipped without),
# promtool (Debian's prometheus package), which checks and tests
# deploy/alerts.yaml, and chromium, in which a test loads the demo's HTML
# report headless (both skipped without, but failing under CI=true).
# On Debian as root it installs postgresql-15, pgbouncer, prometheus and
# chromium with apt-get; elsewhere it says exactly what to install.
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

have_promtool() {
	command -v promtool >/dev/null 2>&1
}

have_chromium() {
	command -v chromium >/dev/null 2>&1
}

if have_server && have_pgbouncer && have_promtool && have_chromium; then exit 0; fi

if [ -r /etc/debian_version ] && command -v apt-get >/dev/null 2>&1; then
	missing=()
	have_server || missing+=(postgresql-15)
	have_pgbouncer || missing+=(pgbouncer)
	have_promtool || missing+=(prometheus)
	have_chromium || missing+=(chromium)
	if [ "$(id -u)" -ne 0 ]; then
		if ! have_server; then
			echo "PostgreSQL server binaries are missing: run  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
			exit 1
		fi
		have_pgbouncer || echo "pgbouncer is missing, so the test of --feed poll behind a pooler will be skipped: run  sudo apt-get install -y pgbouncer" >&2
		have_promtool || echo "promtool is missing, so the alert rules' test (deploy) will be skipped: run  sudo apt-get install -y prometheus" >&2
		have_chromium || echo "chromium is missing, so the test loading the demo's report in a browser will be skipped: run  sudo apt-get install -y chromium" >&2
		exit 0
	fi
	echo "installing ${missing[*]} with apt-get (cuesched runs its own throwaway clusters and poolers; the system's are left alone)" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	pkgs=()
	for p in "${missing[@]}"; do [ "$p" = prometheus ] || pkgs+=("$p"); done
	[ ${#pkgs[@]} -eq 0 ] || apt-get install -y -qq "${pkgs[@]}" >/dev/null
	if ! have_promtool; then
		# Only its promtool is wanted: no exporters (recommends), no server.
		apt-get install -y -qq --no-install-recommends prometheus >/dev/null
	fi
	if [[ " ${missing[*]} " == *" pgbouncer "* ]] && command -v systemctl >/dev/null 2>&1; then
		# The tests start pgbouncers of their own: the package's service is not wanted.
		systemctl disable --now pgbouncer >/dev/null 2>&1 || true
	fi
	if [[ " ${missing[*]} " == *" prometheus "* ]]; then
		# The package's own Prometheus server (on :9090) is not wanted.
		if command -v systemctl >/dev/null 2>&1; then
			systemctl disable --now prometheus >/dev/null 2>&1 || true
		elif [ -x /etc/init.d/prometheus ]; then
			/etc/init.d/prometheus stop >/dev/null 2>&1 || true
		fi
	fi
	have_server && exit 0
	echo "postgresql-15 installed but its binaries were not found under /usr/lib/postgresql" >&2
	exit 1
fi

if have_server; then
	have_pgbouncer || echo "pgbouncer is missing, so the test of --feed poll behind a pooler will be skipped: install your platform's pgbouncer package" >&2
	have_promtool || echo "promtool is missing, so the alert rules' test (deploy) will be skipped: install your platform's prometheus package (or put promtool on PATH)" >&2
	have_chromium || echo "chromium is missing, so the test loading the demo's report in a browser will be skipped: install your platform's chromium package" >&2
	exit 0
fi

echo "PostgreSQL server binaries (initdb, pg_ctl, postgres; version 15 or newer, with pg_stat_statements and uuid-ossp) are missing." >&2
echo "Install your platform's PostgreSQL server package (e.g. postgresql15-server and postgresql15-contrib)," >&2
echo "then point CUESCHED_PG_BINDIR at the directory holding initdb if it is not on the usual paths." >&2
exit 1
