//go:build kmmap_guest

package guest

import (
	"bytes"
	"errors"
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
