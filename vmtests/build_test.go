package vmtests

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kmmap/kmmap/internal/moddir"
	"github.com/kmmap/kmmap/internal/toolchain"
	"github.com/kmmap/kmmap/kernels"
)

// hostTree returns the first selected kernel this host builds natively
// (no toolchain root), fetched.
func hostTree(t *testing.T) *kernels.Tree {
	t.Helper()
	_, lock := loadLock(t)
	f := cellFetcher(t)
	for _, k := range lock.Kernels {
		if k.Arch == "amd64" && selected(t, k.ID) && !toolchain.NeedsRoot(k) {
			tree, err := f.Fetch(context.Background(), k)
			if err != nil {
				t.Fatal(err)
			}
			return tree
		}
	}
	t.Skip("no selected amd64 cell is built with the host's own toolchain")
	return nil
}

// buildForHost builds m for tree (hostTree's) with the host's compiler, as
// the matrix does, into cacheDir.
func buildForHost(t *testing.T, tree *kernels.Tree, m Module, cacheDir string) (string, error) {
	t.Helper()
	config, err := tree.ReadConfig()
	if err != nil {
		t.Fatal(err)
	}
	return buildModule(context.Background(), tree, config, m, cacheDir, nil)
}

// brokenModule returns a copy of kmod/ with code appended to main.c.
func brokenModule(t *testing.T, code string) string {
	t.Helper()
	root, _ := loadLock(t)
	src := t.TempDir()
	if err := moddir.Copy(src, filepath.Join(root, "kmod")); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(src, "main.c"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("\n" + code + "\n"); err != nil {
		t.Fatal(err)
	}
	return src
}

// A module that does not compile, or compiles with a warning, fails with
// the compiler's own output.
func TestBrokenModuleFailsWithCompilerOutput(t *testing.T) {
	t.Parallel()
	tree := hostTree(t)
	for _, c := range []struct{ name, code, want string }{
		{"error", "int kmmap_broken(void) { return undeclared_symbol; }", "undeclared_symbol"},
		{"warning", "int kmmap_broken(void); int kmmap_broken(void) { int unused_local; return 0; }", "unused_local"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := brokenModule(t, c.code)
			_, err := buildForHost(t, tree, Module{Dir: dir}, t.TempDir())
			if err == nil {
				t.Fatalf("a module with a compiler %s built", c.name)
			}
			var be *BuildError
			if !errors.As(err, &be) {
				t.Errorf("the error is a %T, not a *BuildError (kmmap mutate would not call it \"not compiling\")", err)
			}
			// The diagnostic names the module's own file, not the
			// build's copy of it.
			for _, want := range []string{tree.Kernel.ID, filepath.Join(dir, "main.c") + ":", c.want, c.name} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("build error does not mention %q:\n%v", want, err)
				}
			}
		})
	}
}

func TestCheckCompilerRejectsAnotherGCC(t *testing.T) {
	t.Parallel()
	tree := hostTree(t)
	root, _ := loadLock(t)
	ko, err := buildForHost(t, tree, kmmapModule(root), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	config, err := tree.ReadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := checkCompiler(ko, config); err != nil {
		t.Errorf("module built with the kernel's compiler rejected: %v", err)
	}
	cfg := kernels.ParseConfig([]byte(`CONFIG_CC_VERSION_TEXT="gcc-99 (Debian 99.1.0-1) 99.1.0"` + "\n"))
	if _, err := checkCompiler(ko, cfg); err == nil || !strings.Contains(err.Error(), "gcc-99") {
		t.Errorf("err = %v, want a mismatch naming gcc-99", err)
	}
}

// A module that fails to build while its guest boots (BootWhileBuilding,
// as go test ./vmtests runs every cell) fails the run with the compiler's
// error, and the guest, told there is no module, powers off at once
// instead of waiting for the VM timeout.
func TestBrokenModuleWhileBooting(t *testing.T) {
	bootsVMs(t)
	t.Parallel()
	tree := hostTree(t)
	src := brokenModule(t, "int kmmap_broken(void) { return undeclared_symbol; }")
	cell, err := kmmapHarness(t).Prepare(t.Context(), cellFetcher(t), tree, CellOptions{Logf: t.Logf, ModuleDir: src,
		ResultsID: tree.Kernel.ID + "-broken-module", BootWhileBuilding: true})
	if err != nil {
		t.Fatalf("Prepare with BootWhileBuilding returned the build's error: %v", err)
	}
	r := boot(t.Context(), cell, SuiteJob{})
	if r.elapsed > time.Minute {
		t.Errorf("the guest ran %s: it should give up as soon as the host says there is no module", r.elapsed)
	}
	wantProblem(t, cell.problems(r), "was not built", "undeclared_symbol")
	if r.res.kmodErr == "" || !strings.Contains(r.res.kmodErr, "the host has no module") {
		t.Errorf("the agent's module error = %q, want it to say the host has no module", r.res.kmodErr)
	}
}
