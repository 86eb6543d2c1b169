package vmtests

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kmmap/kmmap/kernels"
)

// Bad values are refused with the variable, its value and what it wants.
func TestParseConfigErrors(t *testing.T) {
	for _, c := range []struct{ name, value, want string }{
		{"KMMAP_VM_TIMEOUT", "soon", "Go duration"},
		{"KMMAP_VM_TIMEOUT", "-1s", "Go duration"},
		{"KMMAP_ACCEL", "hvf", "kvm or tcg"},
		{"KMMAP_CPUS", "9", "from 1 to 8"},
	} {
		_, err := parseConfig(map[string]string{c.name: c.value})
		if err == nil || !strings.Contains(err.Error(), c.name+"=") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s=%s: err %v, want one naming it and saying %q", c.name, c.value, err, c.want)
		}
	}
	cfg, err := parseConfig(map[string]string{"KMMAP_CELLS": " 6.1-amd64, 7.3-arm64,", "KMMAP_VM_TIMEOUT": "90s", "KMMAP_MEMDEBUG": "1"})
	if err != nil || !slices.Equal(cfg.Cells, []string{"6.1-amd64", "7.3-arm64"}) || cfg.VMTimeout != 90*time.Second || !cfg.MemDebug {
		t.Errorf("config %+v, %v", cfg, err)
	}
	if all, _ := parseConfig(map[string]string{"KMMAP_CELLS": "all"}); !all.selects("5.10-arm64") {
		t.Errorf("KMMAP_CELLS=all does not select every cell")
	}
	// An extra cell: left out by default, run when named or with all.
	extra := kernels.Kernel{ID: "9.9-slow", Extra: true}
	for env, want := range map[string]bool{"": false, "all": true, "9.9-slow": true, "6.1-amd64": false} {
		c, _ := parseConfig(map[string]string{"KMMAP_CELLS": env})
		if got := c.Selects(extra); got != want {
			t.Errorf("KMMAP_CELLS=%q selects an extra cell: %v, want %v", env, got, want)
		}
	}
	if c, _ := parseConfig(nil); !c.Selects(kernels.Kernel{ID: "6.1-amd64"}) {
		t.Errorf("the default selection leaves out a cell that is not extra")
	}
}

// The rerun line repeats every variable that changes a run, and only
// those: KMMAP_MEMDEBUG changes the kernel command line, so a failure
// seen with it must be rerun with it.
func TestRerunLineCarriesTheRun(t *testing.T) {
	cfg, err := parseConfig(map[string]string{"KMMAP_MEMDEBUG": "1", "KMMAP_RANDOM_SEED": "42", "KMMAP_TRACE": "1", "KMMAP_CELLS": "6.1-amd64"})
	if err != nil {
		t.Fatal(err)
	}
	c := &Cell{ID: "6.1-amd64", Results: "/r/6.1-amd64", cfg: &cfg}
	got := reproducer(c, "", "TestGuest", "./vmtests", "TestSamePages/fault")
	for _, want := range []string{"KMMAP_MEMDEBUG=1 KMMAP_RANDOM_SEED=42 go test ./vmtests", `'^TestGuest$/^6\.1-amd64$/^TestSamePages$/^fault$'`} {
		if !strings.Contains(got, want) {
			t.Errorf("rerun line %q lacks %q", got, want)
		}
	}
	if strings.Contains(got, "KMMAP_TRACE") {
		t.Errorf("rerun line %q carries KMMAP_TRACE, which changes nothing of the run", got)
	}
	if got := reproducer(c, "", "TestForeignModule", "./vmtests", ""); !strings.Contains(got, "-run '^TestForeignModule$/^6\\.1-amd64$'") {
		t.Errorf("rerun line of another host test: %q", got)
	}
	// It says how the guest started: a restored guest and a cold boot
	// are different runs.
	for mode, want := range map[BootMode]string{Cold: "KMMAP_SNAPSHOT=0 ", Saved: "KMMAP_SNAPSHOT=1 ", Restored: "KMMAP_SNAPSHOT=1 "} {
		if got := reproducer(c, mode, "TestGuest", "./vmtests", ""); !strings.Contains(got, "KMMAP_RANDOM_SEED=42 "+want+"go test") {
			t.Errorf("rerun line after a %s guest: %q, want %q in it", mode, got, want)
		}
		if got := c.runRerun(CommandJob{Dir: "/w", Argv: []string{"true"}}, mode); !strings.Contains(got, want) {
			t.Errorf("kmmap run's rerun line after a %s guest: %q, want %q in it", mode, got, want)
		}
	}
}

// Every variable is in the one table, and the table is what the package
// doc and docs/how-it-works.md show; no code of the harness below ConfigFromEnv
// reads the environment.
func TestConfigTable(t *testing.T) {
	root := moduleRoot(t)
	table := ConfigTable()
	readme, err := os.ReadFile(filepath.Join(root, "docs", "how-it-works.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), table) {
		t.Errorf("docs/how-it-works.md does not hold the configuration table; paste `go run ./cmd/kmmap config`:\n%s", table)
	}
	doc, err := os.ReadFile(filepath.Join(root, "vmtests", "cell.go"))
	if err != nil {
		t.Fatal(err)
	}
	var commented []string
	for _, l := range strings.Split(strings.TrimRight(ConfigDoc(), "\n"), "\n") {
		commented = append(commented, "// "+l)
	}
	if !strings.Contains(string(doc), strings.Join(commented, "\n")) {
		t.Errorf("the package doc (vmtests/cell.go) does not hold the configuration's list (vmtests.ConfigDoc):\n%s", strings.Join(commented, "\n"))
	}
	names := map[string]bool{}
	for _, v := range Vars {
		names[v.Name] = true
	}
	fset := token.NewFileSet()
	for _, dir := range []string{"vmtests", "kernels", "initramfs", "internal/arch", "internal/toolchain", "internal/kernelbuild", "cmd/kmmap"} {
		files, _ := filepath.Glob(filepath.Join(root, dir, "*.go"))
		for _, file := range files {
			f, err := parser.ParseFile(fset, file, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			test := strings.HasSuffix(file, "_test.go")
			ast.Inspect(f, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.BasicLit:
					s := strings.Trim(n.Value, "\"`")
					if n.Kind == token.STRING && strings.HasPrefix(s, "KMMAP_") && !strings.ContainsAny(s, " =") && !names[s] && !test {
						t.Errorf("%s: %s is not in the table of variables (vmtests.Vars)", fset.Position(n.Pos()), s)
					}
				case *ast.CallExpr:
					sel, ok := n.Fun.(*ast.SelectorExpr)
					if !ok || test {
						break
					}
					if id, ok := sel.X.(*ast.Ident); ok && id.Name == "os" && (sel.Sel.Name == "Getenv" || sel.Sel.Name == "LookupEnv") {
						// The terminal's own variables are no configuration.
						if lit, ok := n.Args[0].(*ast.BasicLit); ok && (lit.Value == `"CI"` || lit.Value == `"TERM"`) {
							break
						}
						if fn := enclosing(f, n.Pos()); fn != "ConfigFromEnv" {
							t.Errorf("%s: os.%s in %s: the environment is read in ConfigFromEnv only", fset.Position(n.Pos()), sel.Sel.Name, fn)
						}
					}
				}
				return true
			})
		}
	}
}

// enclosing names the function of f declared around pos.
func enclosing(f *ast.File, pos token.Pos) string {
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Pos() <= pos && pos < fd.End() {
			return fd.Name.Name
		}
	}
	return ""
}

// A hung guest test ends under the suite's own -test.timeout before QEMU
// is killed at the VM's.
func TestGuestTimeoutUnderVMTimeout(t *testing.T) {
	for _, d := range []time.Duration{20 * time.Second, time.Minute, 5 * time.Minute, time.Hour} {
		g := guestTimeout(d)
		if g <= 0 || g >= d || d-g > 30*time.Second && d-g > d/10 {
			t.Errorf("VM timeout %s: guest -test.timeout %s", d, g)
		}
	}
}

// Module.Dir and Guest.Package are relative to the host test's directory:
// a host test moved into a subdirectory names them from there, and one
// that still names them from the Go module's root is told how to write
// them.
func TestSpecPathsFromTestDirectory(t *testing.T) {
	lock := filepath.Join(moduleRoot(t), "kernels", "kernels.lock")
	mod := t.TempDir()
	for _, d := range []string{"kmod", "guest", "host"} {
		if err := os.Mkdir(filepath.Join(mod, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module example.com/hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(filepath.Join(mod, "host"))
	cfg := Config{Lock: lock, Cache: t.TempDir()}
	_, err := New(Module{Dir: "kmod"}, Guest{Package: "./guest"}, WithConfig(cfg))
	for _, want := range []string{`Module.Dir "kmod"`, filepath.Join(mod, "host", "kmod"), "the host test's directory", `write "../kmod"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Module.Dir named from the module's root: %v, want an error saying %q", err, want)
		}
	}
	_, err = New(Module{Dir: "../kmod"}, Guest{Package: "./guest"}, WithConfig(cfg))
	if err == nil || !strings.Contains(err.Error(), `Guest.Package "./guest"`) || !strings.Contains(err.Error(), `write "../guest"`) {
		t.Errorf("Guest.Package named from the module's root: %v, want an error saying to write ../guest", err)
	}
	h, err := New(Module{Dir: "../kmod"}, Guest{Package: "../guest"}, WithConfig(cfg))
	if err != nil {
		t.Fatalf("both named from the host test's directory: %v", err)
	}
	if got := h.sourceDirs()[:2]; got[0] != filepath.Join(mod, "kmod") || got[1] != filepath.Join(mod, "guest") {
		t.Errorf("the module and the guest package resolve to %q", got)
	}
	if _, err := New(Module{Dir: "../kmod"}, Guest{Package: "example.com/hello/guest"}, WithConfig(cfg)); err != nil {
		t.Errorf("an import path as Guest.Package: %v", err)
	}
}
