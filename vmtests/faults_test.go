package vmtests

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kmmap/kmmap/internal/arch"
	"github.com/kmmap/kmmap/internal/device"
	"github.com/u-root/mkuimage/cpio"
)

// faultCell prepares a cell of the first selected amd64 kernel whose guest
// is broken on purpose.
func faultCell(t *testing.T, initrd []byte, timeout time.Duration) *Cell {
	t.Helper()
	_, lock := loadLock(t)
	for _, k := range lock.Kernels {
		if k.Arch != "amd64" || !selected(t, k.ID) {
			continue
		}
		a, err := arch.Lookup(k.Arch)
		if err == nil {
			err = a.CheckQEMU()
		}
		if err != nil {
			t.Fatal(err)
		}
		f := cellFetcher(t)
		tree, err := f.Fetch(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "initramfs.cpio")
		if err := os.WriteFile(path, initrd, 0o644); err != nil {
			t.Fatal(err)
		}
		img, err := bootImage(tree, f.CacheDir(), t.Logf)
		if err != nil {
			t.Fatal(err)
		}
		c := &Cell{ID: k.ID + "-fault", Tree: tree, Arch: a, Image: img, Initramfs: path, Accel: "tcg", Timeout: timeout}
		c.QEMUArgs, c.KernelArgs = device.Join([]device.Device{device.SerialConsole(a), device.ExitOnPanic(), device.Accel(c.Accel, false), device.CPUs(1)})
		return c
	}
	t.Skip("no amd64 cell selected by KMMAP_CELLS: the fault tests boot an amd64 kernel")
	return nil
}

// wantProblem checks that problems hold one mentioning every string of want.
func wantProblem(t *testing.T, problems []string, want ...string) {
	t.Helper()
	for _, p := range problems {
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(p, w)
		}
		if ok {
			return
		}
	}
	t.Errorf("no problem mentions %q; got:\n%s", want, strings.Join(problems, "\n---\n"))
}

// A kernel panic ends the run at once (panic=-1 with -no-reboot), with the
// panic on the console, instead of waiting for the timeout.
func TestPanicEndsRunAtOnce(t *testing.T) {
	bootsVMs(t)
	t.Parallel()
	c := faultCell(t, []byte("not a cpio archive"), 3*time.Minute)
	r := boot(t.Context(), c, SuiteJob{})
	if r.elapsed >= time.Minute {
		t.Errorf("a panicking guest took %s to stop", r.elapsed)
	}
	p := c.problems(r)
	wantProblem(t, p, "kernel splat (panic) outside any test", "Kernel panic")
	wantProblem(t, p, "never listed its tests", "VFS") // with the console's last lines
}

// A guest that never powers off is stopped at the timeout.
func TestHungGuestTimesOut(t *testing.T) {
	bootsVMs(t)
	t.Parallel()
	c := faultCell(t, []byte("not a cpio archive"), 20*time.Second)
	c.KernelArgs = []string{"console=" + c.Arch.Console, "panic=0"} // panic, then spin forever
	r := boot(t.Context(), c, SuiteJob{})
	if r.elapsed < c.Timeout || r.err == nil {
		t.Errorf("hung guest: ran %s, err %v; want killed at the %s timeout", r.elapsed, r.err, c.Timeout)
	}
	wantProblem(t, c.problems(r), "did not power off within 20s", "KMMAP_VM_TIMEOUT", "Kernel panic")
}

// A guest that reboots instead of powering off is caught as such.
func TestRebootingGuestCaught(t *testing.T) {
	bootsVMs(t)
	t.Parallel()
	init := staticInit(t, `#include <sys/reboot.h>
#include <unistd.h>
int main(void) { sync(); return reboot(RB_AUTOBOOT); }`)
	c := faultCell(t, init, 3*time.Minute)
	r := boot(t.Context(), c, SuiteJob{})
	wantProblem(t, c.problems(r), "rebooted instead of powering off")
}

// QEMU that fails (here: a machine it does not know) fails the run with
// QEMU's own words.
func TestQEMUFailureReported(t *testing.T) {
	bootsVMs(t)
	t.Parallel()
	c := faultCell(t, []byte("x"), time.Minute)
	c.Arch.Machine = []string{"-machine", "no-such-machine"}
	r := boot(t.Context(), c, SuiteJob{})
	wantProblem(t, c.problems(r), "QEMU: exit status", "unsupported machine type")
}

func TestQEMUMissingNamesPackage(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	for name, pkg := range map[string]string{"amd64": "qemu-system-x86", "arm64": "qemu-system-arm"} {
		a, err := arch.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.CheckQEMU(); err == nil || !strings.Contains(err.Error(), "apt-get install "+pkg) {
			t.Errorf("%s without QEMU: err = %v, want one naming %s", name, err, pkg)
		}
	}
}

// staticInit compiles a C program as the initramfs's /init.
func staticInit(t *testing.T, src string) []byte {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "init.c"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("gcc", "-static", "-o", filepath.Join(dir, "init"), filepath.Join(dir, "init.c")).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "init"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w := cpio.Newc.Writer(&buf)
	if err := cpio.WriteRecords(w, []cpio.Record{cpio.StaticRecord(b, cpio.Info{Name: "init", Mode: cpio.S_IFREG | 0o755})}); err != nil {
		t.Fatal(err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
