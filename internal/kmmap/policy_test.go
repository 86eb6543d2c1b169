package kmmap

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kmmap/kmmap/internal/moddir"
	"github.com/kmmap/kmmap/internal/scaffold"
	"github.com/kmmap/kmmap/internal/toolchain"
	"github.com/kmmap/kmmap/kernels"
	"github.com/kmmap/kmmap/vmtests"
)

// kmmap's policy on its own code: the module is clean under checkpatch and
// sparse, the workflows match the lock and lint clean. The harness checks
// none of this of a user's module.

// checkout is the kmmap checkout these tests are in and its kernel lock.
func checkout(t *testing.T) (string, *kernels.Lock) {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	lock, err := kernels.LoadLock(filepath.Join(root, "kernels", "kernels.lock"))
	if err != nil {
		t.Fatal(err)
	}
	return root, lock
}

// harness is kmmap's harness, configured from the environment, for what
// it fetches (the module and suite are not run here).
func harness(t *testing.T) *vmtests.Harness {
	t.Helper()
	cfg, err := vmtests.ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	root, _ := checkout(t)
	h, err := vmtests.New(vmtests.Module{Dir: filepath.Join(root, ModuleDir)}, vmtests.Guest{Dir: root, Package: GuestPackage, Tags: []string{GuestTag}},
		vmtests.WithConfig(cfg), vmtests.WithRoot(root))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// moduleFiles lists the module's kernel sources in kmod, relative to it
// (examples/ is userland C, held to -Wall -Wextra -Werror instead).
func moduleFiles(t *testing.T, kmod string) []string {
	t.Helper()
	files, err := moddir.Sources(kmod)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		if strings.HasPrefix(f, "examples/") {
			continue
		}
		if strings.HasSuffix(f, ".c") || strings.HasSuffix(f, ".h") || filepath.Base(f) == "Kbuild" {
			out = append(out, f)
		}
	}
	return out
}

// TestCheckpatch: the module is clean under checkpatch.pl --strict, taken
// from the kernel source package the lock pins.
func TestCheckpatch(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("perl"); err != nil {
		t.Fatal("perl not found (apt-get install perl): checkpatch.pl needs it")
	}
	root, lock := checkout(t)
	f, err := harness(t).Fetcher(t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := f.Checkpatch(context.Background(), lock.Checkpatch)
	if err != nil {
		t.Fatal(err)
	}
	// kmod/, and the module kmmap init writes for a user.
	project := filepath.Join(t.TempDir(), "hello")
	if _, err := scaffold.Write(project, scaffold.Project{Name: "hello"}); err != nil {
		t.Fatal(err)
	}
	for _, kmod := range []string{filepath.Join(root, "kmod"), filepath.Join(project, "kmod")} {
		args := append([]string{filepath.Join(dir, "checkpatch.pl"), "--strict", "--no-tree", "--no-summary", "--terse", "--color=never", "-f"}, moduleFiles(t, kmod)...)
		cmd := exec.Command("perl", args...)
		cmd.Dir = kmod
		out, err := cmd.CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("checkpatch.pl --strict (%s) is not clean in %s: %v\n%s", lock.Checkpatch.Package.Name, kmod, err, out)
		}
	}
}

var sparseWarning = regexp.MustCompile(`(?m)^.*: (warning|error): .*$`)

// TestSparse: sparse (make C=2 W=1) finds nothing in the module, built
// against the first kernel this host builds with its own toolchain.
func TestSparse(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("sparse"); err != nil {
		t.Fatal("sparse not found (apt-get install sparse)")
	}
	root, lock := checkout(t)
	h := harness(t)
	f, err := h.Fetcher(t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	var tree *kernels.Tree
	for _, k := range lock.Kernels {
		if k.Arch == "amd64" && !toolchain.NeedsRoot(k) && h.Config().Selects(k) {
			if tree, err = f.Fetch(context.Background(), k); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if tree == nil {
		t.Skip("no selected amd64 cell is built with the host's own toolchain")
	}
	tmp := t.TempDir()
	if err := moddir.Copy(tmp, filepath.Join(root, ModuleDir)); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("make", "-C", tree.KDir, "M="+tmp, "C=2", "W=1", "modules")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make C=2 W=1 against %s: %v\n%s", tree.Kernel.ID, err, out)
	}
	if w := sparseWarning.FindAllString(string(out), -1); len(w) > 0 {
		t.Errorf("sparse and W=1 against %s are not clean:\n%s", tree.Kernel.ID, strings.Join(w, "\n"))
	}
	if !strings.Contains(string(out), "CHECK") {
		t.Errorf("make C=2 ran no sparse CHECK step:\n%s", out)
	}
	_ = os.RemoveAll(tmp)
}
