package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func repoFile(t *testing.T, rel string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// The README's table and the example file are what the settings generate:
// a setting added, renamed or re-documented without regenerating fails here.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	readme := repoFile(t, READMEPath)
	want, err := ReplaceTable(readme)
	if err != nil {
		t.Fatalf("%s: %v", READMEPath, err)
	}
	if readme != want {
		t.Errorf("%s's settings table differs from internal/config/settings.go: run `%s`\n%s",
			READMEPath, GenerateCmd, lineDiff(readme, want))
	}
	if got := repoFile(t, ExamplePath); got != ExampleYAML() {
		t.Errorf("%s differs from internal/config/settings.go: run `%s`\n%s",
			ExamplePath, GenerateCmd, lineDiff(got, ExampleYAML()))
	}
}

// undocumented lists what each setting lacks: help (a type and a meaning,
// and a line in the help of every command taking it), a row of the README
// table, an entry of the example file.
func undocumented(all []setting, help func(cmd string) string, table, example string) []string {
	var out []string
	for _, s := range all {
		if s.meaning == "" || s.typeName() == "" || len(s.commands) == 0 {
			out = append(out, s.name+": no meaning, type or commands")
		}
		for _, cmd := range s.commands {
			if !strings.Contains(help(cmd), "\n  --"+s.name+" ") {
				out = append(out, s.name+": missing from the help of "+cmd)
			}
		}
		if !strings.Contains(table, "\n| `"+s.name+"` ") {
			out = append(out, s.name+": no row in the README table")
		}
		if s.name != "config" && !strings.Contains(example, "\n#"+s.name+": ") {
			out = append(out, s.name+": no entry in the example file")
		}
	}
	return out
}

func helpOf(cmd string) string {
	var b bytes.Buffer
	PrintHelp(&b, cmd, Usage{})
	return b.String()
}

func TestEverySettingDocumented(t *testing.T) {
	all := docSettings()
	if missing := undocumented(all, helpOf, repoFile(t, READMEPath), repoFile(t, ExamplePath)); len(missing) > 0 {
		t.Errorf("settings lack documentation (run `%s` for the files):\n%s", GenerateCmd, strings.Join(missing, "\n"))
	}
	// The check finds each kind of gap: drop rqd-port from each text.
	drop := func(s, line string) string { return strings.Replace(s, line, "\n", 1) }
	table, example := MarkdownTable(), ExampleYAML()
	rowRE := regexp.MustCompile("\n\\| `rqd-port` [^\n]*\n")
	for name, tc := range map[string]struct {
		help           func(string) string
		table, example string
		want           string
	}{
		"help":    {func(cmd string) string { return drop(helpOf(cmd), "\n  --rqd-port ") }, table, example, "rqd-port: missing from the help of run"},
		"row":     {helpOf, rowRE.ReplaceAllString(table, "\n"), example, "rqd-port: no row in the README table"},
		"example": {helpOf, table, drop(example, "\n#rqd-port: "), "rqd-port: no entry in the example file"},
	} {
		if got := undocumented(all, tc.help, tc.table, tc.example); !reflect.DeepEqual(got, []string{tc.want}) {
			t.Errorf("%s: undocumented = %q, want %q", name, got, tc.want)
		}
	}
	noMeaning := append([]setting(nil), all...)
	noMeaning[0].meaning = ""
	if got := undocumented(noMeaning, helpOf, table, example); len(got) != 1 || !strings.Contains(got[0], "no meaning") {
		t.Errorf("a setting without meaning: %q", got)
	}
}

// Every default the example file shows reads back as Default()'s: the
// rendering and the parsing agree. The instance name is computed per
// machine and shown as HOST-PID.
func TestExampleDefaultsLoadAsDefault(t *testing.T) {
	uncommented := regexp.MustCompile(`(?m)^#([a-z][a-z-]*: )`).ReplaceAllString(ExampleYAML(), "$1")
	file := filepath.Join(t.TempDir(), "all.yaml")
	if err := os.WriteFile(file, []byte(uncommented), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := Load("run", []string{"--config", file}, env(nil), nil, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("the example file, uncommented: %v", err)
	}
	want := Default()
	if got.Instance != "HOST-PID" {
		t.Errorf("instance %q, want the example's HOST-PID", got.Instance)
	}
	got.Instance, got.ConfigFile = want.Instance, ""
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the example's values load as\n%+v\nDefault() is\n%+v", got, want)
	}
}

func TestSettingNamesAreUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range docSettings() {
		for _, n := range append([]string{s.name}, s.aliases...) {
			if seen[n] {
				t.Errorf("%s named twice", n)
			}
			seen[n] = true
		}
	}
}

// lineDiff shows the lines only one side has, to say what to regenerate.
func lineDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	has := func(xs []string, x string) bool {
		for _, y := range xs {
			if y == x {
				return true
			}
		}
		return false
	}
	var b strings.Builder
	for _, l := range g {
		if !has(w, l) {
			b.WriteString("- " + l + "\n")
		}
	}
	for _, l := range w {
		if !has(g, l) {
			b.WriteString("+ " + l + "\n")
		}
	}
	return b.String()
}
