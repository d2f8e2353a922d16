package main

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestLogDurationsAreSeconds: no log line of the project passes a
// time.Duration (which slog writes as "1.5s" in text and as integer
// nanoseconds in JSON). Durations are float seconds under a key ending in
// _s ("duration_s", d.Seconds()), the one convention of every log line
// (issue 9, item 9).
//
// Each package is type-checked on its own against a stub of package time
// (Duration, its methods and the functions that return one), every other
// import left empty, so that it takes milliseconds: a Duration held in a
// local variable, a field or a constant of the package, or made by time's
// own functions, is found; one returned by another package's function is
// not. Log calls are found by their shape (Info, Warn, Error, Debug, Log,
// LogAttrs on a receiver named log, l or logger) and slog.Duration by name.
func TestLogDurationsAreSeconds(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	fset := token.NewFileSet()
	timePkg := timeStub(t, fset)
	imp := importerFunc(func(p string) (*types.Package, error) {
		if p == "time" {
			return timePkg, nil
		}
		name := path.Base(p)
		if strings.HasPrefix(name, "v") && strings.Trim(name[1:], "0123456789") == "" {
			name = path.Base(path.Dir(p))
		}
		name = strings.TrimPrefix(name, "go-")
		pkg := types.NewPackage(p, name)
		pkg.MarkComplete()
		return pkg, nil
	})
	dec := json.NewDecoder(bytes.NewReader(out))
	checked := 0
	for {
		var p struct {
			ImportPath, Dir string
			GoFiles         []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		var files []*ast.File
		for _, name := range p.GoFiles {
			f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
		}
		info := &types.Info{Types: map[ast.Expr]types.TypeAndValue{}}
		conf := types.Config{Importer: imp, Error: func(error) {}} // the empty imports make errors
		conf.Check(p.ImportPath, fset, files, info)
		for _, f := range files {
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				recv := types.ExprString(sel.X)
				if recv == "slog" && sel.Sel.Name == "Duration" {
					t.Errorf("%s: slog.Duration in a log line; use float seconds under a key ending in _s", fset.Position(call.Pos()))
				}
				if !logMethods[sel.Sel.Name] || !logReceiver.MatchString(recv) {
					return true
				}
				checked++
				for _, arg := range call.Args {
					if tv, ok := info.Types[arg]; ok && isDuration(tv.Type) {
						t.Errorf("%s: a time.Duration in a log line (%s); use float seconds under a key ending in _s",
							fset.Position(arg.Pos()), types.ExprString(arg))
					}
				}
				return true
			})
		}
	}
	if checked < 50 {
		t.Fatalf("only %d log calls found: the shape the test looks for is out of date", checked)
	}
}

var (
	logMethods  = map[string]bool{"Debug": true, "Info": true, "Warn": true, "Error": true, "Log": true, "LogAttrs": true}
	logReceiver = regexp.MustCompile(`(^|\.)(log|l|logger)(\(\))?$`)
)

type importerFunc func(path string) (*types.Package, error)

func (f importerFunc) Import(path string) (*types.Package, error) { return f(path) }

// timeStub is package time as far as durations go.
func timeStub(t *testing.T, fset *token.FileSet) *types.Package {
	const src = `package time
type Duration int64
const (
	Nanosecond Duration = 1
	Microsecond = 1000 * Nanosecond
	Millisecond = 1000 * Microsecond
	Second = 1000 * Millisecond
	Minute = 60 * Second
	Hour = 60 * Minute
)
func (d Duration) Seconds() float64
func (d Duration) Minutes() float64
func (d Duration) Hours() float64
func (d Duration) Milliseconds() int64
func (d Duration) Microseconds() int64
func (d Duration) Nanoseconds() int64
func (d Duration) Round(m Duration) Duration
func (d Duration) Truncate(m Duration) Duration
func (d Duration) Abs() Duration
func (d Duration) String() string
func ParseDuration(s string) (Duration, error)
type Time struct{ wall uint64 }
func Now() Time
func Unix(sec, nsec int64) Time
func Since(t Time) Duration
func Until(t Time) Duration
func (t Time) Sub(u Time) Duration
func (t Time) Add(d Duration) Time
func (t Time) Round(d Duration) Time
func (t Time) Truncate(d Duration) Time
`
	f, err := parser.ParseFile(fset, "time_stub.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	pkg, err := (&types.Config{}).Check("time", fset, []*ast.File{f}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return pkg
}

func isDuration(t types.Type) bool {
	n, ok := t.(*types.Named)
	return ok && n.Obj().Pkg() != nil && n.Obj().Pkg().Path() == "time" && n.Obj().Name() == "Duration"
}
