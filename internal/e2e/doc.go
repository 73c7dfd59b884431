// Package e2e holds the acceptance tests of `cuesched run` (issue 7): real
// `cuesched run` processes against a throwaway PostgreSQL, driven by the
// seeder and the Cuebot simulator, checked through the database (the only
// signal shared across processes) and the processes' own output, and
// audited at the end. The tests build the binary once per run.
//
// CUESCHED_BENCH=1 runs the long versions (60 s idle, 200-job latency, 20
// kill trials) and logs their figures; CUESCHED_CHAOS=1 repeats the race
// tests many more times, and with -race runs the instances under the race
// detector too (the default suite runs them without it: raceChildren).
//
// The fault suite (faultworld_test.go; faults_test.go, faults_rqd_test.go,
// faults_pg_test.go and faults_failover_test.go: faults of cuesched, RQD and
// PostgreSQL; issue 12) runs instances without --dry-run against a fake RQD
// per host and checks, after each fault case, that every frame succeeded and
// ran once; CUESCHED_CHAOS=1 injects each fault many times.
package e2e
