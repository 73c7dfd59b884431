package deploy

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

var (
	//go:embed grafana-dashboard.json
	dashboardJSON []byte
	//go:embed alerts.yaml
	alertsYAML []byte
)

// Expressions are the PromQL expressions of the dashboard's panels and of
// the alert rules, each with where it comes from.
func Expressions() (map[string]string, error) {
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(dashboardJSON, &dash); err != nil {
		return nil, fmt.Errorf("grafana-dashboard.json: %w", err)
	}
	out := map[string]string{}
	for _, p := range dash.Panels {
		for i, t := range p.Targets {
			out[fmt.Sprintf("dashboard panel %q, target %d", p.Title, i)] = t.Expr
		}
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string
				Expr  string
			}
		}
	}
	if err := yaml.Unmarshal(alertsYAML, &rules); err != nil {
		return nil, fmt.Errorf("alerts.yaml: %w", err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out["alert "+r.Alert] = r.Expr
		}
	}
	return out, nil
}

// MetricNames maps every metric name the expressions read to where it is
// read (sorted).
func MetricNames() (map[string][]string, error) {
	exprs, err := Expressions()
	if err != nil {
		return nil, err
	}
	names := map[string][]string{}
	for where, e := range exprs {
		if strings.TrimSpace(e) == "" {
			return nil, fmt.Errorf("%s: empty expression", where)
		}
		for _, n := range metricNamesOf(e) {
			names[n] = append(names[n], where)
		}
	}
	for _, w := range names {
		slices.Sort(w)
	}
	return names, nil
}

var (
	// Strings (label values, label_replace's arguments), label matchers and
	// range or subquery selectors hold no metric name.
	stringsRE  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	matchersRE = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	// The parenthesised label lists of grouping and vector matching.
	labelListsRE = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	identRE      = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	keywords     = []string{"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
		"unless", "bool", "offset", "inf", "nan", "atan2"}
)

// metricNamesOf finds the metric names of one PromQL expression: the
// identifiers left once strings, matchers, ranges and label lists are gone,
// less keywords and the functions and aggregations (an identifier followed
// by a parenthesis). A metric written as {__name__="..."} is not found.
func metricNamesOf(expr string) []string {
	e := stringsRE.ReplaceAllString(expr, `""`)
	e = matchersRE.ReplaceAllString(e, " ")
	e = labelListsRE.ReplaceAllString(e, " ")
	var out []string
	for _, loc := range identRE.FindAllStringIndex(e, -1) {
		id := e[loc[0]:loc[1]]
		if loc[0] > 0 && (e[loc[0]-1] == '$' || isDigitOrDot(e[loc[0]-1])) {
			continue // a Grafana variable, or a number's exponent or unit (1e3, 5m)
		}
		if strings.HasPrefix(strings.TrimLeft(e[loc[1]:], " \t\n"), "(") ||
			slices.Contains(keywords, strings.ToLower(id)) {
			continue
		}
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func isDigitOrDot(b byte) bool { return b >= '0' && b <= '9' || b == '.' }
