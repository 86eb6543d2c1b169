package vmtests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/kmmap/kmmap/kernels"
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
	if _, err := exec.LookPath("perl"); err != nil {
		t.Fatal("perl not found (apt-get install perl): checkpatch.pl needs it")
	}
	root, lock := loadLock(t)
	f := cellFetcher(t)
	dir, err := f.Checkpatch(context.Background(), lock.Checkpatch)
	if err != nil {
		t.Fatal(err)
	}
	kmod := filepath.Join(root, "kmod")
	args := append([]string{filepath.Join(dir, "checkpatch.pl"), "--strict", "--no-tree", "--no-summary", "--terse", "--color=never", "-f"}, moduleFiles(t, kmod)...)
	cmd := exec.Command("perl", args...)
	cmd.Dir = kmod
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("checkpatch.pl --strict (%s) is not clean: %v\n%s", lock.Checkpatch.Package.Name, err, out)
	}
}

// ioctlCodeRe is a row of ioctl-number.rst's table: the code (0xNN or a
// quoted character) at the start of the line.
var ioctlCodeRe = regexp.MustCompile(`(?m)^(0x[0-9A-Fa-f]{2}|'.')\s`)

// TestIoctlMagicFree: the UAPI's ioctl code is registered to no one in the
// kernel's ioctl-number.rst (of the linux-source the lock pins for
// checkpatch, the newest series), so its commands collide with no other
// driver's.
func TestIoctlMagicFree(t *testing.T) {
	root, lock := loadLock(t)
	dir, err := cellFetcher(t).Checkpatch(context.Background(), lock.Checkpatch)
	if err != nil {
		t.Fatal(err)
	}
	rst, err := os.ReadFile(filepath.Join(dir, filepath.Base(kernels.IoctlNumbers)))
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := os.ReadFile(filepath.Join(root, "kmod", "include", "uapi", "linux", "kmmap.h"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`#define KMMAP_IOC_MAGIC\s+(0x[0-9A-Fa-f]{2}|'.')`).FindSubmatch(hdr)
	if m == nil {
		t.Fatal("kmmap.h defines no KMMAP_IOC_MAGIC as 0xNN or 'c'")
	}
	code := func(s string) int {
		if strings.HasPrefix(s, "'") {
			return int(s[1])
		}
		v, _ := strconv.ParseInt(s[2:], 16, 32)
		return int(v)
	}
	magic := code(string(m[1]))
	rows := ioctlCodeRe.FindAllStringSubmatch(string(rst), -1)
	if len(rows) < 100 {
		t.Fatalf("read %d codes from %s: the table's format changed", len(rows), kernels.IoctlNumbers)
	}
	for _, r := range rows {
		if code(r[1]) == magic {
			t.Errorf("KMMAP_IOC_MAGIC %s is registered in %s (%s): pick a code the table does not list", m[1], kernels.IoctlNumbers, lock.Checkpatch.Package.Name)
		}
	}
}

var sparseWarning = regexp.MustCompile(`(?m)^.*: (warning|error): .*$`)

// TestSparse: sparse (make C=2 W=1) finds nothing in the module, built
// against the first kernel this host builds with its own toolchain.
func TestSparse(t *testing.T) {
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
