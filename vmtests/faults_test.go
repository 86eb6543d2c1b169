package vmtests

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kmmap/kmmap/kernels"
)

// faultCell prepares a cell of the first selected amd64 kernel whose guest
// is broken on purpose.
func faultCell(t *testing.T, initrd []byte, timeout time.Duration) *Cell {
	t.Helper()
	_, lock := loadLock(t)
	for _, k := range lock.Kernels {
		if k.Arch != "amd64" || !selected(k.ID) {
			continue
		}
		m, err := machineFor(k.Arch)
		if err != nil {
			t.Fatal(err)
		}
		f, err := kernels.NewFetcher()
		if err != nil {
			t.Fatal(err)
		}
		tree, err := f.Fetch(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "initramfs.cpio")
		if err := os.WriteFile(path, initrd, 0o644); err != nil {
			t.Fatal(err)
		}
		return &Cell{ID: k.ID + "-fault", Tree: tree, Machine: m, Initramfs: path,
			KernelArgs: kernelArgs(m), Accel: "tcg", Timeout: timeout}
	}
	t.Skip("no amd64 cell selected by KMMAP_CELLS: the fault tests boot an amd64 kernel")
	return nil
}

// A kernel panic ends the run at once (panic=-1 with -no-reboot), with the
// panic on the console, instead of waiting for the timeout.
func TestPanicEndsRunAtOnce(t *testing.T) {
	t.Parallel()
	c := faultCell(t, []byte("not a cpio archive"), 3*time.Minute)
	con, res, elapsed, _ := boot(c)
	if elapsed >= time.Minute {
		t.Errorf("a panicking guest took %s to stop", elapsed)
	}
	if got := strings.Join(con.splats[""], "\n"); !strings.Contains(got, "Kernel panic") {
		t.Errorf("panic not seen as a splat; console tail:\n%s", con.tail(15))
	}
	if len(res.list) != 0 {
		t.Errorf("a guest that never reached userland listed tests: %v", res.list)
	}
}

// A guest that never powers off is stopped at the timeout.
func TestHungGuestTimesOut(t *testing.T) {
	t.Parallel()
	c := faultCell(t, []byte("not a cpio archive"), 20*time.Second)
	c.KernelArgs = []string{"console=" + c.Machine.Console, "panic=0"} // panic, then spin forever
	con, _, elapsed, err := boot(c)
	if elapsed < c.Timeout || err == nil {
		t.Errorf("hung guest: ran %s, err %v; want killed at the %s timeout", elapsed, err, c.Timeout)
	}
	if len(con.lines) == 0 {
		t.Errorf("no console output kept from the hung guest")
	}
}
