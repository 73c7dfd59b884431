package deploy

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/cuesched/cuesched/internal/config"
)

// manifests are the decoded documents of deploy/kubernetes.
type manifests struct {
	deployments []*appsv1.Deployment
	pdbs        []*policyv1.PodDisruptionBudget
	services    []*corev1.Service
	monitors    []*monitoringv1.ServiceMonitor
}

// decodeStrict decodes one document into the Kubernetes API type of its
// kind, failing on any field the type does not have.
func (m *manifests) decodeStrict(doc []byte) error {
	var tm struct{ APIVersion, Kind string }
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	var obj any
	switch tm.APIVersion + " " + tm.Kind {
	case "apps/v1 Deployment":
		d := &appsv1.Deployment{}
		m.deployments, obj = append(m.deployments, d), d
	case "policy/v1 PodDisruptionBudget":
		p := &policyv1.PodDisruptionBudget{}
		m.pdbs, obj = append(m.pdbs, p), p
	case "v1 Service":
		s := &corev1.Service{}
		m.services, obj = append(m.services, s), s
	case "monitoring.coreos.com/v1 ServiceMonitor":
		s := &monitoringv1.ServiceMonitor{}
		m.monitors, obj = append(m.monitors, s), s
	default:
		return fmt.Errorf("apiVersion %q kind %q: not a kind this test knows", tm.APIVersion, tm.Kind)
	}
	return yaml.UnmarshalStrict(doc, obj)
}

func loadManifests(t *testing.T) *manifests {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no kubernetes/*.yaml (%v)", err)
	}
	m := &manifests{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(data, []byte("\n---")) {
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			if err := m.decodeStrict(doc); err != nil {
				t.Errorf("%s document %d: %v", f, i+1, err)
			}
		}
	}
	return m
}

// TestStrictDecodeRefusesUnknownFields: the decoder the manifests go
// through fails on a misspelt field.
func TestStrictDecodeRefusesUnknownFields(t *testing.T) {
	t.Parallel()
	for _, doc := range []string{
		"apiVersion: apps/v1\nkind: Deployment\nspec:\n  replica: 3\n",
		"apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nspec:\n  endpoints:\n    - prot: metrics\n",
	} {
		if err := (&manifests{}).decodeStrict([]byte(doc)); err == nil || !strings.Contains(err.Error(), "unknown field") {
			t.Errorf("decoding %q: %v, want an unknown field error", doc, err)
		}
	}
}

// TestKubernetesManifests: every document decodes strictly with the
// Kubernetes API types; a Deployment of three replicas probes /readyz and
// /healthz on the metrics port (the default of --metrics-addr), runs as
// non-root on a read-only root, waits longer than the lease on stop, takes
// its DSN from a Secret; a PodDisruptionBudget lets one pod go at a time; a
// Service and a ServiceMonitor scrape that port.
func TestKubernetesManifests(t *testing.T) {
	t.Parallel()
	m := loadManifests(t)
	if len(m.deployments) != 1 || len(m.pdbs) != 1 || len(m.services) != 1 || len(m.monitors) != 1 {
		t.Fatalf("%d Deployments, %d PodDisruptionBudgets, %d Services, %d ServiceMonitors: want one of each",
			len(m.deployments), len(m.pdbs), len(m.services), len(m.monitors))
	}
	d := m.deployments[0]
	if r := d.Spec.Replicas; r == nil || *r != 3 {
		t.Errorf("Deployment replicas %v, want 3", r)
	}
	pod := d.Spec.Template.Spec
	if g := pod.TerminationGracePeriodSeconds; g == nil || float64(*g) <= config.Default().Lease.Seconds() {
		t.Errorf("terminationGracePeriodSeconds %v: want above the lease (%s)", g, config.Default().Lease)
	}
	if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Errorf("pod securityContext %+v: want runAsNonRoot", sc)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	checkContainer(t, c)
	var metrics *corev1.ContainerPort
	for i, p := range c.Ports {
		if p.Name == "metrics" {
			metrics = &c.Ports[i]
		}
	}
	if metrics == nil {
		t.Fatalf("container %s has no port named metrics", c.Name)
	}
	if int(metrics.ContainerPort) != metricsPort(t) {
		t.Errorf("container metrics port %d, want config.Default()'s %d", metrics.ContainerPort, metricsPort(t))
	}
	for name, probe := range map[string]*corev1.Probe{"/readyz": c.ReadinessProbe, "/healthz": c.LivenessProbe} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != name {
			t.Errorf("no HTTP probe of %s (readiness /readyz, liveness /healthz): %+v", name, probe)
			continue
		}
		if port := probe.HTTPGet.Port; !samePort(port, metrics) {
			t.Errorf("probe of %s on port %s, want the metrics port %d", name, port.String(), metrics.ContainerPort)
		}
	}

	pdb := m.pdbs[0]
	if mu := pdb.Spec.MaxUnavailable; mu == nil || mu.String() != "1" {
		t.Errorf("PodDisruptionBudget maxUnavailable %v, want 1", mu)
	}
	podLabels := d.Spec.Template.Labels
	if !selects(pdb.Spec.Selector.MatchLabels, podLabels) || !selects(d.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("the PodDisruptionBudget's or the Deployment's selector does not select the pods (%v)", podLabels)
	}
	svc := m.services[0]
	if !selects(svc.Spec.Selector, podLabels) || len(svc.Spec.Ports) != 1 || !samePort(svc.Spec.Ports[0].TargetPort, metrics) {
		t.Errorf("Service %s does not select the pods' metrics port: %+v", svc.Name, svc.Spec)
	}
	sm := m.monitors[0]
	if !selects(sm.Spec.Selector.MatchLabels, svc.Labels) || len(sm.Spec.Endpoints) != 1 ||
		sm.Spec.Endpoints[0].Port != svc.Spec.Ports[0].Name {
		t.Errorf("ServiceMonitor %s does not scrape the Service's port %q: %+v", sm.Name, svc.Spec.Ports[0].Name, sm.Spec)
	}
}

func checkContainer(t *testing.T, c corev1.Container) {
	t.Helper()
	if len(c.Resources.Requests) == 0 || len(c.Resources.Limits) == 0 {
		t.Errorf("container %s resources %+v: want requests and limits", c.Name, c.Resources)
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("container %s securityContext %+v: want readOnlyRootFilesystem and no privilege escalation", c.Name, sc)
	}
	var dsn bool
	for _, e := range c.Env {
		if e.Name == "CUESCHED_DB" {
			dsn = e.Value == "" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil
		}
	}
	if !dsn {
		t.Errorf("container %s: CUESCHED_DB must come from a Secret (valueFrom.secretKeyRef)", c.Name)
	}
}

// samePort says whether a probe's or a Service's port is the container port
// p, by number or by name.
func samePort(port intstr.IntOrString, p *corev1.ContainerPort) bool {
	if port.Type == intstr.String {
		return port.StrVal == p.Name
	}
	return port.IntVal == p.ContainerPort
}

// selects says whether every label of the selector is on labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}
