//go:build kmmap_guest

package guest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// pinRange lends [addr, addr+length) to the kernel (KMMAP_IOC_PIN on fd).
func pinRange(fd int, addr uintptr, length int) error {
	p := PinRange{Addr: uint64(addr), Length: uint64(length)}
	return ioctl(fd, IocPin, unsafe.Pointer(&p))
}

func (d *dev) pin(addr uintptr, length int) error { return pinRange(d.fd, addr, length) }

func (d *dev) pinFill(t testing.TB, seed uint64) {
	t.Helper()
	f := PinFill{Seed: seed}
	if err := ioctl(d.fd, IocPinFill, unsafe.Pointer(&f)); err != nil {
		t.Fatalf("KMMAP_IOC_PIN_FILL: %v", err)
	}
}

func (d *dev) pinWait(t testing.TB) {
	t.Helper()
	if err := ioctl(d.fd, IocPinWait, nil); err != nil {
		t.Fatalf("KMMAP_IOC_PIN_WAIT: %v", err)
	}
}

// userBuffer is anonymous memory of n pages, unmapped at the end.
func userBuffer(t testing.TB, n int) []byte {
	t.Helper()
	b, err := unix.Mmap(-1, 0, n*unix.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Munmap(b) })
	return b
}

// pinBalance returns acquired - released page pins, system wide.
func pinBalance(t testing.TB) int64 {
	v := vmstat(t, "nr_foll_pin_acquired", "nr_foll_pin_released")
	return v["nr_foll_pin_acquired"] - v["nr_foll_pin_released"]
}

// TestPinned: the kernel writes into a user buffer from a worker, through
// the pinned pages, at an unaligned start spanning several pages.
func TestPinned(t *testing.T) {
	d := openDev(t)
	before := pinBalance(t)
	buf := userBuffer(t, 4)
	start, length := 100, 3*unix.Getpagesize()
	region := buf[start : start+length]
	if err := d.pin(uintptr(unsafe.Pointer(&region[0])), length); err != nil {
		t.Fatalf("KMMAP_IOC_PIN: %v", err)
	}
	for _, seed := range []uint64{7, 8} {
		d.pinFill(t, seed)
		d.pinWait(t)
		if want := pattern(seed, length); !bytes.Equal(region, want) {
			t.Errorf("after the worker's fill %d the user buffer reads % x..., want % x...", seed, region[:8], want[:8])
		}
	}
	if buf[start-1] != 0 || buf[start+length] != 0 {
		t.Errorf("the worker wrote outside the pinned range")
	}
	if got := pinBalance(t) - before; got <= 0 {
		t.Errorf("pins held while registered: %d, want > 0", got)
	}
	if err := d.pin(uintptr(unsafe.Pointer(&buf[0])), 10); !errors.Is(err, unix.EBUSY) {
		t.Errorf("second PIN: err = %v, want EBUSY", err)
	}
	if err := ioctl(d.fd, IocUnpin, nil); err != nil {
		t.Fatalf("KMMAP_IOC_UNPIN: %v", err)
	}
	if got := pinBalance(t) - before; got != 0 {
		t.Errorf("after UNPIN, %d pins are still held", got)
	}
	if err := d.pin(uintptr(unsafe.Pointer(&buf[0])), 10); err != nil {
		t.Errorf("PIN after UNPIN: %v", err)
	}
}

// TestPinnedReleasedOnClose: close() without UNPIN releases every pin.
func TestPinnedReleasedOnClose(t *testing.T) {
	before := pinBalance(t)
	d := openDev(t)
	buf := userBuffer(t, 2)
	if err := d.pin(uintptr(unsafe.Pointer(&buf[0])), len(buf)); err != nil {
		t.Fatal(err)
	}
	d.pinFill(t, 9)
	d.close(t) // waits for the worker, then unpins
	if got := pinBalance(t) - before; got != 0 {
		t.Errorf("after close, %d pins are still held", got)
	}
}

func TestBadPin(t *testing.T) {
	parallel(t)
	d := openDev(t)
	buf := userBuffer(t, 1)
	addr := uintptr(unsafe.Pointer(&buf[0]))
	for _, c := range []struct {
		name   string
		addr   uintptr
		length int
		want   error
	}{
		{"zero length", addr, 0, unix.EINVAL},
		{"too long", addr, (MaxPages + 1) * unix.Getpagesize(), unix.EINVAL},
		{"wraps around", ^uintptr(0) - 10, 100, unix.EINVAL},
		{"unmapped", 4096, 100, unix.EFAULT},
		{"kernel address", ^uintptr(0) &^ 0xfffff, 100, unix.EFAULT},
	} {
		if err := d.pin(c.addr, c.length); !errors.Is(err, c.want) {
			t.Errorf("PIN %s (addr %#x, len %d): err = %v, want %v", c.name, c.addr, c.length, err, c.want)
			_ = ioctl(d.fd, IocUnpin, nil)
		}
	}
	ro, err := unix.Mmap(-1, 0, unix.Getpagesize(), unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(ro)
	if err := d.pin(uintptr(unsafe.Pointer(&ro[0])), len(ro)); !errors.Is(err, unix.EFAULT) {
		t.Errorf("PIN of read-only memory: err = %v, want EFAULT", err)
	}
}

// movableRanges returns the PFN ranges [start, end) of every populated
// ZONE_MOVABLE in /proc/zoneinfo: none unless the kernel booted with
// movablecore= or kernelcore=.
func movableRanges(t testing.TB) [][2]uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/zoneinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]uint64
	for _, zone := range strings.Split("\n"+string(b), "\nNode ") {
		first, _, _ := strings.Cut(zone, "\n") // "0, zone  Movable"
		if f := strings.Fields(first); len(f) != 3 || f[1] != "zone" || f[2] != "Movable" {
			continue
		}
		var start, spanned uint64
		for _, l := range strings.Split(zone, "\n") {
			f := strings.Fields(l)
			switch {
			case len(f) == 2 && f[0] == "spanned":
				spanned, _ = strconv.ParseUint(f[1], 10, 64)
			case len(f) == 2 && f[0] == "start_pfn:":
				start, _ = strconv.ParseUint(f[1], 10, 64)
			}
		}
		if spanned > 0 {
			out = append(out, [2]uint64{start, start + spanned})
		}
	}
	return out
}

// TestPinLongTermLeavesMovable: a pin held until UNPIN is long-term
// (FOLL_LONGTERM), so the kernel moves the user's pages out of
// ZONE_MOVABLE before it pins them (memory hot-unplug and compaction must
// be able to move what that zone holds); the user's data moves with them
// and the worker writes into the pages userland now has. On the cells
// booted with movablecore= (kernels.lock), where user pages come from
// ZONE_MOVABLE first.
func TestPinLongTermLeavesMovable(t *testing.T) {
	zones := movableRanges(t)
	if len(zones) == 0 {
		t.Skip("no ZONE_MOVABLE on this cell: it boots without movablecore= (kernels.lock gives it to the 6.12 distribution cells)")
	}
	inMovable := func(pfn uint64) bool {
		for _, z := range zones {
			if pfn >= z[0] && pfn < z[1] {
				return true
			}
		}
		return false
	}
	ps := unix.Getpagesize()
	const n = 64
	buf := userBuffer(t, n)
	copy(buf, pattern(3, len(buf)))
	count := func() (in int) {
		for i := 0; i < n; i++ {
			if inMovable(pagemapPFN(t, buf, i*ps)) {
				in++
			}
		}
		return in
	}
	before := count()
	if before == 0 {
		t.Fatalf("none of %d fresh user pages came from ZONE_MOVABLE (PFNs %v): the test shows nothing", n, zones)
	}
	d := openDev(t)
	if err := d.pin(uintptr(unsafe.Pointer(&buf[0])), len(buf)); err != nil {
		t.Fatalf("KMMAP_IOC_PIN: %v", err)
	}
	if after := count(); after > 0 {
		t.Errorf("%d of %d pinned pages are in ZONE_MOVABLE (%d were before PIN): the pin is not long-term (FOLL_LONGTERM)", after, n, before)
	}
	if !bytes.Equal(buf, pattern(3, len(buf))) {
		t.Errorf("the user's data changed when its pages were pinned")
	}
	d.pinFill(t, 11)
	d.pinWait(t)
	if !bytes.Equal(buf, pattern(11, len(buf))) {
		t.Errorf("the worker's fill is not in the pages userland has after PIN")
	}
	if err := ioctl(d.fd, IocUnpin, nil); err != nil {
		t.Fatalf("KMMAP_IOC_UNPIN: %v", err)
	}
	t.Logf("%d of %d pages in ZONE_MOVABLE %v before PIN, none after", before, n, zones)
}

// ext2Image is a small empty ext2 file system the suite carries
// (internal/kmmap.Programs makes it with mke2fs).
const ext2Image = "/kmmap/ext2.img"

// blockFS mounts a copy of ext2Image through a loop device and returns
// the mount point and a remount that drops the file system's page cache:
// a file system whose pages reach a block device through writeback.
// Cells that load no loop or ext4 module (kernels.lock's guest_modules)
// skip, loudly.
func blockFS(t *testing.T) (dir string, remount func()) {
	t.Helper()
	fss, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := unix.Open("/dev/loop-control", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil || !strings.Contains(string(fss), "\text2\n") {
		if err == nil {
			unix.Close(ctl)
		}
		t.Skipf("SKIP LOUDLY: no loop device (%v) or no ext2 in /proc/filesystems on this cell: kernels.lock loads loop and ext4 (guest_modules) on the amd64 distribution cells", err)
	}
	defer unix.Close(ctl)
	img := filepath.Join(t.TempDir(), "ext2.img")
	b, err := os.ReadFile(ext2Image)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, b, 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
	if err != nil {
		t.Fatalf("LOOP_CTL_GET_FREE: %v", err)
	}
	backing, err := unix.Open(img, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(backing)
	dev := fmt.Sprintf("/dev/loop%d", n)
	loop, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetInt(loop, unix.LOOP_SET_FD, backing); err != nil {
		unix.Close(loop)
		t.Fatalf("LOOP_SET_FD %s: %v", dev, err)
	}
	dir = t.TempDir()
	mount := func() {
		if err := unix.Mount(dev, dir, "ext2", 0, ""); err != nil {
			t.Fatalf("mount %s (ext2) on %s: %v", dev, dir, err)
		}
	}
	mount()
	mounted := true
	t.Cleanup(func() {
		if mounted {
			if err := unix.Unmount(dir, 0); err != nil {
				t.Errorf("umount %s: %v", dir, err)
			}
		}
		if err := unix.IoctlSetInt(loop, unix.LOOP_CLR_FD, 0); err != nil {
			t.Errorf("LOOP_CLR_FD %s: %v", dev, err)
		}
		unix.Close(loop)
	})
	return dir, func() {
		mounted = false
		if err := unix.Unmount(dir, 0); err != nil {
			t.Fatalf("umount %s: %v", dir, err)
		}
		mount()
		mounted = true
	}
}

// TestPinFileWriteback: pages the kernel wrote through a pin are dirty
// when unpinned, so writeback keeps the write. A shared mapping of a file
// on a block-backed file system is faulted in and written back (clean,
// write-protected), pinned, written back again, filled by the worker and
// unpinned; the file read again from the device must hold the fill. From
// 6.5 the kernel refuses a long-term writable pin of such a file
// (FOLL_LONGTERM, dirty tracking: EFAULT), and the module must hold
// nothing after the refusal.
func TestPinFileWriteback(t *testing.T) {
	dir, remount := blockFS(t)
	ps := unix.Getpagesize()
	size := 4 * ps
	path := filepath.Join(dir, "pinned")
	if err := os.WriteFile(path, pattern(5, size), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	mapped := true
	defer func() {
		if mapped {
			unix.Munmap(m)
		}
	}()
	copy(m, pattern(5, size)) // faulted in writable
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		t.Fatalf("msync: %v", err)
	}
	before := pinBalance(t)
	d := openDev(t)
	err = d.pin(uintptr(unsafe.Pointer(&m[0])), size)
	if !kernelBefore(t, 6, 5) {
		if !errors.Is(err, unix.EFAULT) {
			t.Fatalf("PIN of a shared file mapping that needs dirty tracking: err = %v, want EFAULT (6.5 and later refuse a long-term writable pin of it: is the pin FOLL_LONGTERM?)", err)
		}
		if got := pinBalance(t) - before; got != 0 {
			t.Errorf("after the refused PIN, %d pins are held", got)
		}
		f := PinFill{Seed: 6}
		if err := ioctl(d.fd, IocPinFill, unsafe.Pointer(&f)); !errors.Is(err, unix.EINVAL) {
			t.Errorf("PIN_FILL after the refused PIN: err = %v, want EINVAL (nothing is pinned)", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("KMMAP_IOC_PIN of a shared file mapping: %v", err)
	}
	// Writeback between the pin and the kernel's write: the pages are
	// clean again when the worker writes them through its mapping.
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		t.Fatalf("msync: %v", err)
	}
	d.pinFill(t, 6)
	d.pinWait(t)
	if !bytes.Equal(m, pattern(6, size)) {
		t.Fatalf("the worker's fill is not in the mapped file")
	}
	if err := ioctl(d.fd, IocUnpin, nil); err != nil {
		t.Fatalf("KMMAP_IOC_UNPIN: %v", err)
	}
	if err := unix.Munmap(m); err != nil {
		t.Fatal(err)
	}
	mapped = false
	f.Close()
	remount() // writes back what is dirty, then forgets every page
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, pattern(6, size)) {
		if bytes.Equal(got, pattern(5, size)) {
			t.Fatalf("the kernel's write through the pin was lost at writeback: the file holds what it held before the fill (UNPIN must dirty the pages it wrote: unpin_user_pages_dirty_lock)")
		}
		t.Fatalf("the file holds neither the fill nor what it held before")
	}
}
