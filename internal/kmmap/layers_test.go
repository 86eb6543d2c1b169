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

// The library's files are in layers: no file of package vmtests uses
// something declared in a file that, through others, uses it back (a
// cycle between files is where a reader following a cell id climbs back
// up). Each cycle is named with what each file uses of the next.
func TestLibraryFilesInLayers(t *testing.T) {
	root, _ := checkout(t)
	dir := filepath.Join(root, "vmtests")
	// The dependencies' export data, from go's build cache.
	cmd := exec.Command("go", "list", "-export", "-deps", "-json=ImportPath,Export", "./vmtests")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -export: %v", err)
	}
	exports := map[string]string{}
	for dec := json.NewDecoder(strings.NewReader(string(out))); ; {
		var p struct{ ImportPath, Export string }
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		exports[p.ImportPath] = p.Export
	}
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, dir, func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, f := range pkgs["vmtests"].Files {
		files = append(files, f)
	}
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) { return os.Open(exports[path]) })
	info := &types.Info{Uses: map[*ast.Ident]types.Object{}, Selections: map[*ast.SelectorExpr]*types.Selection{}}
	pkg, err := (&types.Config{Importer: imp}).Check("github.com/kmmap/kmmap/vmtests", fset, files, info)
	if err != nil {
		t.Fatal(err)
	}
	uses := map[string]map[string][]string{} // file -> file it uses -> what
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
	for sel, s := range info.Selections {
		add(sel.Sel.Pos(), s.Obj())
	}
	// A cycle is a path back to where it started.
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
				t.Errorf("vmtests' files use each other in a cycle: %s", strings.Join(steps, "; "))
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
	if len(uses) < 10 {
		t.Errorf("only %d files of vmtests use another: the walk read nothing", len(uses))
	}
}
