//go:build kmmap_guest

package guest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// wantPageSize is the page size the host expects this kernel to have (from
// its config); 0 when the host does not say.
var wantPageSize = flag.Int("kmmap.pagesize", 0, "page size the kernel under test was built with")

// mark writes the test's start and end to the kernel log, so the host can
// attribute any kernel splat on the console to the test that caused it.
func mark(t *testing.T) {
	t.Helper()
	kmsg := func(what string) {
		if f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
			fmt.Fprintf(f, "<4>kmmap-test: %s %s\n", what, t.Name())
			f.Close()
		}
	}
	kmsg("start")
	t.Cleanup(func() { kmsg("end") })
}

type dev struct {
	fd   int
	info Info
	pfns []uint64
}

func openDev(t *testing.T) *dev {
	t.Helper()
	mark(t)
	fd, err := unix.Open(Device, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v (is kmmap.ko loaded?)", Device, err)
	}
	d := &dev{fd: fd}
	t.Cleanup(func() { d.close(t) })
	d.pfns = make([]uint64, 64)
	d.info = Info{PFNs: uint64(uintptr(unsafe.Pointer(&d.pfns[0]))), PFNsLen: uint32(len(d.pfns))}
	if err := ioctl(fd, IocInfo, unsafe.Pointer(&d.info)); err != nil {
		t.Fatalf("KMMAP_IOC_INFO: %v", err)
	}
	d.pfns = d.pfns[:d.info.NrPages]
	return d
}

func (d *dev) close(t *testing.T) {
	if d.fd >= 0 {
		if err := unix.Close(d.fd); err != nil {
			t.Errorf("close: %v", err)
		}
		d.fd = -1
	}
}

func ioctl(fd int, req uint, arg unsafe.Pointer) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
	if errno != 0 {
		return errno
	}
	return nil
}

func (d *dev) mmap(t *testing.T, off int64, length int) []byte {
	t.Helper()
	b, err := unix.Mmap(d.fd, off, length, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap(off=%d, len=%d): %v", off, length, err)
	}
	t.Cleanup(func() { _ = unix.Munmap(b) })
	return b
}

func (d *dev) pagesize() int { return int(d.info.PageSize) }

// pattern is page-distinct content: a buggy fault handler that maps the
// wrong page cannot pass by accident.
func pattern(seed byte, page, size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = seed ^ byte(page*37) ^ byte(i*7+i>>8)
	}
	copy(b, fmt.Sprintf("kmmap page %d seed %d", page, seed))
	return b
}

// kernelWrite writes through the module's write() (copy_from_user).
func (d *dev) kernelWrite(t *testing.T, off int64, b []byte) {
	t.Helper()
	n, err := unix.Pwrite(d.fd, b, off)
	if err != nil || n != len(b) {
		t.Fatalf("pwrite(off=%d, %d bytes) = %d, %v", off, len(b), n, err)
	}
}

// kernelRead reads through the module's read() (copy_to_user).
func (d *dev) kernelRead(t *testing.T, off int64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	got, err := unix.Pread(d.fd, b, off)
	if err != nil || got != n {
		t.Fatalf("pread(off=%d, %d bytes) = %d, %v", off, n, got, err)
	}
	return b
}

// pagemapPFN returns the PFN backing addr per /proc/self/pagemap, failing
// the test unless the page is present with a non-zero PFN: pagemap reports
// PFN 0 for pages it will not show, which would make equality trivial.
var sink byte

func pagemapPFN(t *testing.T, b []byte, off int) uint64 {
	t.Helper()
	sink += b[off] // fault it in (a blank read may be compiled away)
	addr := uintptr(unsafe.Pointer(&b[off]))
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatalf("pagemap: %v", err)
	}
	defer f.Close()
	var e [8]byte
	if _, err := f.ReadAt(e[:], int64(addr/uintptr(os.Getpagesize()))*8); err != nil {
		t.Fatalf("pagemap read: %v", err)
	}
	v := binary.LittleEndian.Uint64(e[:])
	if v&(1<<63) == 0 {
		t.Fatalf("pagemap: page at %#x not present (entry %#x)", addr, v)
	}
	pfn := v & (1<<55 - 1)
	if pfn == 0 {
		t.Fatalf("pagemap: page at %#x present but PFN hidden (entry %#x): not running as root?", addr, v)
	}
	return pfn
}

func TestInfo(t *testing.T) {
	d := openDev(t)
	ps := os.Getpagesize()
	if int(d.info.PageSize) != ps {
		t.Errorf("page_size = %d, getpagesize() = %d", d.info.PageSize, ps)
	}
	if *wantPageSize != 0 && ps != *wantPageSize {
		t.Errorf("getpagesize() = %d, but the kernel's config says %d", ps, *wantPageSize)
	}
	if d.info.NrPages != DefaultPages {
		t.Errorf("nr_pages = %d, want %d", d.info.NrPages, DefaultPages)
	}
	if d.info.Size != uint64(d.info.NrPages)*uint64(ps) {
		t.Errorf("size = %d, want nr_pages*page_size = %d", d.info.Size, uint64(d.info.NrPages)*uint64(ps))
	}
	seen := map[uint64]bool{}
	for i, pfn := range d.pfns {
		if pfn == 0 || seen[pfn] {
			t.Errorf("kernel PFN of page %d = %#x: zero or repeated (%v)", i, pfn, d.pfns)
		}
		seen[pfn] = true
	}
	t.Logf("page size %d, %d pages, kernel PFNs %#x", ps, d.info.NrPages, d.pfns)
}

// TestTwoMappingsReadKernelContents is seed 003's first step: two mmaps of
// one fd are two different addresses that both show what the kernel holds.
func TestTwoMappingsReadKernelContents(t *testing.T) {
	d := openDev(t)
	ps, size := d.pagesize(), int(d.info.Size)
	for p := 0; p < int(d.info.NrPages); p++ {
		d.kernelWrite(t, int64(p*ps), pattern(1, p, ps))
	}
	m1, m2 := d.mmap(t, 0, size), d.mmap(t, 0, size)
	if &m1[0] == &m2[0] {
		t.Fatalf("both mmaps returned %p", &m1[0])
	}
	for p := 0; p < int(d.info.NrPages); p++ {
		want := pattern(1, p, ps)
		for i, m := range [][]byte{m1, m2} {
			if got := m[p*ps : (p+1)*ps]; !bytes.Equal(got, want) {
				t.Errorf("mapping %d page %d: starts %q, want %q", i+1, p, got[:24], want[:24])
			}
		}
	}
}

func TestWriteVisibleInOtherMapping(t *testing.T) {
	d := openDev(t)
	ps, size := d.pagesize(), int(d.info.Size)
	m1, m2 := d.mmap(t, 0, size), d.mmap(t, 0, size)
	for p := 0; p < int(d.info.NrPages); p++ {
		copy(m1[p*ps:], pattern(2, p, ps))
	}
	for p := 0; p < int(d.info.NrPages); p++ {
		if got, want := m2[p*ps:(p+1)*ps], pattern(2, p, ps); !bytes.Equal(got, want) {
			t.Errorf("page %d written through mapping 1 reads %q through mapping 2, want %q", p, got[:24], want[:24])
		}
	}
}

// TestSamePFN: both mappings are backed by the same physical pages, and
// they are the pages the kernel allocated.
func TestSamePFN(t *testing.T) {
	d := openDev(t)
	ps, size := d.pagesize(), int(d.info.Size)
	m1, m2 := d.mmap(t, 0, size), d.mmap(t, 0, size)
	for p := 0; p < int(d.info.NrPages); p++ {
		pfn1, pfn2 := pagemapPFN(t, m1, p*ps), pagemapPFN(t, m2, p*ps)
		if pfn1 != pfn2 || pfn1 != d.pfns[p] {
			t.Errorf("page %d: mapping 1 PFN %#x, mapping 2 PFN %#x, kernel PFN %#x: want all equal", p, pfn1, pfn2, d.pfns[p])
		}
	}
}

func TestUserWriteVisibleToKernelRead(t *testing.T) {
	d := openDev(t)
	ps, size := d.pagesize(), int(d.info.Size)
	m := d.mmap(t, 0, size)
	for p := 0; p < int(d.info.NrPages); p++ {
		copy(m[p*ps:], pattern(3, p, ps))
	}
	for p := 0; p < int(d.info.NrPages); p++ {
		if got, want := d.kernelRead(t, int64(p*ps), ps), pattern(3, p, ps); !bytes.Equal(got, want) {
			t.Errorf("page %d written by user: kernel read() gives %q, want %q", p, got[:24], want[:24])
		}
	}
}

func TestKernelWriteVisibleInMappings(t *testing.T) {
	d := openDev(t)
	ps, size := d.pagesize(), int(d.info.Size)
	m1, m2 := d.mmap(t, 0, size), d.mmap(t, 0, size)
	_ = m1[0] + m2[0] // map before the kernel writes: no msync, no refault
	for p := 0; p < int(d.info.NrPages); p++ {
		d.kernelWrite(t, int64(p*ps), pattern(4, p, ps))
	}
	for p := 0; p < int(d.info.NrPages); p++ {
		want := pattern(4, p, ps)
		for i, m := range [][]byte{m1, m2} {
			if got := m[p*ps : (p+1)*ps]; !bytes.Equal(got, want) {
				t.Errorf("kernel write() to page %d: mapping %d reads %q, want %q", p, i+1, got[:24], want[:24])
			}
		}
	}
}

// TestOffsetMapping maps a window that starts inside the buffer.
func TestOffsetMapping(t *testing.T) {
	d := openDev(t)
	ps, n := d.pagesize(), int(d.info.NrPages)
	for p := 0; p < n; p++ {
		d.kernelWrite(t, int64(p*ps), pattern(5, p, ps))
	}
	for first := 1; first < n; first++ {
		m := d.mmap(t, int64(first*ps), (n-first)*ps)
		for p := first; p < n; p++ {
			if got, want := m[(p-first)*ps:(p-first+1)*ps], pattern(5, p, ps); !bytes.Equal(got, want) {
				t.Errorf("mapping at page %d: buffer page %d reads %q, want %q", first, p, got[:24], want[:24])
			}
			if pfn := pagemapPFN(t, m, (p-first)*ps); pfn != d.pfns[p] {
				t.Errorf("mapping at page %d: buffer page %d has PFN %#x, kernel PFN %#x", first, p, pfn, d.pfns[p])
			}
		}
	}
}

func TestMunmapThenClose(t *testing.T) {
	d := openDev(t)
	b, err := unix.Mmap(d.fd, 0, int(d.info.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	b[0] = 1
	if err := unix.Munmap(b); err != nil {
		t.Errorf("munmap: %v", err)
	}
	if err := unix.Close(d.fd); err != nil {
		t.Errorf("close: %v", err)
	}
	d.fd = -1
}

// TestCloseThenMunmap: the mapping keeps the buffer alive after close().
func TestCloseThenMunmap(t *testing.T) {
	d := openDev(t)
	ps := d.pagesize()
	want := pattern(6, 0, ps)
	d.kernelWrite(t, 0, want)
	b, err := unix.Mmap(d.fd, 0, int(d.info.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Close(d.fd); err != nil {
		t.Errorf("close: %v", err)
	}
	d.fd = -1
	if !bytes.Equal(b[:ps], want) {
		t.Errorf("after close, mapping reads %q, want %q", b[:24], want[:24])
	}
	copy(b[ps:], pattern(6, 1, ps)) // faults a page in after close
	if err := unix.Munmap(b); err != nil {
		t.Errorf("munmap: %v", err)
	}
}

func TestBadMmap(t *testing.T) {
	d := openDev(t)
	ps, size := d.pagesize(), int(d.info.Size)
	rw := unix.PROT_READ | unix.PROT_WRITE
	for _, c := range []struct {
		name   string
		off    int64
		length int
		prot   int
		want   error
	}{
		{"longer than buffer", 0, size + ps, rw, unix.EINVAL},
		{"offset at end", int64(size), ps, rw, unix.EINVAL},
		{"offset past end", int64(size + 8*ps), ps, rw, unix.EINVAL},
		{"offset plus length past end", int64(size - ps), 2 * ps, rw, unix.EINVAL},
		{"unaligned offset", 1, ps, rw, unix.EINVAL},
		{"zero length", 0, 0, rw, unix.EINVAL},
		{"executable", 0, ps, rw | unix.PROT_EXEC, unix.EPERM},
	} {
		b, err := unix.Mmap(d.fd, c.off, c.length, c.prot, unix.MAP_SHARED)
		if err == nil {
			_ = unix.Munmap(b)
		}
		if !errors.Is(err, c.want) {
			t.Errorf("mmap %s (off=%d, len=%d, prot=%#x): err = %v, want %v", c.name, c.off, c.length, c.prot, err, c.want)
		}
	}
}

func TestBadIoctl(t *testing.T) {
	d := openDev(t)
	var info Info
	if err := ioctl(d.fd, iowr('k', 0x7f, unsafe.Sizeof(info)), unsafe.Pointer(&info)); !errors.Is(err, unix.ENOTTY) {
		t.Errorf("unknown ioctl: err = %v, want ENOTTY", err)
	}
	info.Reserved = 1
	if err := ioctl(d.fd, IocInfo, unsafe.Pointer(&info)); !errors.Is(err, unix.EINVAL) {
		t.Errorf("KMMAP_IOC_INFO with reserved != 0: err = %v, want EINVAL", err)
	}
	if err := ioctl(d.fd, IocInfo, nil); !errors.Is(err, unix.EFAULT) {
		t.Errorf("KMMAP_IOC_INFO with NULL argument: err = %v, want EFAULT", err)
	}
}

func TestReadWriteBounds(t *testing.T) {
	d := openDev(t)
	size := int64(d.info.Size)
	b := make([]byte, 16)
	if n, err := unix.Pread(d.fd, b, size); n != 0 || err != nil {
		t.Errorf("pread at end: %d, %v; want 0, nil", n, err)
	}
	if n, err := unix.Pwrite(d.fd, b, size); !errors.Is(err, unix.ENOSPC) {
		t.Errorf("pwrite at end: %d, %v; want ENOSPC", n, err)
	}
	if n, err := unix.Pread(d.fd, make([]byte, 64), size-16); n != 16 || err != nil {
		t.Errorf("pread across end: %d, %v; want 16 (short), nil", n, err)
	}
}
