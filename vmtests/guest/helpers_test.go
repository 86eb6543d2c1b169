//go:build kmmap_guest

package guest

import (
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/kmmap/kmmap/vmtests/testmain"
	"golang.org/x/sys/unix"
)

// wantPageSize is the page size the host expects this kernel to have (from
// its config); 0 when the host does not say.
var wantPageSize = flag.Int("kmmap.pagesize", 0, "page size the kernel under test was built with")

// backings are the mmap backings every sharing test runs on.
var backings = []struct {
	name string
	id   uint32
}{
	{"fault", BackingFault},
	{"pfn", BackingPFN},
	{"insert", BackingInsert},
	{"ring", BackingRing},
}

// forEachBacking runs f as a subtest per backing, on a fresh file set up
// with that backing and n pages.
func forEachBacking(t *testing.T, n uint32, f func(t *testing.T, d *dev)) {
	for _, b := range backings {
		t.Run(b.name, func(t *testing.T) {
			d := openDev(t)
			d.setup(t, b.id, n)
			f(t, d)
		})
	}
}

// load reads *p, and store writes v to it, or they report that the
// access faulted; the caller has turned debug.SetPanicOnFault on.
func load[T any](p *T) (v T, ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return *p, true
}

func store[T any](p *T, v T) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	*p = v
	return true
}

// mark marks a subtest in the kernel log and checks the suite's
// invariants around it, as TestMain does for every top-level test
// (testmain.Mark; a top-level test is not marked twice).
func mark(t testing.TB) {
	t.Helper()
	testmain.Mark(t)
}

// parallel runs a test that shares nothing with others in parallel with
// the others that call it, in a guest with more than one CPU
// (testmain.Parallel): those in files about one file's buffer (kmmap,
// ring, pin) and lifecycle's, but not those reading a global counter or
// forking (the child inherits every test's mappings). Tests that touch
// what is global (fault injection, module parameters, cgroups,
// credentials, unloading) and the race tests, which want the CPUs to
// themselves, do not.
func parallel(t *testing.T) {
	t.Helper()
	testmain.Parallel(t)
}

// invariants are what every test must leave as it found it: the module's
// live buffers and pinned pages (none leaked) and the page pins taken
// system-wide (every one released).
var invariants = []testmain.Invariant{
	{Name: "the module's live_buffers", Value: func() (int64, error) { return readCounter("live_buffers") }},
	{Name: "the module's pinned_pages", Value: func() (int64, error) { return readCounter("pinned_pages") }},
	{Name: "page pins held (nr_foll_pin_acquired - released)", Value: func() (int64, error) {
		v, err := readVmstat("nr_foll_pin_acquired", "nr_foll_pin_released")
		return v["nr_foll_pin_acquired"] - v["nr_foll_pin_released"], err
	}},
}

// keptFile is a /proc, /sys or /dev file opened once and then read or
// written at offset 0 with a single system call. The checks around every
// test read five such files; through os.ReadFile (open, fstat, reads in
// growing chunks, each of which makes /proc/vmstat compute every counter
// again, close) that cost 10-30 ms per test under TCG, more than most
// tests themselves, and 0.2 ms this way.
type keptFile struct {
	path string
	flag int
	once sync.Once
	fd   int
	err  error
	mu   sync.Mutex // guards buf
	buf  []byte
}

func (f *keptFile) open() error {
	f.once.Do(func() {
		f.fd, f.err = unix.Open(f.path, f.flag|unix.O_CLOEXEC, 0)
		f.buf = make([]byte, 64<<10)
	})
	return f.err
}

// read returns the file's whole content (up to 64 KiB).
func (f *keptFile) read() ([]byte, error) {
	if err := f.open(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := unix.Pread(f.fd, f.buf, 0)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", f.path, err)
	}
	return append([]byte(nil), f.buf[:n]...), nil
}

// write writes b in one call: one record for /dev/kmsg, one value for a
// sysctl.
func (f *keptFile) write(b []byte) error {
	if err := f.open(); err != nil {
		return err
	}
	if _, err := unix.Pwrite(f.fd, b, 0); err != nil {
		return fmt.Errorf("write %s: %w", f.path, err)
	}
	return nil
}

var (
	vmstatFile      = &keptFile{path: "/proc/vmstat", flag: unix.O_RDONLY}
	statRefreshFile = &keptFile{path: "/proc/sys/vm/stat_refresh", flag: unix.O_WRONLY}
	counterFiles    = map[string]*keptFile{}
	counterFilesMu  sync.Mutex
)

// moduleCounter reads one of kmmap's counters from sysfs.
func moduleCounter(t testing.TB, name string) int64 {
	t.Helper()
	n, err := readCounter(name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func readCounter(name string) (int64, error) {
	counterFilesMu.Lock()
	f := counterFiles[name]
	if f == nil {
		f = &keptFile{path: "/sys/module/kmmap/parameters/" + name, flag: unix.O_RDONLY}
		counterFiles[name] = f
	}
	counterFilesMu.Unlock()
	b, err := f.read()
	if err != nil {
		return 0, fmt.Errorf("module counter %s: %w", name, err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("module counter %s: %q", name, b)
	}
	return n, nil
}

type dev struct {
	fd   int
	info Info
	pfns []uint64
	mu   sync.Mutex
	maps map[*byte]bool // what mmap mapped and unmap has not unmapped
}

func openDev(t testing.TB) *dev {
	t.Helper()
	mark(t)
	fd, err := unix.Open(Device, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v (is kmmap.ko loaded?)", Device, err)
	}
	d := &dev{fd: fd}
	t.Cleanup(func() { d.close(t) })
	d.refreshInfo(t)
	return d
}

// infoPFNs asks INFO for every page's PFN into an array pre-set to ^0.
func infoPFNs(fd int) (Info, []uint64, error) {
	pfns := make([]uint64, MaxPages)
	for i := range pfns {
		pfns[i] = ^uint64(0)
	}
	info := Info{Pfns: uint64(uintptr(unsafe.Pointer(&pfns[0]))), Pfns_len: uint32(len(pfns))}
	err := ioctl(fd, IocInfo, unsafe.Pointer(&info))
	return info, pfns[:info.Nr_pages], err
}

func (d *dev) refreshInfo(t testing.TB) {
	t.Helper()
	var err error
	if d.info, d.pfns, err = infoPFNs(d.fd); err != nil {
		t.Fatalf("KMMAP_IOC_INFO: %v", err)
	}
}

func (d *dev) setup(t testing.TB, backing, pages uint32) {
	t.Helper()
	s := Setup{Backing: backing, Pages: pages}
	if err := ioctl(d.fd, IocSetup, unsafe.Pointer(&s)); err != nil {
		t.Fatalf("KMMAP_IOC_SETUP(backing %d, %d pages): %v", backing, pages, err)
	}
	d.refreshInfo(t)
	if d.info.Backing != backing || d.info.Nr_pages != pages {
		t.Fatalf("after setup: backing %d, %d pages; want %d, %d", d.info.Backing, d.info.Nr_pages, backing, pages)
	}
}

func (d *dev) close(t testing.TB) {
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

// mmap maps the file shared; the test's cleanup unmaps it unless unmap
// did. Never unix.Munmap what it returns: tests run in parallel in one
// address space, and unix.Munmap finds a mapping by its address, so a
// second munmap unmaps whatever another test has mapped there since
// (TestSetup's cleanup unmapped a TestConcurrentMapUnmap round's page:
// SIGSEGV reading it, on 6.12-arm64-debug).
func (d *dev) mmap(t testing.TB, off int64, length int) []byte {
	t.Helper()
	b, err := unix.Mmap(d.fd, off, length, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap(off=%d, len=%d): %v", off, length, err)
	}
	d.mu.Lock()
	if d.maps == nil {
		d.maps = map[*byte]bool{}
	}
	d.maps[&b[0]] = true
	d.mu.Unlock()
	t.Cleanup(func() {
		if d.forget(b) {
			_ = unix.Munmap(b)
		}
	})
	return b
}

// unmap unmaps b, a mapping mmap made, before the test ends.
func (d *dev) unmap(t testing.TB, b []byte) {
	t.Helper()
	if !d.forget(b) {
		t.Fatalf("unmap: %p is not a mapping of this file that is still mapped", &b[0])
	}
	if err := unix.Munmap(b); err != nil {
		t.Fatalf("munmap: %v", err)
	}
}

// forget reports whether b is a live mapping of mmap, and forgets it.
func (d *dev) forget(b []byte) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	live := d.maps[&b[0]]
	delete(d.maps, &b[0])
	return live
}

func (d *dev) ps() int     { return int(d.info.Page_size) }
func (d *dev) size() int   { return int(d.info.Size) }
func (d *dev) npages() int { return int(d.info.Nr_pages) }

// pattern is what KMMAP_IOC_FILL with seed writes into n bytes.
func pattern(seed uint64, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = Pattern(seed, uint64(i))
	}
	return b
}

// fill has the kernel write pattern(seed) over [off, off+n).
func (d *dev) fill(t testing.TB, off, n int, seed uint64) {
	t.Helper()
	r := Range{Offset: uint64(off), Length: uint64(n), Seed: seed}
	if err := ioctl(d.fd, IocFill, unsafe.Pointer(&r)); err != nil {
		t.Fatalf("KMMAP_IOC_FILL(off=%d, len=%d): %v", off, n, err)
	}
}

// fillPages gives every page its own seed, base+page.
func (d *dev) fillPages(t testing.TB, base uint64) {
	for p := 0; p < d.npages(); p++ {
		d.fill(t, p*d.ps(), d.ps(), base+uint64(p))
	}
}

// checksum is the kernel's FNV-1a of [off, off+n).
func (d *dev) checksum(t testing.TB, off, n int) uint64 {
	t.Helper()
	r := Range{Offset: uint64(off), Length: uint64(n)}
	if err := ioctl(d.fd, IocChecksum, unsafe.Pointer(&r)); err != nil {
		t.Fatalf("KMMAP_IOC_CHECKSUM(off=%d, len=%d): %v", off, n, err)
	}
	return r.Sum
}

// kernelRead reads through the module's read() (copy_to_user).
func (d *dev) kernelRead(t testing.TB, off int64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	got, err := unix.Pread(d.fd, b, off)
	if err != nil || got != n {
		t.Fatalf("pread(off=%d, %d bytes) = %d, %v", off, n, got, err)
	}
	return b
}

var sink byte

// pagemapEntry returns the /proc/self/pagemap entry of b[off] after
// touching it.
func pagemapEntry(t testing.TB, b []byte, off int) uint64 {
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
	// In the kernel's byte order: pagemap's entries are u64s (read
	// little-endian, every pagemap test failed on 6.12-s390x).
	return binary.NativeEndian.Uint64(e[:])
}

// pagemapPFN returns the PFN backing b[off], failing the test unless the
// page is present with a non-zero PFN: pagemap reports PFN 0 for pages it
// will not show, which would make equality trivial.
func pagemapPFN(t testing.TB, b []byte, off int) uint64 {
	t.Helper()
	v := pagemapEntry(t, b, off)
	if v&(1<<63) == 0 {
		t.Fatalf("pagemap: page at offset %d not present (entry %#x)", off, v)
	}
	pfn := v & (1<<55 - 1)
	if pfn == 0 {
		t.Fatalf("pagemap: page at offset %d present but PFN hidden (entry %#x): not running as root?", off, v)
	}
	return pfn
}

// vmstat reads counters from /proc/vmstat, after folding the per-CPU
// deltas into them (vm.stat_refresh): small changes are otherwise invisible.
func vmstat(t testing.TB, names ...string) map[string]int64 {
	t.Helper()
	v, err := readVmstat(names...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func readVmstat(names ...string) (map[string]int64, error) {
	if err := statRefreshFile.write([]byte("1")); err != nil {
		return nil, fmt.Errorf("vm.stat_refresh: %w", err)
	}
	b, err := vmstatFile.read()
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, " ")
		for _, n := range names {
			if k == n {
				out[k], _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	return out, nil
}
