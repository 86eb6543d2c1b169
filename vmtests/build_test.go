package vmtests

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmmap/kmmap/internal/toolchain"
	"github.com/kmmap/kmmap/kernels"
)

// hostTree returns the first selected kernel this host builds natively
// (no toolchain root), fetched.
func hostTree(t *testing.T) *kernels.Tree {
	t.Helper()
	_, lock := loadLock(t)
	f, err := kernels.NewFetcher()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range lock.Kernels {
		if k.Arch == "amd64" && selected(k.ID) && !toolchain.NeedsRoot(k) {
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

// A module that does not compile fails with the compiler's own output.
func TestBrokenModuleFailsWithCompilerOutput(t *testing.T) {
	tree := hostTree(t)
	root, _ := loadLock(t)
	src := t.TempDir()
	if err := copySources(src, filepath.Join(root, "kmod")); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(src, "kmmap.c"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("\nstatic int kmmap_broken(void) { return undeclared_symbol; }\n")
	f.Close()
	_, err = buildModule(context.Background(), tree, src, t.TempDir(), nil)
	if err == nil {
		t.Fatal("a module with an undeclared identifier built")
	}
	for _, want := range []string{tree.Kernel.ID, "kmmap.c", "undeclared_symbol", "error"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("build error does not mention %q:\n%v", want, err)
		}
	}
}

func TestCheckCompilerRejectsAnotherGCC(t *testing.T) {
	tree := hostTree(t)
	root, _ := loadLock(t)
	ko, err := buildModule(context.Background(), tree, filepath.Join(root, "kmod"), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := checkCompiler(ko, tree.Config); err != nil {
		t.Errorf("module built with the kernel's compiler rejected: %v", err)
	}
	cfg := filepath.Join(t.TempDir(), "config")
	os.WriteFile(cfg, []byte(`CONFIG_CC_VERSION_TEXT="gcc-99 (Debian 99.1.0-1) 99.1.0"`+"\n"), 0o644)
	if _, err := checkCompiler(ko, cfg); err == nil || !strings.Contains(err.Error(), "gcc-99") {
		t.Errorf("err = %v, want a mismatch naming gcc-99", err)
	}
}
