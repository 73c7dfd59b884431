package config

import (
	"fmt"
	"io"
	"strings"
)

// Usage is what a command's help says besides the settings it takes.
type Usage struct {
	Line  string // after "usage: "; default: the command and [flags]
	About string // what the command does: paragraphs, wrapped here unless indented
	Flags []Flag // the command's own flags, which are not settings
}

// Flag is one of a command's own flags, as its help shows it.
type Flag struct {
	Name    string
	Type    string // as help shows its value: NAME, bool (shown without), ...
	Meaning string
	Default string // "" for none
}

// helpWidth is where help wraps; helpColumn where meanings start.
const (
	helpWidth  = 100
	helpColumn = 30
)

// Invocation is how a user types cmd: cuesched's commands by their name
// after "cuesched", a command of its own ("cuesched-demo") by itself.
func Invocation(cmd string) string {
	if strings.HasPrefix(cmd, "cuesched-") {
		return cmd
	}
	return "cuesched " + cmd
}

// PrintHelp writes command cmd's help: u, then every setting cmd takes,
// each with its type, meaning and default.
func PrintHelp(w io.Writer, cmd string, u Usage) {
	c := Default()
	printHelp(w, cmd, u, accepted(settings(&c), cmd, nil))
}

func printHelp(w io.Writer, cmd string, u Usage, takes []setting) {
	line := u.Line
	if line == "" {
		line = Invocation(cmd)
		if len(takes)+len(u.Flags) > 0 {
			line += " [flags]"
		}
	}
	fmt.Fprintf(w, "usage: %s\n", line)
	if u.About != "" {
		fmt.Fprintln(w)
		for i, para := range strings.Split(strings.Trim(u.About, "\n"), "\n\n") {
			if i > 0 {
				fmt.Fprintln(w)
			}
			if strings.HasPrefix(para, " ") { // laid out by hand
				fmt.Fprintln(w, para)
				continue
			}
			fmt.Fprintln(w, wrap(para, helpWidth, ""))
		}
	}
	if len(u.Flags) > 0 {
		fmt.Fprintln(w, "\nflags:")
		for _, f := range u.Flags {
			fmt.Fprintln(w, helpLine(f.Name, f.Type, f.Meaning, f.Default, true))
		}
	}
	if len(takes) > 0 {
		fmt.Fprintln(w, "\nsettings (each also a key of the --config file and an environment variable CUESCHED_<NAME>):")
		for _, s := range takes {
			meaning := s.meaning
			if len(s.aliases) > 0 {
				meaning += "; also --" + strings.Join(s.aliases, ", --")
			}
			d, isValue := s.defaultText()
			fmt.Fprintln(w, helpLine(s.name, s.typeName(), plain(meaning), d, isValue))
		}
	}
}

// helpLine is one flag of help: `  --name TYPE   meaning (default X)`,
// wrapped under the meaning's column.
func helpLine(name, typ, meaning, dflt string, isValue bool) string {
	left := "  --" + name
	if typ != "" && typ != "bool" {
		left += " " + typ
	}
	switch {
	case dflt == "":
	case isValue:
		meaning += " (default " + dflt + ")"
	default:
		meaning += " (default: " + dflt + ")"
	}
	indent := strings.Repeat(" ", helpColumn)
	if len(left) >= helpColumn-1 {
		return left + "\n" + indent + wrap(meaning, helpWidth-helpColumn, indent)
	}
	return left + strings.Repeat(" ", helpColumn-len(left)) + wrap(meaning, helpWidth-helpColumn, indent)
}

// wrap breaks s into lines of at most width, the lines after the first
// prefixed with indent.
func wrap(s string, width int, indent string) string {
	var b strings.Builder
	n := 0
	for i, word := range strings.Fields(s) {
		if i > 0 && n+1+len(word) > width {
			b.WriteString("\n" + indent)
			n = 0
		} else if i > 0 {
			b.WriteByte(' ')
			n++
		}
		b.WriteString(word)
		n += len(word)
	}
	return b.String()
}

// plain is text without its markdown code quotes, for a terminal.
func plain(s string) string { return strings.ReplaceAll(s, "`", "") }

// FlagError turns an error of the flag package parsing command cmd's
// arguments into one line saying what is wrong and where help is: an
// unknown flag names the nearest flag cmd takes (own: its flags besides its
// settings), or the commands whose setting it is.
func FlagError(cmd string, err error, own []string) error {
	c := Default()
	return flagError(cmd, err, own, settings(&c), accepted(settings(&c), cmd, nil))
}

func flagError(cmd string, err error, own []string, all, takes []setting) error {
	help := "see " + Invocation(cmd) + " --help"
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		known := append([]string(nil), own...)
		for _, s := range takes {
			known = append(known, s.name)
		}
		for _, s := range all {
			if s.name == name && !contains(known, name) {
				return &Error{Err: fmt.Errorf("--%s is a setting of %s, not of %s (%s)",
					name, strings.Join(s.commands, ", "), Invocation(cmd), help)}
			}
		}
		if near := nearest(name, known); near != "" {
			return &Error{Err: fmt.Errorf("unknown flag --%s (did you mean --%s? %s)", name, near, help)}
		}
		return &Error{Err: fmt.Errorf("unknown flag --%s (%s)", name, help)}
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return &Error{Err: fmt.Errorf("--%s needs a value: --%s=VALUE (%s)", name, name, help)}
	}
	return &Error{Err: fmt.Errorf("%s (%s)", msg, help)}
}

// nearest is the name of names closest to name by edit distance, or ""
// when none is within 2 edits (a third of a long name) of it: farther
// ones are not what was meant.
func nearest(name string, names []string) string {
	best, bestD := "", max(2, len(name)/3)+1
	for _, n := range names {
		if d := editDistance(name, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance counts the insertions, deletions, substitutions and
// transpositions of neighbours turning a into b (optimal string alignment:
// a typo's swapped letters count once).
func editDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
