// Package deploy holds the files that deploy and watch cuesched: the
// Dockerfile, the systemd unit, the Kubernetes manifests, the Grafana
// dashboard and the Prometheus alert rules (and the example settings file,
// which internal/config/gen writes and tests). Its tests check each against
// what it deploys (the build step, the settings' defaults, the Kubernetes
// API types, promtool); MetricNames lets a test of a running instance check
// that every metric they read is exported. Production code never imports it.
package deploy
