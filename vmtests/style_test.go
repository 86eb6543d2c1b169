package vmtests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kmmap/kmmap/internal/scaffold"
)

// moduleFiles lists the module's kernel sources, relative to kmod/
// (examples/ is userland C, held to -Wall -Wextra -Werror instead).
func moduleFiles(t *testing.T, kmod string) []string {
	t.Helper()
	files, err := sources(kmod)
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
	root, lock := loadLock(t)
	f := cellFetcher(t)
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

// TestIoctlMagicFree: kmmap's ioctl numbers are registered to no one in
// the kernel's ioctl-number.rst (the harness checks every module's before
// building it: checkIoctls), and a copy whose code is the tty layer's 'T'
// is refused, naming the line that defines it and the registry's owner.
func TestIoctlMagicFree(t *testing.T) {
	t.Parallel()
	root, _ := loadLock(t)
	h := kmmapHarness(t)
	f := cellFetcher(t)
	if err := h.checkIoctls(t.Context(), f, kmmapModule(root)); err != nil {
		t.Error(err)
	}
	clash := t.TempDir()
	if err := copySources(clash, filepath.Join(root, "kmod")); err != nil {
		t.Fatal(err)
	}
	hdr := filepath.Join(clash, "include", "uapi", "linux", "kmmap.h")
	b, err := os.ReadFile(hdr)
	if err != nil {
		t.Fatal(err)
	}
	magic := regexp.MustCompile(`(#define KMMAP_IOC_MAGIC\s+)\S+`)
	if !magic.Match(b) {
		t.Fatal("kmmap.h defines no KMMAP_IOC_MAGIC")
	}
	if err := os.WriteFile(hdr, magic.ReplaceAll(b, []byte("${1}'T'")), 0o644); err != nil {
		t.Fatal(err)
	}
	err = h.checkIoctls(t.Context(), f, Module{Dir: clash})
	for _, want := range []string{clash + "/include/uapi/linux/kmmap.h:", "_IOWR(KMMAP_IOC_MAGIC, 0x01", "'T'", "ioctls.h", "AllowIoctlClash"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("a copy of kmod with KMMAP_IOC_MAGIC 'T': %v\nwant an error saying %q", err, want)
		}
	}
	if err := h.checkIoctls(t.Context(), f, Module{Dir: clash, AllowIoctlClash: true}); err != nil {
		t.Errorf("with AllowIoctlClash: %v", err)
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
	tree := hostTree(t)
	root, _ := loadLock(t)
	tmp := t.TempDir()
	if err := copySources(tmp, filepath.Join(root, "kmod")); err != nil {
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
