#!/usr/bin/env bash
# cpuwall CMD...: runs CMD, then prints its wall time and the CPU time the
# whole machine was busy meanwhile (every process, PostgreSQL's servers
# included, which time(1) misses: pg_ctl detaches them). For figures in
# BENCHMARKS.md, on an otherwise quiet machine.
set -u
read -r _ u n s _ _ x y z _ < /proc/stat
b0=$((u + n + s + x + y + z))
t0=$(date +%s.%N)
"$@"
rc=$?
read -r _ u n s _ _ x y z _ < /proc/stat
b1=$((u + n + s + x + y + z))
t1=$(date +%s.%N)
echo "cpuwall: rc=$rc wall=$(echo "$t1 - $t0" | bc) s busy_cpu=$(((b1 - b0) / $(getconf CLK_TCK))) s" >&2
exit $rc
