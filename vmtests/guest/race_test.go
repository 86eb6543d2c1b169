//go:build kmmap_guest

package guest

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// wantCPUs is how many CPUs the host gave the guest (QEMU's -smp).
var wantCPUs = flag.Int("kmmap.cpus", 0, "CPUs the host gave the guest (QEMU -smp)")

// TestCPUs: the guest has the CPUs the host booted it with, all online: a
// concurrency test on an SMP cell that ran on one CPU would prove nothing.
func TestCPUs(t *testing.T) {
	mark(t)
	if *wantCPUs == 0 {
		t.Fatal("the host did not say how many CPUs it gave the guest (-kmmap.cpus)")
	}
	if n := runtime.NumCPU(); n != *wantCPUs {
		t.Errorf("the guest can run on %d CPUs, the host gave it %d (-smp)", n, *wantCPUs)
	}
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		t.Fatal(err)
	}
	want := "0"
	if *wantCPUs > 1 {
		want = fmt.Sprintf("0-%d", *wantCPUs-1)
	}
	if got := strings.TrimSpace(string(b)); got != want {
		t.Errorf("online CPUs %q, want %q", got, want)
	}
}

// getcpu is the CPU the calling thread runs on.
func getcpu() int {
	var c uint32
	if _, _, errno := unix.RawSyscall(unix.SYS_GETCPU, uintptr(unsafe.Pointer(&c)), 0, 0); errno != 0 {
		return -1
	}
	return int(c)
}

var kcsan = flag.Bool("kmmap.kcsan", false, "the kernel has KCSAN")

// kcsanSkipWatch is KCSAN's sampling interval: one instrumented access in
// about this many becomes a watchpoint (CONFIG_KCSAN_SKIP_WATCH, 4000).
const kcsanSkipWatch = "/sys/module/kcsan/parameters/skip_watch"

// raceSkipWatch is the interval during a race, on a KCSAN kernel: a racing
// access is caught within a few hundred rounds instead of thousands. The
// watchpoints' delays slow the kernel down meanwhile, so only there.
const raceSkipWatch = "200"

// race runs each side in a loop on a thread of its own, side i pinned to
// CPU i mod the guest's CPUs, all released together; every side goes on
// until each has done at least rounds rounds, or limit has passed, so the
// sides overlap from start to end and the loop is bounded both ways. On a
// KCSAN kernel, watchpoints are set more often meanwhile, and KCSAN must
// be on. With two CPUs or more it fails the test unless the sides ran on
// as many different CPUs at once (sides that never ran together run
// again, up to raceAttempts times). It returns each side's rounds.
func race(t *testing.T, rounds int, limit time.Duration, sides ...func(round int)) []int {
	t.Helper()
	if old, err := os.ReadFile(kcsanSkipWatch); err != nil && *kcsan {
		t.Fatalf("a KCSAN kernel without %s: %v", kcsanSkipWatch, err)
	} else if err == nil {
		if err := os.WriteFile(kcsanSkipWatch, []byte(raceSkipWatch), 0); err != nil {
			t.Fatalf("%s: %v", kcsanSkipWatch, err)
		}
		defer os.WriteFile(kcsanSkipWatch, old, 0)
	}
	before := kcsanCounters()
	if *kcsan && before["enabled"] != 1 {
		t.Fatalf("KCSAN is built in but off (/sys/kernel/debug/kcsan: enabled %d): CONFIG_KCSAN_EARLY_ENABLE", before["enabled"])
	}
	defer func() {
		if before == nil {
			return
		}
		after := kcsanCounters()
		// Only the module is instrumented: a race through little of its
		// code (mmap and a fault) may set no watchpoint at all.
		t.Logf("KCSAN: %d watchpoints set, %d data races seen, %d of unknown origin", after["setup_watchpoints"]-before["setup_watchpoints"],
			after["data_races"]-before["data_races"], after["races_unknown_origin"]-before["races_unknown_origin"])
	}()
	ncpu := runtime.NumCPU()
	for attempt := 1; ; attempt++ {
		done, on, overlap, err := raceOnce(rounds, limit, ncpu, sides)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("rounds %v on CPUs %v of %d, together for %v", done, on, ncpu, overlap.Round(time.Microsecond))
		for i, c := range on {
			if c != i%ncpu {
				t.Errorf("side %d ended on CPU %d, pinned to CPU %d", i, c, i%ncpu)
			}
		}
		if ncpu == 1 {
			return done
		}
		distinct := slices.Compact(slices.Sorted(slices.Values(on)))
		if want := min(ncpu, len(sides)); len(distinct) < want {
			t.Errorf("the sides ran on CPUs %v: want %d different CPUs", on, want)
		}
		// Sides that never ran together proved nothing either way: the
		// host did not run the guest's CPUs at once (a loaded machine).
		// Again, a bounded number of times, then fail, saying so.
		switch {
		case overlap > 0:
			return done
		case attempt < raceAttempts:
			t.Logf("the sides never ran at the same time (%v): the host did not run the guest's CPUs together; again", overlap)
		default:
			t.Errorf("the sides never ran at the same time (%v) in %d attempts: the host never ran the guest's CPUs together", overlap, raceAttempts)
			return done
		}
	}
}

// raceAttempts bounds how often race runs its sides again when they never
// ran at the same time.
const raceAttempts = 3

// raceOnce runs the sides once as race describes: each side's rounds, the
// CPU it ended on, and how long all ran together (<= 0: never).
func raceOnce(rounds int, limit time.Duration, ncpu int, sides []func(round int)) (done, on []int, overlap time.Duration, err error) {
	var (
		wg           sync.WaitGroup
		stop         atomic.Bool
		pending      atomic.Int32
		arrived      atomic.Int32
		released     atomic.Bool
		deadline     atomic.Int64 // set by the last side to arrive
		began, ended = make([]time.Time, len(sides)), make([]time.Time, len(sides))
		errs         = make([]error, len(sides))
	)
	done, on = make([]int, len(sides)), make([]int, len(sides))
	pending.Store(int32(len(sides)))
	for i, side := range sides {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The thread is never unlocked: it exits with the goroutine,
			// and its affinity with it.
			runtime.LockOSThread()
			var set unix.CPUSet
			set.Set(i % ncpu)
			errs[i] = unix.SchedSetaffinity(0, &set)
			// Spin until every side is here: the scheduler may start a
			// locked thread milliseconds after another.
			if arrived.Add(1) == int32(len(sides)) {
				deadline.Store(time.Now().Add(limit).UnixNano())
				released.Store(true)
			}
			for !released.Load() {
			}
			began[i] = time.Now()
			for r := 0; !stop.Load(); r++ {
				side(r)
				done[i]++
				if done[i] == rounds && pending.Add(-1) == 0 || time.Now().UnixNano() >= deadline.Load() {
					stop.Store(true)
				}
			}
			ended[i] = time.Now()
			on[i] = getcpu()
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, nil, 0, fmt.Errorf("side %d: sched_setaffinity(CPU %d): %v", i, i%ncpu, err)
		}
	}
	overlap = slices.MinFunc(ended, time.Time.Compare).Sub(slices.MaxFunc(began, time.Time.Compare))
	return done, on, overlap, nil
}

// kcsanCounters reads KCSAN's counters in debugfs (nil without KCSAN).
func kcsanCounters() map[string]int64 {
	b, err := os.ReadFile("/sys/kernel/debug/kcsan")
	if err != nil {
		return nil
	}
	c := map[string]int64{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ": "); ok {
			c[k], _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return c
}

func setupErr(fd int, backing, pages uint32) error {
	s := Setup{Backing: backing, Pages: pages}
	return ioctl(fd, IocSetup, unsafe.Pointer(&s))
}

// TestRacePollSetup: poll() and epoll read the ring's state while another
// CPU replaces the ring with SETUP, which frees the old one: poll must see
// the old ring or the new one, never one being freed.
func TestRacePollSetup(t *testing.T) {
	d := openDev(t)
	d.setup(t, BackingRing, 2)
	ep, err := epollIn(d.fd)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ep)
	var readable atomic.Int64
	race(t, 300, 400*time.Millisecond,
		func(round int) {
			backing := uint32(BackingRing)
			if round%4 == 3 {
				backing = BackingFault // no ring at all for a while
			}
			if err := setupErr(d.fd, backing, 2); err != nil {
				t.Errorf("SETUP(%d): %v", backing, err)
				return
			}
			if backing == BackingRing && round%2 == 0 {
				c := RingCtl{Count: 1}
				if err := ioctl(d.fd, IocRingEmit, unsafe.Pointer(&c)); err != nil {
					t.Errorf("EMIT: %v", err)
				}
			}
		},
		func(round int) {
			revents, err := pollIn(d.fd, 0)
			if err != nil {
				t.Errorf("poll: %v", err)
			}
			if revents&^(unix.POLLIN|0x40 /* POLLRDNORM */) != 0 {
				t.Errorf("poll revents %#x", revents)
			}
			var evs [1]unix.EpollEvent
			n, err := unix.EpollWait(ep, evs[:], 0)
			if err != nil && !errors.Is(err, unix.EINTR) {
				t.Errorf("epoll_wait: %v", err)
			}
			if n > 0 || revents != 0 {
				readable.Add(1)
			}
		})
	t.Logf("readable %d times", readable.Load())
}

// TestRaceCopySetup: read(), write() and INFO on one CPU while another
// replaces the buffer with SETUP: each sees one whole buffer, the old or
// the new, and SETUP is refused (EBUSY) only while one of them runs.
func TestRaceCopySetup(t *testing.T) {
	d := openDev(t)
	d.setup(t, BackingFault, 1)
	ps := d.ps()
	sizes := []uint32{1, 2, 3}
	backs := []uint32{BackingFault, BackingPFN, BackingInsert, BackingRing}
	var busy atomic.Int64
	buf := make([]byte, 4*ps)
	race(t, 300, 400*time.Millisecond,
		func(round int) {
			pages := sizes[round%len(sizes)]
			b := backs[round%len(backs)]
			if b == BackingRing && pages < 2 {
				pages = 2
			}
			switch err := setupErr(d.fd, b, pages); {
			case errors.Is(err, unix.EBUSY):
				busy.Add(1)
			case err != nil:
				t.Errorf("SETUP(%d, %d): %v", b, pages, err)
			}
		},
		func(round int) {
			switch round % 3 {
			case 0:
				n, err := unix.Pread(d.fd, buf, 0)
				if err != nil || n%ps != 0 || n < ps || n > 3*ps {
					t.Errorf("pread of %d bytes at 0 = %d, %v: want a whole buffer of 1-3 pages", len(buf), n, err)
				}
			case 1:
				if n, err := unix.Pwrite(d.fd, buf[:ps], 0); n != ps || err != nil {
					t.Errorf("pwrite of a page at 0 = %d, %v", n, err)
				}
			case 2:
				var info Info
				if err := ioctl(d.fd, IocInfo, unsafe.Pointer(&info)); err != nil {
					t.Errorf("INFO: %v", err)
				} else if info.Size != uint64(info.Nr_pages)*uint64(ps) || info.Nr_pages < 1 || info.Nr_pages > 3 || info.Backing > BackingRing {
					t.Errorf("INFO during SETUPs: %+v", info)
				}
			}
		})
	t.Logf("SETUP refused %d times while a copy ran", busy.Load())
}

// TestRaceMunmapFault: one CPU maps the file over a reserved range and
// unmaps it again (or zaps its pages), while another reads those pages,
// faulting them in: every read that succeeds sees the buffer's content,
// every other faults cleanly, and no mapping is left counted.
func TestRaceMunmapFault(t *testing.T) {
	forEachBacking(t, 4, func(t *testing.T, d *dev) {
		d.fillPages(t, 300)
		ps, n := d.ps(), d.npages()
		hole, err := unix.Mmap(-1, 0, n*ps, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Munmap(hole)
		at := unsafe.Pointer(&hole[0])
		faulting := d.info.Backing == BackingFault || d.info.Backing == BackingRing
		mapAt := func(fd, prot, flags int) error {
			// MmapPtr, not a bare SYS_MMAP: s390x's mmap takes a pointer
			// to its six arguments (the 6.12-s390x cell failed every
			// round with EFAULT).
			_, err := unix.MmapPtr(fd, 0, at, uintptr(n*ps), prot, flags|unix.MAP_FIXED)
			return err
		}
		var hits, faults atomic.Int64
		// A race in which no read saw the file mapped proved nothing: on a
		// loaded host a one-CPU guest's mapper may get no time in the
		// limit (seen: 1 round against the reader's 14 in 1.9 s, with
		// the host under stress-ng --cpu 2 and other test runs). Again, a
		// bounded number of times, then fail, saying so.
		for attempt := 1; attempt <= raceAttempts && hits.Load() == 0; attempt++ {
			race(t, 100, 200*time.Millisecond,
				func(round int) {
					if err := mapAt(d.fd, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
						t.Errorf("mmap over the hole: %v", err)
						return
					}
					// Mapped until the reader has read it once, or 20 ms: on a
					// loaded host the reader's vCPU may get no time at all
					// while this one runs (and on one CPU, none until it
					// yields).
					for h0, t0 := hits.Load(), time.Now(); hits.Load() == h0 && time.Since(t0) < 20*time.Millisecond; {
						unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0) // let a reader on this CPU run
					}
					if faulting && round%2 == 1 {
						if err := unix.Madvise(hole, unix.MADV_DONTNEED); err != nil {
							t.Errorf("MADV_DONTNEED: %v", err)
						}
					}
					if err := mapAt(-1, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS); err != nil {
						t.Errorf("unmapping the file: %v", err)
					}
				},
				func(round int) {
					debug.SetPanicOnFault(true)
					for p := 0; p < n; p++ {
						off := p*ps + (round*7)%ps
						v, ok := load((*byte)(unsafe.Add(at, off)))
						switch {
						case !ok:
							faults.Add(1)
						case v != Pattern(300+uint64(p), uint64(off%ps)):
							t.Errorf("page %d byte %d read %#x while being mapped and unmapped, want %#x", p, off%ps, v, Pattern(300+uint64(p), uint64(off%ps)))
						default:
							hits.Add(1)
						}
					}
				})
			t.Logf("%d reads of the mapping, %d faulted on the hole", hits.Load(), faults.Load())
		}
		if hits.Load() == 0 {
			t.Errorf("no read ever saw the file mapped in %d attempts: the race did not happen", raceAttempts)
		}
		// Every mapping is gone: SETUP must not be refused as if one lived.
		if err := setupErr(d.fd, BackingFault, 1); err != nil {
			t.Errorf("SETUP after the last unmap: %v (a mapping is still counted)", err)
		}
	})
}

// TestRaceRingConsumer: producers on both CPUs - the timer and EMIT on
// one, EMIT on the other between the consumer's polls and drains - each
// emitting only while the ring has room, so that they produce at the same
// time instead of finding it full: every record arrives once, in order,
// whole. Then both produce into the full ring: every record is counted.
func TestRaceRingConsumer(t *testing.T) {
	r := openRing(t, 8)
	room := func(n uint32) bool {
		return atomic.LoadUint32(&r.hdr.Head)-atomic.LoadUint32(&r.hdr.Tail)+n+16 <= r.hdr.Nr_records
	}
	emit := func(n uint32) {
		e := RingCtl{Count: n}
		if err := ioctl(r.d.fd, IocRingEmit, unsafe.Pointer(&e)); err != nil {
			t.Errorf("EMIT: %v", err)
		}
	}
	var next uint64
	got := 0
	var timerOn sync.Once
	race(t, 400, 400*time.Millisecond,
		func(round int) {
			timerOn.Do(func() {
				c := RingCtl{Count: 3, Ms: 1}
				if err := ioctl(r.d.fd, IocRingTimer, unsafe.Pointer(&c)); err != nil {
					t.Errorf("RING_TIMER: %v", err)
				}
			})
			if room(32) {
				emit(32)
			}
		},
		func(round int) {
			for i := 0; i < 4; i++ {
				if _, err := pollIn(r.d.fd, 0); err != nil {
					t.Errorf("poll: %v", err)
				}
			}
			got += r.drain(t, &next)
			// Just drained: the other CPU is producing into the room too.
			if room(32) {
				emit(32)
			}
		})
	produced, dropped := r.finish(t, &next, got)
	if produced == 0 {
		t.Errorf("no record was produced or consumed")
	}
	t.Logf("%d records, %d dropped (by the timer)", produced, dropped)

	// Then both CPUs produce into the full ring: every record asked for is
	// counted, produced or dropped; none is lost between the CPUs.
	var asked [2]uint64
	race(t, 100, 200*time.Millisecond,
		func(int) { emit(64); asked[0] += 64 },
		func(int) { emit(64); asked[1] += 64 })
	counted := atomic.LoadUint64(&r.hdr.Produced) + atomic.LoadUint64(&r.hdr.Dropped) - produced - dropped
	if counted != asked[0]+asked[1] {
		t.Errorf("EMIT asked for %d records from two CPUs, the ring counted %d produced or dropped", asked[0]+asked[1], counted)
	}
}

// TestRacePinFillUnpin: PIN_FILL on one CPU while another unpins and pins
// again; then fills racing close(). Every call succeeds or fails with the
// error its state gives (EINVAL: nothing pinned; EBUSY: pinned already),
// close() returns only after the worker finished (the buffer holds the
// last fill, whole), and nothing stays pinned (mark checks).
func TestRacePinFillUnpin(t *testing.T) {
	d := openDev(t)
	buf := userBuffer(t, 4)
	addr := uintptr(unsafe.Pointer(&buf[0]))
	if err := d.pin(addr, len(buf)); err != nil {
		t.Fatal(err)
	}
	var fills, unpins atomic.Int64
	race(t, 200, 400*time.Millisecond,
		func(round int) {
			f := PinFill{Seed: uint64(round)}
			switch err := ioctl(d.fd, IocPinFill, unsafe.Pointer(&f)); {
			case err == nil:
				fills.Add(1)
			case !errors.Is(err, unix.EINVAL):
				t.Errorf("PIN_FILL: %v", err)
			}
			if round%8 == 0 {
				if err := ioctl(d.fd, IocPinWait, nil); err != nil {
					t.Errorf("PIN_WAIT: %v", err)
				}
			}
		},
		func(round int) {
			switch err := ioctl(d.fd, IocUnpin, nil); {
			case err == nil:
				unpins.Add(1)
			case !errors.Is(err, unix.EINVAL):
				t.Errorf("UNPIN: %v", err)
			}
			if err := d.pin(addr, len(buf)); err != nil && !errors.Is(err, unix.EBUSY) {
				t.Errorf("PIN: %v", err)
			}
		})
	t.Logf("%d fills, %d unpins", fills.Load(), unpins.Load())
	if err := ioctl(d.fd, IocUnpin, nil); err != nil && !errors.Is(err, unix.EINVAL) {
		t.Fatalf("UNPIN: %v", err)
	}

	// UNPIN right behind PIN_FILL, from one thread: the worker is queued
	// or running when UNPIN comes, every time, not by the luck of two
	// CPUs (the two-sided race above missed it in one of two runs).
	// UNPIN must wait for it: the worker reads the page array UNPIN frees.
	big := userBuffer(t, 64)
	for i := 0; i < 20; i++ {
		if err := d.pin(uintptr(unsafe.Pointer(&big[0])), len(big)); err != nil {
			t.Fatalf("PIN: %v", err)
		}
		d.pinFill(t, uint64(500+i))
		if err := ioctl(d.fd, IocUnpin, nil); err != nil {
			t.Fatalf("UNPIN right after PIN_FILL: %v", err)
		}
		if want := pattern(uint64(500+i), len(big)); !bytes.Equal(big, want) {
			t.Fatalf("round %d: UNPIN returned before the worker's fill was done", i)
		}
	}

	// A fill in flight when the file is closed: close() waits for it.
	for i := 0; i < 20; i++ {
		fd, err := unix.Open(Device, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		seed := uint64(1000 + i)
		f := PinFill{Seed: seed}
		if err := pinRange(fd, addr, len(buf)); err != nil {
			t.Fatal(err)
		}
		if err := ioctl(fd, IocPinFill, unsafe.Pointer(&f)); err != nil {
			t.Fatal(err)
		}
		if err := unix.Close(fd); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, pattern(seed, len(buf))) {
			t.Fatalf("after close() returned, the buffer is not fill %d whole: the worker outlived the file", seed)
		}
	}
}
