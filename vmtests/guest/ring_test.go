//go:build kmmap_guest

package guest

import (
	"bytes"
	"errors"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

type ring struct {
	d   *dev
	mem []byte
	hdr *RingHeader
}

func openRing(t testing.TB, pages uint32) *ring {
	d := openDev(t)
	d.setup(t, BackingRing, pages)
	return mapRing(t, d)
}

// mapRing maps d's ring buffer whole.
func mapRing(t testing.TB, d *dev) *ring {
	mem := d.mmap(t, 0, d.size())
	return &ring{d: d, mem: mem, hdr: (*RingHeader)(unsafe.Pointer(&mem[0]))}
}

func (r *ring) record(n uint32) *RingRecord {
	off := r.d.ps() + int(n&(r.hdr.Nr_records-1))*int(unsafe.Sizeof(RingRecord{}))
	return (*RingRecord)(unsafe.Pointer(&r.mem[off]))
}

// drain reads every published record, checks it, and hands the slots back.
func (r *ring) drain(t testing.TB, next *uint64) int {
	t.Helper()
	head := atomic.LoadUint32(&r.hdr.Head) // acquire: pairs with the kernel's release
	tail := atomic.LoadUint32(&r.hdr.Tail)
	if head-tail > r.hdr.Nr_records {
		// A kernel that lost track of its head (racing producers) must
		// fail the test, not send it round four billion records.
		t.Errorf("head %d is %d records past tail %d, in a ring of %d", head, head-tail, tail, r.hdr.Nr_records)
		atomic.StoreUint32(&r.hdr.Tail, head)
		return 0
	}
	n := 0
	for ; tail != head; tail++ {
		rec := r.record(tail)
		if rec.Seq != *next {
			t.Errorf("record at %d has seq %d, want %d (lost or reordered)", tail, rec.Seq, *next)
			*next = rec.Seq
		}
		if int(rec.Len) != len(rec.Data) || !bytes.Equal(rec.Data[:], pattern(rec.Seq, len(rec.Data))) {
			t.Errorf("record %d is torn: len %d, data % x...", rec.Seq, rec.Len, rec.Data[:8])
		}
		*next++
		n++
	}
	atomic.StoreUint32(&r.hdr.Tail, tail) // release: the slots are free again
	return n
}

// finish stops the ring's timer, drains what is left after got records
// were consumed, and checks that every record the kernel produced was; it
// returns the kernel's counts.
func (r *ring) finish(t testing.TB, next *uint64, got int) (produced, dropped uint64) {
	t.Helper()
	r.timer(t, 0, 0)
	got += r.drain(t, next)
	produced, dropped = atomic.LoadUint64(&r.hdr.Produced), atomic.LoadUint64(&r.hdr.Dropped)
	if uint64(got) != produced {
		t.Errorf("consumed %d records, the kernel produced %d", got, produced)
	}
	return produced, dropped
}

func (r *ring) emit(t testing.TB, n uint32) {
	t.Helper()
	c := RingCtl{Count: n}
	if err := ioctl(r.d.fd, IocRingEmit, unsafe.Pointer(&c)); err != nil {
		t.Fatalf("KMMAP_IOC_RING_EMIT(%d): %v", n, err)
	}
}

func (r *ring) readable(t testing.TB, timeout time.Duration) bool {
	t.Helper()
	revents, err := pollIn(r.d.fd, int(timeout.Milliseconds()))
	if err != nil {
		t.Fatalf("poll: %v", err)
	}
	return revents&unix.POLLIN != 0
}

// timer sets the ring's timer: count records every ms milliseconds; 0, 0
// stops it (and waits for a tick that runs).
func (r *ring) timer(t testing.TB, count, ms uint32) {
	t.Helper()
	c := RingCtl{Count: count, Ms: ms}
	if err := ioctl(r.d.fd, IocRingTimer, unsafe.Pointer(&c)); err != nil {
		t.Fatalf("KMMAP_IOC_RING_TIMER(%d records every %d ms): %v", count, ms, err)
	}
}

// epollIn returns an epoll instance watching fd for input.
func epollIn(fd int) (int, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return -1, err
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
		unix.Close(ep)
		return -1, err
	}
	return ep, nil
}

// pollIn polls fd for input for up to ms milliseconds and returns its
// revents. The Go runtime's own signals (goroutine preemption) interrupt
// poll with EINTR: it is asked again.
func pollIn(fd, ms int) (int16, error) {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, ms); !errors.Is(err, unix.EINTR) {
			return fds[0].Revents, err
		}
	}
}

func TestRing(t *testing.T) {
	parallel(t)
	r := openRing(t, 4)
	if r.hdr.Record_size != uint32(unsafe.Sizeof(RingRecord{})) || r.hdr.Nr_records == 0 || r.hdr.Nr_records&(r.hdr.Nr_records-1) != 0 {
		t.Fatalf("header: record_size %d, nr_records %d", r.hdr.Record_size, r.hdr.Nr_records)
	}
	if r.readable(t, 0) {
		t.Errorf("an empty ring polls readable")
	}
	var next uint64
	r.emit(t, 10)
	if !r.readable(t, time.Second) {
		t.Errorf("the ring does not poll readable after 10 records")
	}
	if n := r.drain(t, &next); n != 10 {
		t.Errorf("drained %d records, want 10", n)
	}
	if r.readable(t, 0) {
		t.Errorf("a drained ring polls readable")
	}
	// Overflow: the kernel drops and counts, never overwrites.
	nr := r.hdr.Nr_records
	r.emit(t, nr+5)
	if got := atomic.LoadUint64(&r.hdr.Dropped); got != 5 {
		t.Errorf("dropped = %d, want 5", got)
	}
	if n := r.drain(t, &next); n != int(nr) {
		t.Errorf("drained %d records after overflow, want %d", n, nr)
	}
	r.emit(t, 1)
	rec := r.record(atomic.LoadUint32(&r.hdr.Tail))
	if rec.Seq != next {
		t.Errorf("first record after the overflow has seq %d, want %d (dropped records take no seq)", rec.Seq, next)
	}
	r.drain(t, &next)
	if got := atomic.LoadUint64(&r.hdr.Produced); got != uint64(10+nr+1) {
		t.Errorf("produced = %d, want %d", got, 10+nr+1)
	}
	// One EMIT is at most 2^20 records: four billion would hold the
	// ioctl for minutes.
	c := RingCtl{Count: 1<<20 + 1}
	if err := ioctl(r.d.fd, IocRingEmit, unsafe.Pointer(&c)); !errors.Is(err, unix.EINVAL) {
		t.Errorf("RING_EMIT of 2^20+1 records: err = %v, want EINVAL", err)
	}
	if got := atomic.LoadUint64(&r.hdr.Produced) + atomic.LoadUint64(&r.hdr.Dropped); got != uint64(10+nr+1+5) {
		t.Errorf("a refused EMIT changed the counts: produced + dropped = %d, want %d", got, 10+nr+1+5)
	}
}

// TestRingTimer: records from the kernel's own timer wake epoll.
func TestRingTimer(t *testing.T) {
	parallel(t)
	r := openRing(t, 2)
	ep, err := epollIn(r.d.fd)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ep)
	r.timer(t, 2, 5)
	var next uint64
	got := 0
	deadline := time.Now().Add(10 * time.Second)
	for got < 20 && time.Now().Before(deadline) {
		ev := make([]unix.EpollEvent, 1)
		if _, err := unix.EpollWait(ep, ev, 1000); err != nil && err != unix.EINTR {
			t.Fatal(err)
		}
		for n := atomic.LoadUint32(&r.hdr.Tail); n != atomic.LoadUint32(&r.hdr.Head); n++ {
			if src := r.record(n).Source; src != RingSrcTimer {
				t.Errorf("record from source %d, want the timer", src)
			}
		}
		got += r.drain(t, &next)
	}
	r.timer(t, 0, 0)
	if got < 20 {
		t.Fatalf("the timer produced %d records in 10s, want at least 20", got)
	}
	r.drain(t, &next)
	produced := atomic.LoadUint64(&r.hdr.Produced)
	time.Sleep(50 * time.Millisecond)
	if p := atomic.LoadUint64(&r.hdr.Produced); p != produced {
		t.Errorf("the stopped timer still produced %d records", p-produced)
	}
	bad := []RingCtl{{Count: 0, Ms: 5}, {Count: 1, Ms: 10001}, {Count: 5000, Ms: 5}}
	for _, c := range bad {
		if err := ioctl(r.d.fd, IocRingTimer, unsafe.Pointer(&c)); err != unix.EINVAL {
			t.Errorf("RING_TIMER %+v: err = %v, want EINVAL", c, err)
		}
	}
}

// TestRingTimerPeriod: the largest period and count the header documents
// are taken, and a new period replaces a tick already pending: 10 s, then
// 5 ms, ticks within the 5 ms (give or take a slow machine), not after
// the 10 s.
func TestRingTimerPeriod(t *testing.T) {
	parallel(t)
	r := openRing(t, 2)
	r.timer(t, 4096, 10000)
	r.timer(t, 0, 0)
	r.timer(t, 1, 10000)
	start := time.Now()
	r.timer(t, 1, 5)
	var next uint64
	for r.drain(t, &next) == 0 {
		if time.Since(start) > 3*time.Second {
			r.timer(t, 0, 0)
			t.Fatalf("no tick %s after the period went from 10 s to 5 ms: the pending 10 s tick was kept", time.Since(start).Round(time.Millisecond))
		}
		r.readable(t, 100*time.Millisecond)
	}
	r.timer(t, 0, 0)
}

// TestRingScribbledHeader: userland garbage in the header costs records,
// never memory outside the ring: the kernel keeps its own head and uses the
// shared tail only to decide whether the ring is full.
func TestRingScribbledHeader(t *testing.T) {
	parallel(t)
	r := openRing(t, 2)
	nr := r.hdr.Nr_records
	atomic.StoreUint32(&r.hdr.Tail, 0xdeadbeef)
	atomic.StoreUint32(&r.hdr.Head, 0x12345678)
	r.hdr.Nr_records = 1 << 30
	r.emit(t, 100)
	if d, p := atomic.LoadUint64(&r.hdr.Dropped), atomic.LoadUint64(&r.hdr.Produced); d != 100 || p != 0 {
		t.Errorf("with a garbage tail: dropped %d, produced %d; want 100, 0", d, p)
	}
	r.hdr.Nr_records = nr
	atomic.StoreUint32(&r.hdr.Tail, 0)
	r.emit(t, 1)
	if h := atomic.LoadUint32(&r.hdr.Head); h != 1 {
		t.Errorf("head = %#x after one record, want 1 (the kernel's own count)", h)
	}
	var next uint64
	if n := r.drain(t, &next); n != 1 {
		t.Errorf("drained %d records, want 1", n)
	}
}

// TestRingWakesPoller: a poll() or epoll_wait() asleep on an empty ring
// wakes when a record arrives, whoever produced it: not at its timeout.
func TestRingWakesPoller(t *testing.T) {
	parallel(t)
	const timeout = 10 * time.Second
	for _, c := range []struct {
		name    string
		produce func(t *testing.T, r *ring)
		wait    func(t *testing.T, r *ring) error
	}{
		{"emit-poll", func(t *testing.T, r *ring) { r.emit(t, 1) }, func(t *testing.T, r *ring) error {
			revents, err := pollIn(r.d.fd, int(timeout.Milliseconds()))
			if err == nil && revents&unix.POLLIN == 0 {
				err = errors.New("poll returned without POLLIN")
			}
			return err
		}},
		{"timer-epoll", func(t *testing.T, r *ring) { r.timer(t, 1, 5) }, func(t *testing.T, r *ring) error {
			ep, err := epollIn(r.d.fd)
			if err != nil {
				return err
			}
			defer unix.Close(ep)
			ev := make([]unix.EpollEvent, 1)
			for {
				n, err := unix.EpollWait(ep, ev, int(timeout.Milliseconds()))
				if errors.Is(err, unix.EINTR) {
					continue
				}
				if err == nil && n != 1 {
					err = errors.New("epoll_wait timed out")
				}
				return err
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := openRing(t, 2)
			woke := make(chan error, 1)
			start := time.Now()
			go func() { woke <- c.wait(t, r) }()
			time.Sleep(100 * time.Millisecond) // the waiter is asleep by now
			c.produce(t, r)
			if err := <-woke; err != nil {
				t.Fatalf("waiting for a record: %v", err)
			}
			if d := time.Since(start); d > timeout/2 {
				t.Errorf("the waiter woke %v after the record was produced: the producer did not wake it", d.Round(time.Millisecond))
			}
			r.timer(t, 0, 0)
		})
	}
}

// TestRingSetupAgain: a new ring starts from nothing, whatever the old
// one produced and dropped.
func TestRingSetupAgain(t *testing.T) {
	parallel(t)
	d := openDev(t)
	d.setup(t, BackingRing, 2)
	r := mapRing(t, d)
	nr := r.hdr.Nr_records
	r.emit(t, nr+3)
	if got := atomic.LoadUint64(&r.hdr.Dropped); got != 3 {
		t.Fatalf("dropped = %d, want 3", got)
	}
	r.d.unmap(t, r.mem)
	d.setup(t, BackingRing, 2)
	r = mapRing(t, d)
	r.emit(t, 1)
	if p, dr, h := atomic.LoadUint64(&r.hdr.Produced), atomic.LoadUint64(&r.hdr.Dropped), atomic.LoadUint32(&r.hdr.Head); p != 1 || dr != 0 || h != 1 {
		t.Errorf("the new ring after one record: produced %d, dropped %d, head %d; want 1, 0, 1", p, dr, h)
	}
	if seq := r.record(0).Seq; seq != 0 {
		t.Errorf("the new ring's first record has seq %d, want 0", seq)
	}
}

// TestRingCloseWithTimerRunning: the last close of a ring whose timer is
// running stops the timer before the file's memory goes: a tick queued
// then must never run over freed memory (KASAN on the debug cells), nor
// a SETUP that replaces the ring leave it producing into the old one.
func TestRingCloseWithTimerRunning(t *testing.T) {
	parallel(t)
	mark(t)
	for i := range 20 {
		fd, err := unix.Open(Device, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		s := Setup{Backing: BackingRing, Pages: 2}
		if err := ioctl(fd, IocSetup, unsafe.Pointer(&s)); err != nil {
			t.Fatal(err)
		}
		c := RingCtl{Count: 4, Ms: 1}
		if err := ioctl(fd, IocRingTimer, unsafe.Pointer(&c)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(i%4) * time.Millisecond)
		if i%2 == 1 {
			// SETUP stops the old ring's timer too.
			s = Setup{Backing: BackingFault, Pages: 1}
			if err := ioctl(fd, IocSetup, unsafe.Pointer(&s)); err != nil {
				t.Fatal(err)
			}
		}
		if err := unix.Close(fd); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond) // any tick left would run by now
}
