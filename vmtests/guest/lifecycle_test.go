//go:build kmmap_guest

package guest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/kmmap/kmmap/vmtests/testmain"
	"golang.org/x/sys/unix"
)

// randomSeed seeds TestRandomArguments: fixed unless the host passes
// KMMAP_RANDOM_SEED, so a run is reproducible.
var randomSeed = flag.Int64("kmmap.seed", 1, "seed of TestRandomArguments")

// TestMain lets the test binary double as a helper process (see helper);
// else it runs the suite with every test marked in the kernel log and
// checked against the invariants.
func TestMain(m *testing.M) {
	if mode := os.Getenv("KMMAP_HELPER"); mode != "" {
		if err := helper(mode); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(testmain.Run(m, invariants...))
}

// helper runs in a child process, with the parent's /dev/kmmap as fd 3.
//
//	share N SIZE PS: map fd 3, write pattern(800+p) to each of N pages, print
//	              each page's PFN
//	abandon:      open the device, map it, pin a buffer, and exit without
//	              cleaning anything up
func helper(mode string) error {
	args := strings.Fields(mode)
	switch args[0] {
	case "share":
		n, _ := strconv.Atoi(args[1])
		size, _ := strconv.Atoi(args[2])
		ps, _ := strconv.Atoi(args[3])
		m, err := unix.Mmap(3, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return err
		}
		f, err := os.Open("/proc/self/pagemap")
		if err != nil {
			return err
		}
		for p := 0; p < n; p++ {
			copy(m[p*ps:], pattern(800+uint64(p), ps))
			var e [8]byte
			if _, err := f.ReadAt(e[:], int64(uintptr(unsafe.Pointer(&m[p*ps]))/uintptr(os.Getpagesize()))*8); err != nil {
				return err
			}
			fmt.Printf("%d\n", binary.NativeEndian.Uint64(e[:])&(1<<55-1))
		}
		return nil
	case "abandon":
		fd, err := unix.Open(Device, unix.O_RDWR, 0)
		if err != nil {
			return err
		}
		m, err := unix.Mmap(fd, 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return err
		}
		m[0] = 1
		buf := make([]byte, 3*os.Getpagesize())
		p := PinRange{Addr: uint64(uintptr(unsafe.Pointer(&buf[0]))), Length: uint64(len(buf))}
		if err := ioctl(fd, IocPin, unsafe.Pointer(&p)); err != nil {
			return err
		}
		f := PinFill{Seed: 3}
		return ioctl(fd, IocPinFill, unsafe.Pointer(&f)) // and exit with the pin held
	default:
		if f := helpers[args[0]]; f != nil {
			return f(args[1:])
		}
	}
	return fmt.Errorf("unknown helper mode %q", mode)
}

// helpers are further helper modes, registered by the files that use them.
var helpers = map[string]func(args []string) error{}

// nobody is the unprivileged user helpers run as, to see what a local user
// without any capability can do.
var nobody = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}

func runHelper(t *testing.T, mode string, fd int) []byte {
	t.Helper()
	return runHelperAs(t, mode, fd, nil)
}

// runHelperAs runs a helper with attr (nil: as this process's user).
func runHelperAs(t *testing.T, mode string, fd int, attr *syscall.SysProcAttr) []byte {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.SysProcAttr = attr
	cmd.Env = append(os.Environ(), "KMMAP_HELPER="+mode)
	if fd >= 0 {
		// A duplicate: an *os.File closes its descriptor when collected.
		dup, err := unix.Dup(fd)
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(dup), Device)
		defer f.Close()
		cmd.ExtraFiles = []*os.File{f}
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper %q: %v\n%s", mode, err, stderr.Bytes())
	}
	return out
}

// TestTwoProcesses: another process mapping the same file shares the same
// pages: its writes are seen here and its PFNs are the kernel's.
func TestTwoProcesses(t *testing.T) {
	parallel(t)
	forEachBacking(t, 4, func(t *testing.T, d *dev) {
		m := d.mmap(t, 0, d.size())
		out := runHelper(t, fmt.Sprintf("share %d %d %d", d.npages(), d.size(), d.ps()), d.fd)
		pfns := strings.Fields(string(out))
		for p := 0; p < d.npages(); p++ {
			if got, want := m[p*d.ps():(p+1)*d.ps()], pattern(800+uint64(p), d.ps()); !bytes.Equal(got, want) {
				t.Errorf("page %d written by the other process reads % x... here, want % x...", p, got[:8], want[:8])
			}
			if d.info.Backing == BackingPFN {
				continue // VM_PFNMAP: pagemap shows no PFN; the content proves it
			}
			if p >= len(pfns) || pfns[p] != strconv.FormatUint(d.pfns[p], 10) {
				t.Errorf("page %d: the other process sees PFN %v, the kernel says %d", p, pfns, d.pfns[p])
			}
		}
	})
}

// TestKpage: /proc/kpagecount and /proc/kpageflags agree that a page mapped
// twice is mapped twice.
func TestKpage(t *testing.T) {
	parallel(t)
	for _, b := range backings {
		if b.id == BackingPFN {
			continue // VM_PFNMAP pages are not counted as mapped
		}
		t.Run(b.name, func(t *testing.T) {
			d := openDev(t)
			d.setup(t, b.id, 2)
			m1, m2 := d.mmap(t, 0, d.size()), d.mmap(t, 0, d.size())
			sink += m1[0] + m2[0]
			pfn := pagemapPFN(t, m1, 0)
			read := func(file string) uint64 {
				f, err := os.Open(file)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				var e [8]byte
				if _, err := f.ReadAt(e[:], int64(pfn)*8); err != nil {
					t.Fatalf("%s: %v", file, err)
				}
				return binary.NativeEndian.Uint64(e[:])
			}
			if n := read("/proc/kpagecount"); n < 2 {
				t.Errorf("kpagecount of a page mapped twice = %d, want >= 2", n)
			}
			const kpfMmap = 11
			if f := read("/proc/kpageflags"); f&(1<<kpfMmap) == 0 {
				t.Errorf("kpageflags %#x lack KPF_MMAP", f)
			}
		})
	}
}

// forkWrite forks; the child stores v at b[off] and exits at once (no Go
// runtime code runs in it); the parent waits for it.
func forkWrite(t *testing.T, b []byte, off int, v byte) {
	t.Helper()
	p := &b[off]
	// clone(flags, stack, ...); s390x takes the stack first
	// (CLONE_BACKWARDS2): there the flags went in as the stack, the child
	// had no exit signal and wait4 found no child (6.12-s390x).
	a0, a1 := uintptr(unix.SIGCHLD), uintptr(0)
	if runtime.GOARCH == "s390x" {
		a0, a1 = a1, a0
	}
	pid, _, errno := unix.RawSyscall6(unix.SYS_CLONE, a0, a1, 0, 0, 0, 0)
	if errno != 0 {
		t.Fatalf("clone: %v", errno)
	}
	if pid == 0 {
		*p = v
		unix.RawSyscall(unix.SYS_EXIT_GROUP, 0, 0, 0)
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(int(pid), &ws, 0, nil); err != nil || !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("child: %v, status %v", err, ws)
	}
}

// TestFork: a child inherits the mapping shared, as documented: what it
// writes, the parent and the kernel see. Not parallel: the child inherits
// every mapping of the process, so while it lives another test's buffer is
// mapped twice and its setup is refused with EBUSY (TestPartialMunmap's was,
// on 6.12-arm64).
func TestFork(t *testing.T) {
	forEachBacking(t, 2, func(t *testing.T, d *dev) {
		m := d.mmap(t, 0, d.size())
		for p := 0; p < d.npages(); p++ {
			forkWrite(t, m, p*d.ps()+7, byte(0xa0+p))
			if m[p*d.ps()+7] != byte(0xa0+p) {
				t.Errorf("page %d: the child's write is not seen by the parent", p)
			}
			if got := d.kernelRead(t, int64(p*d.ps()+7), 1); got[0] != byte(0xa0+p) {
				t.Errorf("page %d: the child's write is not seen by the kernel", p)
			}
		}
	})
}

// TestProcessExitWithoutCleanup: a process that exits holding a mapping and
// a pin leaves nothing behind (the per-test invariants check the module's
// counters and the pin balance after it).
func TestProcessExitWithoutCleanup(t *testing.T) {
	mark(t)
	before := moduleCounter(t, "pinned_pages")
	runHelper(t, "abandon", -1)
	if n := moduleCounter(t, "pinned_pages"); n != before {
		t.Errorf("pinned_pages = %d after the process exited, want %d", n, before)
	}
}

// TestPartialMunmap: unmapping the middle of a mapping splits it; both
// halves still share the buffer, and setup stays refused until both go.
func TestPartialMunmap(t *testing.T) {
	parallel(t)
	forEachBacking(t, 4, func(t *testing.T, d *dev) {
		ps := d.ps()
		m, err := unix.Mmap(d.fd, 0, d.size(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		sink += m[0]
		head, tail := m[:ps], m[3*ps:]
		// unix.Munmap only takes whole mappings it made: split by hand.
		if err := munmap(m[ps : 3*ps]); err != nil {
			t.Fatalf("munmap of the middle pages: %v", err)
		}
		// Each piece is unmapped once: tests run in parallel in this
		// address space, so a second munmap of a piece would unmap
		// whatever another test has mapped there since. A mapping made
		// where the head was, once it is unmapped, stands for another
		// test's: it must still be there after the cleanups.
		var neighbour []byte
		t.Cleanup(func() {
			if neighbour == nil {
				return
			}
			if err := unix.Msync(neighbour, unix.MS_ASYNC); err != nil {
				t.Errorf("a mapping made where the head was is gone after the test's cleanup (msync: %v): a piece was unmapped twice", err)
				return
			}
			_ = munmap(neighbour)
		})
		pieces := map[string][]byte{"head": head, "tail": tail}
		unmap := func(name string) {
			if b := pieces[name]; b != nil {
				delete(pieces, name)
				if err := munmap(b); err != nil {
					t.Errorf("munmap of the %s: %v", name, err)
				}
			}
		}
		t.Cleanup(func() { unmap("head"); unmap("tail") })
		d.fill(t, 0, ps, 901)
		d.fill(t, 3*ps, ps, 902)
		if !bytes.Equal(head, pattern(901, ps)) || !bytes.Equal(tail, pattern(902, ps)) {
			t.Errorf("after the split, the halves do not show the kernel's writes")
		}
		copy(tail, pattern(903, ps))
		if got := d.checksum(t, 3*ps, ps); got != FNV1a(pattern(903, ps)) {
			t.Errorf("after the split, a write to the tail is not seen by the kernel")
		}
		s := Setup{Backing: BackingFault, Pages: 4}
		if err := ioctl(d.fd, IocSetup, unsafe.Pointer(&s)); !errors.Is(err, unix.EBUSY) {
			t.Errorf("setup with two pieces mapped: %v, want EBUSY", err)
		}
		unmap("head")
		neighbour = mapAnonAt(head)
		if err := ioctl(d.fd, IocSetup, unsafe.Pointer(&s)); !errors.Is(err, unix.EBUSY) {
			t.Errorf("setup with one piece mapped: %v, want EBUSY", err)
		}
		unmap("tail")
		if err := ioctl(d.fd, IocSetup, unsafe.Pointer(&s)); err != nil {
			t.Errorf("setup with nothing mapped: %v", err)
		}
	})
}

// mapAnonAt maps anonymous memory exactly where b was, or returns nil if
// something else has been mapped there since.
func mapAnonAt(b []byte) []byte {
	at := unsafe.Pointer(&b[0])
	p, err := unix.MmapPtr(-1, 0, at, uintptr(len(b)), unix.PROT_READ,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE)
	if err != nil {
		return nil
	}
	if p != at { // a kernel without MAP_FIXED_NOREPLACE took it as a hint
		_ = unix.MunmapPtr(p, uintptr(len(b)))
		return nil
	}
	return unsafe.Slice((*byte)(p), len(b))
}

// munmap unmaps exactly b (unix.Munmap wants whole mappings it made).
func munmap(b []byte) error {
	return unix.MunmapPtr(unsafe.Pointer(&b[0]), uintptr(len(b)))
}

// TestRandomArguments throws seeded random mmap and ioctl arguments at the
// module for a bounded time: every call succeeds or fails with a plain
// errno, and no kernel splat appears (the host checks). The 3000 calls are
// shared by one subtest per CPU, each on its own file with its own seed
// (the seed plus its number), so they also run at once.
func TestRandomArguments(t *testing.T) {
	parallel(t)
	seed := *randomSeed
	t.Logf("seed %d (another: KMMAP_RANDOM_SEED=N go test ./vmtests)", seed)
	shards := runtime.NumCPU()
	for i := range shards {
		t.Run(fmt.Sprint("file", i), func(t *testing.T) {
			if shards > 1 {
				t.Parallel()
			}
			randomArguments(t, seed+int64(i), 3000/shards)
		})
	}
}

// randomArguments makes up to n random calls on a file of its own, for
// five seconds at most.
func randomArguments(t *testing.T, seed int64, n int) {
	d := openDev(t)
	rng := rand.New(rand.NewSource(seed))
	ps := d.ps()
	pick := func() uint64 {
		switch rng.Intn(6) {
		case 0:
			return 0
		case 1:
			return uint64(rng.Intn(8 * ps))
		case 2:
			return uint64(rng.Intn(8)) * uint64(ps)
		case 3:
			return ^uint64(0) - uint64(rng.Intn(4096))
		case 4:
			return uint64(d.size())
		}
		return rng.Uint64()
	}
	reqs := []uint{IocInfo, IocSetup, IocFill, IocChecksum, IocRingEmit, IocRingTimer, IocUnpin, 0xc0206b00 | uint(rng.Intn(256))}
	deadline := time.Now().Add(5 * time.Second)
	calls := 0
	for i := 0; i < n && time.Now().Before(deadline); i++ {
		calls++
		if rng.Intn(2) == 0 {
			length := int(pick() % uint64(16*ps))
			b, err := unix.Mmap(d.fd, int64(pick()%uint64(1<<40))&^int64(rng.Intn(2)*(ps-1)), length,
				[]int{unix.PROT_READ, unix.PROT_READ | unix.PROT_WRITE, unix.PROT_EXEC}[rng.Intn(3)],
				[]int{unix.MAP_SHARED, unix.MAP_PRIVATE}[rng.Intn(2)])
			if err == nil {
				if len(b) > 0 && d.info.Size > 0 {
					sink += b[0]
				}
				unix.Munmap(b)
			}
			continue
		}
		var arg [4]uint64
		for j := range arg {
			arg[j] = pick()
		}
		req := reqs[rng.Intn(len(reqs))]
		if req == IocSetup {
			arg[0] = uint64(rng.Intn(5)) | uint64(rng.Intn(40))<<32 // backing, pages
		}
		if req == IocRingTimer || req == IocRingEmit {
			arg[0] = uint64(rng.Intn(200)) | uint64(rng.Intn(3))<<32
		}
		if req == IocInfo {
			arg[2] = 0 // no PFN array pointer to write through
		}
		_ = ioctl(d.fd, req, unsafe.Pointer(&arg[0]))
		d.refreshInfo(t)
	}
	var stop RingCtl
	_ = ioctl(d.fd, IocRingTimer, unsafe.Pointer(&stop))
	t.Logf("%d calls", calls)
}

// TestConcurrentMapUnmap: many threads mapping, touching and unmapping one
// file at once.
func TestConcurrentMapUnmap(t *testing.T) {
	parallel(t)
	forEachBacking(t, 8, func(t *testing.T, d *dev) {
		d.fillPages(t, 1000)
		var wg sync.WaitGroup
		var bad atomic.Int32
		var first sync.Once
		var what string
		wrong := func(format string, args ...any) {
			bad.Add(1)
			first.Do(func() { what = fmt.Sprintf(format, args...) })
		}
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 100; i++ {
					p := (g + i) % d.npages()
					b, err := unix.Mmap(d.fd, int64(p*d.ps()), d.ps(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
					if err != nil {
						wrong("mmap of page %d: %v", p, err)
						continue
					}
					if got, want := b[1], Pattern(1000+uint64(p), 1); got != want {
						wrong("page %d mapped at %p: byte 1 is %#x, want %#x", p, &b[0], got, want)
					}
					if err := unix.Munmap(b); err != nil {
						wrong("munmap of page %d: %v", p, err)
					}
				}
			}()
		}
		wg.Wait()
		if n := bad.Load(); n != 0 {
			t.Errorf("%d of 800 concurrent map/read/unmap rounds went wrong; the first: %s", n, what)
		}
	})
}

// TestRingConcurrentProducers: the timer and an ioctl thread produce while
// one consumer drains: every record arrives once, in order, whole, or is
// counted as dropped.
func TestRingConcurrentProducers(t *testing.T) {
	parallel(t)
	r := openRing(t, 2)
	r.timer(t, 3, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		e := RingCtl{Count: 7}
		for i := 0; i < 300; i++ {
			_ = ioctl(r.d.fd, IocRingEmit, unsafe.Pointer(&e))
		}
	}()
	var next uint64
	got := 0
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		got += r.drain(t, &next)
	}
	produced, dropped := r.finish(t, &next, got)
	if produced+dropped < 2100 {
		t.Errorf("produced %d + dropped %d, want at least the 2100 emitted", produced, dropped)
	}
	t.Logf("%d records, %d dropped", produced, dropped)
}

// TestPinnedConcurrentReads: userland reads the buffer while the kernel
// worker keeps writing into it; after each wait the content is whole.
func TestPinnedConcurrentReads(t *testing.T) {
	parallel(t)
	d := openDev(t)
	buf := userBuffer(t, 4)
	if err := d.pin(uintptr(unsafe.Pointer(&buf[0])), len(buf)); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var reads atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				sink += buf[rand.Intn(len(buf))]
				reads.Add(1)
			}
		}
	}()
	for seed := uint64(20); seed < 40; seed++ {
		d.pinFill(t, seed)
		d.pinWait(t)
		if !bytes.Equal(buf, pattern(seed, len(buf))) {
			t.Errorf("after fill %d and wait, the buffer is not the fill's pattern", seed)
		}
	}
	close(stop)
	wg.Wait() // before the buffer is unmapped
	if err := ioctl(d.fd, IocUnpin, nil); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d concurrent reads", reads.Load())
}
