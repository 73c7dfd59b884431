package archtest

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// shortFuncs are the packages a newcomer reads to change the loop: no
// function of theirs (tests included) runs over maxFuncLines, so each step
// has a name.
var shortFuncs = []string{"scheduler", "ownership"}

const maxFuncLines = 80

// longFuncs lists the functions of a Go source longer than max lines,
// counted from `func` to the closing brace.
func longFuncs(fset *token.FileSet, f *ast.File, max int) []string {
	var out []string
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Body == nil {
			continue
		}
		n := fset.Position(fn.End()).Line - fset.Position(fn.Pos()).Line + 1
		if n > max {
			name := fn.Name.Name
			if fn.Recv != nil && len(fn.Recv.List) == 1 {
				name = fmt.Sprintf("(%s).%s", recvType(fn.Recv.List[0].Type), name)
			}
			out = append(out, fmt.Sprintf("%s:%d %s is %d lines", filepath.Base(fset.Position(fn.Pos()).Filename),
				fset.Position(fn.Pos()).Line, name, n))
		}
	}
	return out
}

// recvType prints a receiver type (T, *T, T[K]).
func recvType(e ast.Expr) string {
	switch t := e.(type) {
	case *ast.StarExpr:
		return "*" + recvType(t.X)
	case *ast.Ident:
		return t.Name
	case *ast.IndexExpr:
		return recvType(t.X)
	case *ast.IndexListExpr:
		return recvType(t.X)
	}
	return "?"
}

func TestLoopFunctionsAreShort(t *testing.T) {
	t.Parallel()
	for _, pkg := range shortFuncs {
		dirs := goList(t, "-f", "{{.Dir}}", module+"/"+pkg)
		if len(dirs) != 1 {
			t.Fatalf("go list %s: %q", pkg, dirs)
		}
		files, err := filepath.Glob(filepath.Join(dirs[0], "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no Go files in %s: %v", pkg, err)
		}
		fset := token.NewFileSet()
		for _, name := range files {
			f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatalf("parse %s: %v", name, err)
			}
			for _, l := range longFuncs(fset, f, maxFuncLines) {
				t.Errorf("%s/%s: split it into named steps (at most %d lines)", pkg, l, maxFuncLines)
			}
		}
	}
}

func TestLongFuncsCounts(t *testing.T) {
	t.Parallel()
	body := strings.Repeat("\tx++\n", 79)
	src := "package p\nfunc short() {\n\tx := 0\n" + strings.Repeat("\tx++\n", 10) + "\t_ = x\n}\n" +
		"type T struct{}\nfunc (t *T) long() {\n\tx := 0\n" + body + "\t_ = x\n}\n"
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "p.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := longFuncs(fset, f, maxFuncLines)
	if len(got) != 1 || !strings.Contains(got[0], "(*T).long is 83 lines") {
		t.Fatalf("longFuncs = %q, want only (*T).long at 83 lines", got)
	}
}
