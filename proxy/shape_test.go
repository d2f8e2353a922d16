package proxy

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Tests of the package's shape, read from its source: the rules of
// reply.go (handlers return, one step writes), outcome.go (no bare outcome
// strings) and the house rule of short functions. Each names what breaks
// it, so that a new handler that writes its own answer fails here.

// sourceFuncs parses the package's non-test files and calls fn for every
// function with a body, named "file:Func" (methods by their name only).
func sourceFuncs(t *testing.T, fn func(name string, fset *token.FileSet, fd *ast.FuncDecl)) {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Body != nil {
				fn(f+":"+fd.Name.Name, fset, fd)
			}
		}
	}
}

// calledName is the name a call expression calls: "writeError",
// "SetBodyStream" for ctx.Response.SetBodyStream(…).
func calledName(call *ast.CallExpr) string {
	switch f := call.Fun.(type) {
	case *ast.Ident:
		return f.Name
	case *ast.SelectorExpr:
		return f.Sel.Name
	}
	return ""
}

// TestOneWriter: only the writers put a status or a body on the wire, and
// only finish (and the panic guard) records the status for the request
// log. Before reply.go, 24 call sites wrote errors, handlers called
// SetStatusCode/SetBody themselves, and three copied the status by hand
// before SetBodyStream.
func TestOneWriter(t *testing.T) {
	writers := map[string][]string{
		// writeError: the one error writer, called by finish for handlers,
		// by the guards for the HTTP layer and panics, and by the startup
		// server (which has no handlers).
		"writeError":    {"reply.go:finish", "guard.go:recoverPanic", "guard.go:httpLayerError", "startup.go:serveStarting"},
		"SetStatusCode": {"errors.go:writeError", "reply.go:writeHead"},
		"SetBody":       {"errors.go:writeError", "reply.go:writeReply"},
		"SetBodyString": {},
		"SetBodyStream": {"guard.go:setBodyStream"},
		"setBodyStream": {"reply.go:finish"},
	}
	sourceFuncs(t, func(name string, fset *token.FileSet, fd *ast.FuncDecl) {
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				called := calledName(n)
				allowed, watched := writers[called]
				if watched && !contains(allowed, name) {
					t.Errorf("%s: %s calls %s; only %v may (handlers return a reply or an error)", fset.Position(n.Pos()), name, called, allowed)
				}
			case *ast.AssignStmt:
				for _, lhs := range n.Lhs {
					if sel, ok := lhs.(*ast.SelectorExpr); ok && sel.Sel.Name == "status" {
						if x, ok := sel.X.(*ast.Ident); ok && x.Name == "ex" && name != "reply.go:finish" && name != "guard.go:recoverPanic" {
							t.Errorf("%s: %s sets ex.status; finish records it", fset.Position(n.Pos()), name)
						}
					}
				}
			}
			return true
		})
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestNoBareOutcomes: outcome values are spelled once, in outcome.go; the
// rest of the package (and preload, through ParseOutcome) uses the
// constants.
func TestNoBareOutcomes(t *testing.T) {
	values := map[string]bool{}
	for _, o := range []Outcome{OutcomeHit, OutcomeMiss, OutcomeJoin, OutcomeRevalidated, OutcomeStale, OutcomeBypass} {
		values[string(o)] = true
	}
	sourceFuncs(t, func(name string, fset *token.FileSet, fd *ast.FuncDecl) {
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			if v, err := strconv.Unquote(lit.Value); err == nil && values[v] {
				t.Errorf("%s: %s spells the outcome %q; use its Outcome constant", fset.Position(lit.Pos()), name, v)
			}
			return true
		})
	})
}

func TestParseOutcome(t *testing.T) {
	for _, c := range []struct {
		header    string
		want      Outcome
		ok        bool
		fromCache bool
	}{
		{"hit", OutcomeHit, true, true},
		{"revalidated", OutcomeRevalidated, true, true},
		{"stale", OutcomeStale, true, true},
		{"miss", OutcomeMiss, true, false},
		{"join", OutcomeJoin, true, false},
		{"bypass", OutcomeBypass, true, false},
		{"", OutcomeNone, false, false},
		{"HIT", OutcomeNone, false, false},
		{"none", OutcomeNone, false, false},
	} {
		got, ok := ParseOutcome(c.header)
		if got != c.want || ok != c.ok || got.FromCache() != c.fromCache {
			t.Errorf("ParseOutcome(%q) = %q, %v (from cache %v); want %q, %v (%v)", c.header, got, ok, got.FromCache(), c.want, c.ok, c.fromCache)
		}
	}
	if OutcomeMiss.Joined(true) != OutcomeJoin || OutcomeRevalidated.Joined(true) != OutcomeJoin || OutcomeStale.Joined(false) != OutcomeStale {
		t.Error("Joined: a shared flight is a join, an unshared one keeps its outcome")
	}
}

// maxFuncLines is the longest a function of the package may be.
const maxFuncLines = 55

// longFuncs may exceed it, each for its reason.
var longFuncs = map[string]string{
	"errors.go:toWire":      "a table: one case per error, read top to bottom",
	"passthrough.go:read":   "one condition-variable loop under the share's lock; split, the lock would cross functions",
	"passthrough.go:put":    "one condition-variable loop under the share's lock; split, the lock would cross functions",
	"metrics.go:newMetrics": "declarations of the collectors",
}

// TestFunctionLength: functions are named steps (dispatch, serveBlob,
// refreshTag, serveCatalog, New and runFill were 60 to 90 lines).
func TestFunctionLength(t *testing.T) {
	sourceFuncs(t, func(name string, fset *token.FileSet, fd *ast.FuncDecl) {
		n := fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line + 1
		if _, ok := longFuncs[name]; !ok && n > maxFuncLines {
			t.Errorf("%s is %d lines (at most %d): split it into named steps", name, n, maxFuncLines)
		}
	})
}
