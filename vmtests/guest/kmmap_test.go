//go:build kmmap_guest

package guest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestInfo(t *testing.T) {
	parallel(t)
	d := openDev(t)
	ps := os.Getpagesize()
	if d.ps() != ps {
		t.Errorf("page_size = %d, getpagesize() = %d", d.ps(), ps)
	}
	if *wantPageSize != 0 && ps != *wantPageSize {
		t.Errorf("getpagesize() = %d, but the kernel's config says %d", ps, *wantPageSize)
	}
	if d.info.Nr_pages != DefaultPages || d.info.Backing != BackingFault {
		t.Errorf("a new file has %d pages of backing %d, want %d of fault", d.info.Nr_pages, d.info.Backing, DefaultPages)
	}
	t.Logf("page size %d", ps)
	forEachBacking(t, 8, func(t *testing.T, d *dev) {
		if d.info.Size != uint64(d.info.Nr_pages)*uint64(d.info.Page_size) {
			t.Errorf("size = %d, want nr_pages*page_size", d.info.Size)
		}
		seen := map[uint64]bool{}
		for i, pfn := range d.pfns {
			if pfn == 0 || seen[pfn] {
				t.Errorf("kernel PFN of page %d = %#x: zero or repeated (%#x)", i, pfn, d.pfns)
			}
			seen[pfn] = true
			if d.info.Backing == BackingPFN && pfn != d.pfns[0]+uint64(i) {
				t.Errorf("pfn backing: page %d at PFN %#x, not contiguous after %#x", i, pfn, d.pfns[0])
			}
		}
		t.Logf("kernel PFNs %#x", d.pfns)
	})
}

// TestMappingIsNormalMemory: every backing maps the buffer as the kernel
// holds it, ordinary cached memory, on which userland does what it does
// with any memory: unaligned loads and stores (memcpy's tails, packed
// records), and atomics, whose result the kernel sees. A backing mapped
// uncached (pgprot_noncached) is Device memory on arm64, where an
// unaligned access faults (SIGBUS) and the mapping aliases the kernel's
// cached one with other attributes.
func TestMappingIsNormalMemory(t *testing.T) {
	parallel(t)
	forEachBacking(t, 2, func(t *testing.T, d *dev) {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		m := d.mmap(t, 0, d.size())
		base := unsafe.Pointer(&m[0])
		for _, off := range []int{1, 3, 7, d.ps() - 3} {
			p := (*uint64)(unsafe.Add(base, off))
			v, ok := load(p)
			if !ok {
				t.Fatalf("an unaligned 8-byte load at offset %d faulted: the mapping is not normal memory", off)
			}
			if !store(p, v^0x0102030405060708) {
				t.Fatalf("an unaligned 8-byte store at offset %d faulted: the mapping is not normal memory", off)
			}
		}
		word := (*uint64)(unsafe.Add(base, 2*8))
		atomic.StoreUint64(word, 0)
		for range 1000 {
			atomic.AddUint64(word, 3)
		}
		if got := atomic.LoadUint64(word); got != 3000 {
			t.Errorf("1000 atomic adds of 3: %d", got)
		}
		if got, want := d.checksum(t, 0, d.ps()), FNV1a(m[:d.ps()]); got != want {
			t.Errorf("the kernel's checksum of page 0 %#x, the mapping's %#x: the kernel does not see what userland stored", got, want)
		}
	})
}

// TestTwoMappingsReadKernelContents is the first thing to show: two mmaps of
// one fd are two different addresses that both show what the kernel holds.
func TestTwoMappingsReadKernelContents(t *testing.T) {
	parallel(t)
	forEachBacking(t, 4, func(t *testing.T, d *dev) {
		d.fillPages(t, 100)
		m1, m2 := d.mmap(t, 0, d.size()), d.mmap(t, 0, d.size())
		if &m1[0] == &m2[0] {
			t.Fatalf("both mmaps returned %p", &m1[0])
		}
		for p := 0; p < d.npages(); p++ {
			want := pattern(100+uint64(p), d.ps())
			for i, m := range [][]byte{m1, m2} {
				if got := m[p*d.ps() : (p+1)*d.ps()]; !bytes.Equal(got, want) {
					t.Errorf("mapping %d, page %d: reads % x..., want % x...", i+1, p, got[:8], want[:8])
				}
			}
		}
	})
}

func TestWriteVisibleInOtherMapping(t *testing.T) {
	parallel(t)
	forEachBacking(t, 4, func(t *testing.T, d *dev) {
		m1, m2 := d.mmap(t, 0, d.size()), d.mmap(t, 0, d.size())
		for p := 0; p < d.npages(); p++ {
			copy(m1[p*d.ps():], pattern(200+uint64(p), d.ps()))
		}
		for p := 0; p < d.npages(); p++ {
			if got, want := m2[p*d.ps():(p+1)*d.ps()], pattern(200+uint64(p), d.ps()); !bytes.Equal(got, want) {
				t.Errorf("page %d written through mapping 1 reads % x... through mapping 2, want % x...", p, got[:8], want[:8])
			}
		}
	})
}

// TestSamePages: both mappings are backed by the pages the kernel
// allocated. pagemap proves it where it can see the PFN; a VM_PFNMAP
// mapping (the pfn backing) shows none, so there the proof is that each
// page's distinct content crosses between the kernel and both mappings.
func TestSamePages(t *testing.T) {
	parallel(t)
	forEachBacking(t, 4, func(t *testing.T, d *dev) {
		m1, m2 := d.mmap(t, 0, d.size()), d.mmap(t, 0, d.size())
		if d.info.Backing == BackingPFN {
			if e := pagemapEntry(t, m1, 0); e&(1<<55-1) != 0 {
				t.Logf("note: this kernel shows PFN %#x for a VM_PFNMAP page", e&(1<<55-1))
			}
			for p := 0; p < d.npages(); p++ {
				off := p * d.ps()
				copy(m1[off:off+d.ps()], pattern(300+uint64(p), d.ps()))
				if got, want := d.checksum(t, off, d.ps()), FNV1a(m2[off:off+d.ps()]); got != want {
					t.Errorf("page %d: kernel checksum %#x, mapping 2 checksum %#x", p, got, want)
				}
			}
			return
		}
		for p := 0; p < d.npages(); p++ {
			pfn1, pfn2 := pagemapPFN(t, m1, p*d.ps()), pagemapPFN(t, m2, p*d.ps())
			if pfn1 != pfn2 || pfn1 != d.pfns[p] {
				t.Errorf("page %d: mapping 1 PFN %#x, mapping 2 PFN %#x, kernel PFN %#x: want all equal", p, pfn1, pfn2, d.pfns[p])
			}
		}
	})
}

func TestUserWriteVisibleToKernel(t *testing.T) {
	parallel(t)
	forEachBacking(t, 4, func(t *testing.T, d *dev) {
		m := d.mmap(t, 0, d.size())
		for p := 0; p < d.npages(); p++ {
			copy(m[p*d.ps():], pattern(400+uint64(p), d.ps()))
		}
		for p := 0; p < d.npages(); p++ {
			want := pattern(400+uint64(p), d.ps())
			if got := d.checksum(t, p*d.ps(), d.ps()); got != FNV1a(want) {
				t.Errorf("page %d written by user: kernel checksum %#x, want %#x", p, got, FNV1a(want))
			}
			if got := d.kernelRead(t, int64(p*d.ps()), d.ps()); !bytes.Equal(got, want) {
				t.Errorf("page %d written by user: kernel read() gives % x..., want % x...", p, got[:8], want[:8])
			}
		}
	})
}

func TestKernelWriteVisibleInMappings(t *testing.T) {
	parallel(t)
	forEachBacking(t, 4, func(t *testing.T, d *dev) {
		m1, m2 := d.mmap(t, 0, d.size()), d.mmap(t, 0, d.size())
		sink += m1[0] + m2[0] // mapped before the kernel writes: no msync, no refault
		d.fillPages(t, 500)
		last := d.npages() - 1
		viaWrite := pattern(999, d.ps())
		if n, err := unix.Pwrite(d.fd, viaWrite, int64(last*d.ps())); err != nil || n != d.ps() {
			t.Fatalf("pwrite: %d, %v", n, err)
		}
		for p := 0; p < d.npages(); p++ {
			want := pattern(500+uint64(p), d.ps())
			if p == last {
				want = viaWrite
			}
			for i, m := range [][]byte{m1, m2} {
				if got := m[p*d.ps() : (p+1)*d.ps()]; !bytes.Equal(got, want) {
					t.Errorf("kernel write to page %d: mapping %d reads % x..., want % x...", p, i+1, got[:8], want[:8])
				}
			}
		}
	})
}

// TestOffsetMapping maps windows that start inside the buffer.
func TestOffsetMapping(t *testing.T) {
	parallel(t)
	forEachBacking(t, 4, func(t *testing.T, d *dev) {
		d.fillPages(t, 600)
		for first := 1; first < d.npages(); first++ {
			m := d.mmap(t, int64(first*d.ps()), (d.npages()-first)*d.ps())
			for p := first; p < d.npages(); p++ {
				rel := (p - first) * d.ps()
				if got, want := m[rel:rel+d.ps()], pattern(600+uint64(p), d.ps()); !bytes.Equal(got, want) {
					t.Errorf("mapping at page %d: buffer page %d reads % x..., want % x...", first, p, got[:8], want[:8])
				}
				if d.info.Backing != BackingPFN {
					if pfn := pagemapPFN(t, m, rel); pfn != d.pfns[p] {
						t.Errorf("mapping at page %d: buffer page %d has PFN %#x, kernel PFN %#x", first, p, pfn, d.pfns[p])
					}
				}
			}
		}
	})
}

func TestMunmapThenClose(t *testing.T) {
	parallel(t)
	forEachBacking(t, 4, func(t *testing.T, d *dev) {
		b, err := unix.Mmap(d.fd, 0, d.size(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		b[0] = 1
		if err := unix.Munmap(b); err != nil {
			t.Errorf("munmap: %v", err)
		}
		d.close(t)
	})
}

// TestCloseThenMunmap: the mapping keeps the buffer alive after close().
func TestCloseThenMunmap(t *testing.T) {
	parallel(t)
	forEachBacking(t, 4, func(t *testing.T, d *dev) {
		d.fillPages(t, 700)
		b, err := unix.Mmap(d.fd, 0, d.size(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		d.close(t)
		for p := 0; p < d.npages(); p++ { // touched for the first time after close
			if got, want := b[p*d.ps():(p+1)*d.ps()], pattern(700+uint64(p), d.ps()); !bytes.Equal(got, want) {
				t.Errorf("after close, page %d reads % x..., want % x...", p, got[:8], want[:8])
			}
		}
		copy(b, pattern(1, d.ps()))
		if err := unix.Munmap(b); err != nil {
			t.Errorf("munmap: %v", err)
		}
	})
}

// TestUnloadRefusedWhileMapped: a mapping whose file is closed still holds
// the module.
func TestUnloadRefusedWhileMapped(t *testing.T) {
	d := openDev(t)
	b := d.mmap(t, 0, d.size())
	d.close(t)
	err := unix.DeleteModule("kmmap", unix.O_NONBLOCK)
	if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EBUSY) {
		t.Fatalf("delete_module(kmmap) while mapped: %v, want EWOULDBLOCK or EBUSY", err)
	}
	b[0] = 1
}

func TestBadMmap(t *testing.T) {
	parallel(t)
	forEachBacking(t, 4, func(t *testing.T, d *dev) {
		ps, size := d.ps(), d.size()
		rw := unix.PROT_READ | unix.PROT_WRITE
		for _, c := range []struct {
			name   string
			off    int64
			length int
			prot   int
			flags  int
			want   error
		}{
			{"longer than buffer", 0, size + ps, rw, unix.MAP_SHARED, unix.EINVAL},
			{"offset at end", int64(size), ps, rw, unix.MAP_SHARED, unix.EINVAL},
			{"offset past end", int64(size + 8*ps), ps, rw, unix.MAP_SHARED, unix.EINVAL},
			{"offset plus length past end", int64(size - ps), 2 * ps, rw, unix.MAP_SHARED, unix.EINVAL},
			{"huge offset", int64(1) << 50, ps, rw, unix.MAP_SHARED, unix.EINVAL},
			{"unaligned offset", 1, ps, rw, unix.MAP_SHARED, unix.EINVAL},
			{"zero length", 0, 0, rw, unix.MAP_SHARED, unix.EINVAL},
			{"executable", 0, ps, rw | unix.PROT_EXEC, unix.MAP_SHARED, unix.EPERM},
			{"private", 0, ps, rw, unix.MAP_PRIVATE, unix.EINVAL},
		} {
			b, err := unix.Mmap(d.fd, c.off, c.length, c.prot, c.flags)
			if err == nil {
				_ = unix.Munmap(b)
			}
			if !errors.Is(err, c.want) {
				t.Errorf("mmap %s (off=%d, len=%d, prot=%#x, flags=%#x): err = %v, want %v", c.name, c.off, c.length, c.prot, c.flags, err, c.want)
			}
		}
		m := d.mmap(t, 0, ps)
		if _, err := unix.Mremap(m, 2*ps, unix.MREMAP_MAYMOVE); !errors.Is(err, unix.EFAULT) {
			t.Errorf("mremap growth: err = %v, want EFAULT (VM_DONTEXPAND)", err)
		}
		if err := unix.Mprotect(m, unix.PROT_READ|unix.PROT_EXEC); !errors.Is(err, unix.EACCES) {
			t.Errorf("mprotect(PROT_EXEC): err = %v, want EACCES (VM_MAYEXEC cleared)", err)
		}
	})
}

func TestSetup(t *testing.T) {
	parallel(t)
	d := openDev(t)
	for _, c := range []struct {
		name           string
		backing, pages uint32
		want           error
	}{
		{"unknown backing", 7, 4, unix.EINVAL},
		{"zero pages", BackingFault, 0, unix.EINVAL},
		{"too many pages", BackingFault, MaxPages + 1, unix.EINVAL},
		{"ring of one page", BackingRing, 1, unix.EINVAL},
	} {
		s := Setup{Backing: c.backing, Pages: c.pages}
		if err := ioctl(d.fd, IocSetup, unsafe.Pointer(&s)); !errors.Is(err, c.want) {
			t.Errorf("setup %s: err = %v, want %v", c.name, err, c.want)
		}
	}
	d.setup(t, BackingPFN, 16)
	m := d.mmap(t, 0, d.ps())
	s := Setup{Backing: BackingFault, Pages: 4}
	if err := ioctl(d.fd, IocSetup, unsafe.Pointer(&s)); !errors.Is(err, unix.EBUSY) {
		t.Errorf("setup while mapped: err = %v, want EBUSY", err)
	}
	d.unmap(t, m)
	d.setup(t, BackingInsert, MaxPages) // allowed again once unmapped
}

func TestBadIoctl(t *testing.T) {
	parallel(t)
	d := openDev(t)
	size := uint64(d.size())
	var info Info
	if err := ioctl(d.fd, IocInfo&^0xff|0x7f, unsafe.Pointer(&info)); !errors.Is(err, unix.ENOTTY) {
		t.Errorf("unknown ioctl: err = %v, want ENOTTY", err)
	}
	// The numbers of the first ABI, under the magic 'k' that
	// ioctl-number.rst gives to others, and INFO with its old size.
	for _, req := range []uint{0xc0206b01, 0x40086b02, IocInfo&^(0x3fff<<16) | 32<<16} {
		if err := ioctl(d.fd, req, unsafe.Pointer(&info)); !errors.Is(err, unix.ENOTTY) {
			t.Errorf("ioctl %#x (not of this ABI): err = %v, want ENOTTY", req, err)
		}
	}
	for _, req := range []uint{IocInfo, IocSetup, IocFill, IocChecksum, IocPin, IocPinFill} {
		if err := ioctl(d.fd, req, nil); !errors.Is(err, unix.EFAULT) {
			t.Errorf("ioctl %#x with a NULL argument: err = %v, want EFAULT", req, err)
		}
	}
	for _, r := range []Range{
		{Offset: size + 1},
		{Offset: 0, Length: size + 1},
		{Offset: size, Length: 1},
		{Offset: 1, Length: ^uint64(0)}, // offset + length overflows
		{Offset: ^uint64(0), Length: 2},
	} {
		for _, req := range []uint{IocFill, IocChecksum} {
			if err := ioctl(d.fd, req, unsafe.Pointer(&r)); !errors.Is(err, unix.EINVAL) {
				t.Errorf("ioctl %#x range off=%#x len=%#x: err = %v, want EINVAL", req, r.Offset, r.Length, err)
			}
		}
	}
	var rc RingCtl
	for _, req := range []uint{IocRingEmit, IocRingTimer} {
		if err := ioctl(d.fd, req, unsafe.Pointer(&rc)); !errors.Is(err, unix.EINVAL) {
			t.Errorf("ring ioctl %#x on a fault buffer: err = %v, want EINVAL", req, err)
		}
	}
	pf := PinFill{Seed: 1}
	if err := ioctl(d.fd, IocPinFill, unsafe.Pointer(&pf)); !errors.Is(err, unix.EINVAL) {
		t.Errorf("PIN_FILL with nothing pinned: err = %v, want EINVAL", err)
	}
	if err := ioctl(d.fd, IocUnpin, nil); !errors.Is(err, unix.EINVAL) {
		t.Errorf("UNPIN with nothing pinned: err = %v, want EINVAL", err)
	}
}

func TestReadWriteBounds(t *testing.T) {
	parallel(t)
	d := openDev(t)
	size := int64(d.size())
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
	if n, err := unix.Pwrite(d.fd, make([]byte, 64), size-16); n != 16 || err != nil {
		t.Errorf("pwrite across end: %d, %v; want 16 (short), nil", n, err)
	}
	if n, err := unix.Pwrite(d.fd, nil, size); n != 0 || err != nil {
		t.Errorf("empty pwrite at end: %d, %v; want 0, nil", n, err)
	}
}

// TestReadWriteFaults: a copy to or from a user buffer that faults part way
// is short, as for a file (the kernel may stop a little before the fault,
// never after it); one that faults at once fails with EFAULT.
func TestReadWriteFaults(t *testing.T) {
	parallel(t)
	d := openDev(t)
	ps := unix.Getpagesize()
	if d.size() < 2*ps {
		t.Fatalf("the default buffer is %d bytes, this test needs two pages", d.size())
	}
	buf := userBuffer(t, 2)
	if err := unix.Mprotect(buf[ps:], unix.PROT_NONE); err != nil {
		t.Fatal(err)
	}
	if n, err := unix.Pread(d.fd, buf, 0); n <= 0 || n > ps || err != nil {
		t.Errorf("pread into a buffer whose second page faults: %d, %v; want 1..%d, nil", n, err, ps)
	}
	if n, err := unix.Pwrite(d.fd, buf, 0); n <= 0 || n > ps || err != nil {
		t.Errorf("pwrite from a buffer whose second page faults: %d, %v; want 1..%d, nil", n, err, ps)
	}
	if n, err := unix.Pread(d.fd, buf[ps:], 0); !errors.Is(err, unix.EFAULT) {
		t.Errorf("pread into an inaccessible buffer: %d, %v; want EFAULT", n, err)
	}
	if n, err := unix.Pwrite(d.fd, buf[ps:], 0); !errors.Is(err, unix.EFAULT) {
		t.Errorf("pwrite from an inaccessible buffer: %d, %v; want EFAULT", n, err)
	}
}

// TestCDemo runs kmod/examples/demo.c: a C program written against the UAPI
// header alone uses every backing, the pinned buffer and the ring.
func TestCDemo(t *testing.T) {
	parallel(t)
	mark(t)
	runDemo(t, "/kmmap/kmmap-demo")
}

// runDemo runs a build of the C demo, as root and as an unprivileged user
// (uid 65534: no CAP_IPC_LOCK, the default RLIMIT_MEMLOCK), and checks it
// reports every part each time.
func runDemo(t *testing.T, path string) {
	t.Helper()
	for _, as := range []struct {
		who  string
		attr *syscall.SysProcAttr
	}{{"root", nil}, {"uid 65534", nobody}} {
		cmd := exec.Command(path)
		cmd.SysProcAttr = as.attr
		out, err := cmd.CombinedOutput()
		t.Logf("%s as %s:\n%s", path, as.who, out)
		if err != nil {
			t.Fatalf("%s as %s: %v", path, as.who, err)
		}
		for _, want := range []string{"fault ok", "pfn ok", "insert ok", "ring ok", "pinned ok"} {
			if !bytes.Contains(out, []byte("demo: "+want)) {
				t.Errorf("%s as %s did not report %q", path, as.who, want)
			}
		}
	}
}

// vmFlags returns the VmFlags of the mapping that starts at b, from
// /proc/self/smaps.
func vmFlags(t *testing.T, b []byte) []string {
	t.Helper()
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	start := fmt.Sprintf("%x-", uintptr(unsafe.Pointer(&b[0])))
	in := false
	for _, l := range strings.Split(string(smaps), "\n") {
		if strings.HasPrefix(l, start) {
			in = true
		}
		if f, ok := strings.CutPrefix(l, "VmFlags:"); ok && in {
			return strings.Fields(f)
		}
	}
	t.Fatalf("no smaps entry for the mapping at %s", start)
	return nil
}

// TestVMFlags: every mapping is kept out of core dumps (dd), cannot grow
// (de) and can never become executable (no ex, no me).
func TestVMFlags(t *testing.T) {
	parallel(t)
	forEachBacking(t, 2, func(t *testing.T, d *dev) {
		flags := vmFlags(t, d.mmap(t, 0, d.size()))
		for _, want := range []string{"dd", "de", "sh"} {
			if !slices.Contains(flags, want) {
				t.Errorf("VmFlags %v lack %q", flags, want)
			}
		}
		for _, bad := range []string{"ex", "me"} {
			if slices.Contains(flags, bad) {
				t.Errorf("VmFlags %v have %q", flags, bad)
			}
		}
		if d.info.Backing == BackingPFN && !slices.Contains(flags, "pf") {
			t.Errorf("pfn backing: VmFlags %v lack pf (VM_PFNMAP)", flags)
		}
	})
}

// TestUserCopyFaults: every copy back to userland can fault, and each
// fault is EFAULT with nothing else changed: the PFN array of INFO and
// the argument of INFO and CHECKSUM in read-only memory (read in, not
// written back), the ring ioctls' argument at NULL.
func TestUserCopyFaults(t *testing.T) {
	parallel(t)
	d := openDev(t)
	ps := os.Getpagesize()
	ro := func(t *testing.T, arg []byte) unsafe.Pointer {
		m, err := unix.Mmap(-1, 0, ps, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Munmap(m) })
		copy(m, arg)
		if err := unix.Mprotect(m, unix.PROT_READ); err != nil {
			t.Fatal(err)
		}
		return unsafe.Pointer(&m[0])
	}
	asBytes := func(p unsafe.Pointer, n uintptr) []byte { return unsafe.Slice((*byte)(p), n) }

	info := Info{Pfns: uint64(uintptr(ro(t, nil))), Pfns_len: 1}
	if err := ioctl(d.fd, IocInfo, unsafe.Pointer(&info)); !errors.Is(err, unix.EFAULT) {
		t.Errorf("INFO with its PFN array read-only: err = %v, want EFAULT", err)
	}
	info = Info{}
	if err := ioctl(d.fd, IocInfo, ro(t, asBytes(unsafe.Pointer(&info), unsafe.Sizeof(info)))); !errors.Is(err, unix.EFAULT) {
		t.Errorf("INFO with its argument read-only: err = %v, want EFAULT", err)
	}
	r := Range{Length: uint64(d.size())}
	if err := ioctl(d.fd, IocChecksum, ro(t, asBytes(unsafe.Pointer(&r), unsafe.Sizeof(r)))); !errors.Is(err, unix.EFAULT) {
		t.Errorf("CHECKSUM with its argument read-only: err = %v, want EFAULT", err)
	}
	d.setup(t, BackingRing, 2)
	for _, req := range []uint{IocRingEmit, IocRingTimer} {
		if err := ioctl(d.fd, req, nil); !errors.Is(err, unix.EFAULT) {
			t.Errorf("ring ioctl %#x with a NULL argument: err = %v, want EFAULT", req, err)
		}
	}
	r2 := mapRing(t, d)
	r2.emit(t, 0)
	if p := atomic.LoadUint64(&r2.hdr.Produced); p != 0 {
		t.Errorf("EMIT of 0 records produced %d", p)
	}
}

// TestKernelAddresses: INFO's PFN array and the arguments of INFO and
// CHECKSUM at a kernel address that is writable memory, the module's own
// count of live buffers: EFAULT, and the count unchanged. A copy to
// userland that skips access_ok() (a bare __put_user) reaches it on x86.
// Not parallel: the count is global, and parallel tests open files.
func TestKernelAddresses(t *testing.T) {
	d := openDev(t)
	if addr := kernelSymbol(t, "kmmap_live_buffers"); addr != 0 {
		before := moduleCounter(t, "live_buffers")
		info := Info{Pfns: addr, Pfns_len: 1}
		if err := ioctl(d.fd, IocInfo, unsafe.Pointer(&info)); !errors.Is(err, unix.EFAULT) {
			t.Errorf("INFO with its PFN array at a kernel address: err = %v, want EFAULT", err)
		}
		if err := ioctlAt(d.fd, IocInfo, uintptr(addr)); !errors.Is(err, unix.EFAULT) {
			t.Errorf("INFO with its argument at a kernel address: err = %v, want EFAULT", err)
		}
		if err := ioctlAt(d.fd, IocChecksum, uintptr(addr)); !errors.Is(err, unix.EFAULT) {
			t.Errorf("CHECKSUM with its argument at a kernel address: err = %v, want EFAULT", err)
		}
		if after := moduleCounter(t, "live_buffers"); after != before {
			t.Errorf("the module's live_buffers went from %d to %d: an ioctl wrote to the kernel address userland gave it", before, after)
		}
	}
}

// ioctlAt is ioctl with an argument that is an address and no Go pointer.
func ioctlAt(fd int, req uint, addr uintptr) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), addr)
	if errno != 0 {
		return errno
	}
	return nil
}

// kernelSymbol returns the address /proc/kallsyms gives symbol name (root
// sees addresses where kptr_restrict is 0 or 1), failing when it hides
// them, 0 when it does not list the symbol.
func kernelSymbol(t *testing.T, name string) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/kallsyms")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[2] == name {
			addr, err := strconv.ParseUint(f[0], 16, 64)
			if err != nil || addr == 0 {
				t.Fatalf("/proc/kallsyms hides %s's address (%q): not root, or kptr_restrict=2", name, l)
			}
			return addr
		}
	}
	// Debian's 5.10 and 6.1 arm64 kernels list functions only
	// (CONFIG_KALLSYMS_ALL off): there the other cells check it.
	t.Logf("/proc/kallsyms has no %s (data symbols are not listed on this kernel): no kernel address to hand the ioctls here", name)
	return 0
}

// TestParameters: nothing the module reads only at load (nr_pages) or
// counts itself (live_buffers, pinned_pages) is writable at run time
// through /sys/module/kmmap/parameters.
func TestParameters(t *testing.T) {
	mark(t)
	dir := "/sys/module/kmmap/parameters"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, e.Name())
		if info.Mode().Perm()&0o222 != 0 {
			t.Errorf("%s/%s is writable (%v): the module takes it at load only", dir, e.Name(), info.Mode().Perm())
		}
	}
	for _, want := range []string{"nr_pages", "live_buffers", "pinned_pages"} {
		if !slices.Contains(names, want) {
			t.Errorf("%s has no %s (it has %v)", dir, want, names)
		}
	}
}
