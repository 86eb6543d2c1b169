package kmmap

import (
	"encoding/json"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Every package's files are in layers: no file uses something declared
// in a file that, through others, uses it back (a cycle between files is
// where a reader following a cell id from the test to QEMU climbs back
// up). Each cycle is named with what each file uses of the next.
func TestFilesInLayers(t *testing.T) {
	root, _ := checkout(t)
	// The packages, and their dependencies' export data from go's build
	// cache.
	cmd := exec.Command("go", "list", "-export", "-deps", "-json=ImportPath,Export,Dir,GoFiles,Module", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -export: %v", err)
	}
	type pkg struct {
		ImportPath, Export, Dir string
		GoFiles                 []string
		Module                  *struct{ Path, Dir string }
	}
	exports := map[string]string{}
	var ours []pkg
	for dec := json.NewDecoder(strings.NewReader(string(out))); ; {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		exports[p.ImportPath] = p.Export
		if p.Module != nil && p.Module.Dir == root {
			ours = append(ours, p)
		}
	}
	walked := map[string]int{}
	for _, p := range ours {
		uses := fileUses(t, p.ImportPath, p.Dir, p.GoFiles, exports)
		walked[p.ImportPath] = len(uses)
		for _, c := range cycles(uses) {
			t.Errorf("%s: files use each other in a cycle: %s", p.ImportPath, c)
		}
	}
	// vmtests is the library's largest package; kernels and cmd/kmmap
	// are the others of many files.
	for _, p := range []string{"vmtests", "kernels", "cmd/kmmap"} {
		if n := walked["github.com/kmmap/kmmap/"+p]; n < 5 {
			t.Errorf("only %d files of %s use another: the walk read nothing", n, p)
		}
	}
}

// fileUses type-checks package path (its files in dir) and says which of
// its files uses what of another: file -> file it uses -> names.
func fileUses(t *testing.T, path, dir string, names []string, exports map[string]string) map[string]map[string][]string {
	t.Helper()
	fset := token.NewFileSet()
	var files []*ast.File
	for _, n := range names {
		f, err := parser.ParseFile(fset, filepath.Join(dir, n), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) { return os.Open(exports[path]) })
	info := &types.Info{Uses: map[*ast.Ident]types.Object{}} // a selector's name too
	pkg, err := (&types.Config{Importer: imp}).Check(path, fset, files, info)
	if err != nil {
		t.Fatal(err)
	}
	uses := map[string]map[string][]string{}
	add := func(at token.Pos, obj types.Object) {
		if obj == nil || obj.Pkg() != pkg || !obj.Pos().IsValid() {
			return
		}
		a, b := filepath.Base(fset.Position(at).Filename), filepath.Base(fset.Position(obj.Pos()).Filename)
		if a == b {
			return
		}
		if uses[a] == nil {
			uses[a] = map[string][]string{}
		}
		if !slices.Contains(uses[a][b], obj.Name()) {
			uses[a][b] = append(uses[a][b], obj.Name())
		}
	}
	for id, obj := range info.Uses {
		add(id.Pos(), obj)
	}
	return uses
}

// cycles are the paths back to where they started in uses, each said as
// what each file uses of the next.
func cycles(uses map[string]map[string][]string) []string {
	var found []string
	var names []string
	for f := range uses {
		names = append(names, f)
	}
	slices.Sort(names)
	state := map[string]int{} // 1: on the path, 2: done
	var path []string
	var visit func(f string)
	visit = func(f string) {
		state[f] = 1
		path = append(path, f)
		var next []string
		for g := range uses[f] {
			next = append(next, g)
		}
		slices.Sort(next)
		for _, g := range next {
			switch state[g] {
			case 0:
				visit(g)
			case 1:
				i := slices.Index(path, g)
				cycle := append(slices.Clone(path[i:]), g)
				var steps []string
				for j := 0; j+1 < len(cycle); j++ {
					w := uses[cycle[j]][cycle[j+1]]
					slices.Sort(w)
					steps = append(steps, cycle[j]+" uses "+strings.Join(w, ", ")+" of "+cycle[j+1])
				}
				found = append(found, strings.Join(steps, "; "))
			}
		}
		path = path[:len(path)-1]
		state[f] = 2
	}
	for _, f := range names {
		if state[f] == 0 {
			visit(f)
		}
	}
	return found
}
