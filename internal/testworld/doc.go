// Package testworld holds, in its sub-packages, the world cuesched is tested
// and demonstrated in: a Cuebot-compatible schema (cuebotdb), farms to seed
// (seed), Cuebot's own writes (cuebotsim), a fake RQD farm (fakerqd),
// throwaway PostgreSQL clusters (pgcluster, pgtest), the audit helpers of
// booking tests (audittest), the farms, views and placer that booking and
// launching tests share (booktest) and headless Chromium for report pages
// (headless).
//
// Production code never imports it: the binary deployed beside Cuebot links
// none of it (internal/archtest fails when it does). Only tests, the
// acceptance tests of internal/e2e and cmd/cuesched-demo use it.
package testworld
