//go:build kmmap_guest

package guest

import (
	"encoding/binary"
	"fmt"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// benchSizes are the transfer sizes the shared mapping is compared with
// read()/write() copies at.
var benchSizes = []struct {
	name string
	n    int
}{{"4KiB", 4 << 10}, {"64KiB", 64 << 10}, {"1MiB", 1 << 20}, {"16MiB", 16 << 20}}

// sum reads b a word at a time: what a consumer of the data does.
func sum(b []byte) uint64 {
	var s uint64
	for i := 0; i+8 <= len(b); i += 8 {
		s += binary.LittleEndian.Uint64(b[i:])
	}
	return s
}

// produce writes b a word at a time: what a producer of the data does.
func produce(b []byte, v uint64) {
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], v+uint64(i))
	}
}

var wordSink uint64

// benchDev opens the device with a fault-backed buffer of at least n bytes.
func benchDev(b *testing.B, n int) *dev {
	return benchBacking(b, BackingFault, n)
}

// benchBacking opens the device with a buffer of backing of at least n
// bytes; it skips the benchmark when the module cannot make one that big
// (the pfn backing's physically contiguous pages run out first).
func benchBacking(b *testing.B, backing uint32, n int) *dev {
	d := openDev(b)
	pages := (n + unix.Getpagesize() - 1) / unix.Getpagesize()
	s := Setup{Backing: backing, Pages: uint32(pages)}
	if err := ioctl(d.fd, IocSetup, unsafe.Pointer(&s)); err != nil {
		b.Skipf("KMMAP_IOC_SETUP(backing %d, %d pages): %v", backing, pages, err)
	}
	d.refreshInfo(b)
	return d
}

// mapBackings are the backings whose mappings are measured against plain
// memory: mmap-<name>, the fault backing also as plain "mmap".
var mapBackings = []struct {
	name string
	id   uint32
}{{"mmap", BackingFault}, {"mmap-pfn", BackingPFN}, {"mmap-insert", BackingInsert}}

// plainMemory is n bytes of the process's own anonymous memory, faulted
// in: the physical limit a shared mapping is measured against.
func plainMemory(b *testing.B, n int) []byte {
	m, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		b.Fatalf("mmap %d anonymous bytes: %v", n, err)
	}
	b.Cleanup(func() { _ = unix.Munmap(m) })
	produce(m, 0)
	return m
}

// BenchmarkConsume: userland reads n bytes the kernel holds, through the
// shared mapping of each backing (no copy) or with pread() (the kernel
// copies them into a user buffer first); and, the physical limit, the
// same loop over as much of its own anonymous memory ("plain").
func BenchmarkConsume(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name+"/plain", func(b *testing.B) {
			m := plainMemory(b, s.n)
			b.SetBytes(int64(s.n))
			b.ResetTimer()
			for range b.N {
				wordSink += sum(m)
			}
		})
		for _, mb := range mapBackings {
			b.Run(s.name+"/"+mb.name, func(b *testing.B) {
				d := benchBacking(b, mb.id, s.n)
				m := d.mmap(b, 0, s.n)
				wordSink += sum(m) // fault the pages in before timing
				b.SetBytes(int64(s.n))
				b.ResetTimer()
				for range b.N {
					wordSink += sum(m)
				}
			})
		}
		b.Run(s.name+"/read", func(b *testing.B) {
			d := benchDev(b, s.n)
			buf := make([]byte, s.n)
			b.SetBytes(int64(s.n))
			b.ResetTimer()
			for range b.N {
				if _, err := unix.Pread(d.fd, buf, 0); err != nil {
					b.Fatal(err)
				}
				wordSink += sum(buf)
			}
		})
	}
}

// BenchmarkProduce: userland hands the kernel n bytes, by writing them in
// the shared mapping of each backing or by writing a user buffer and
// pwrite()-ing it; "plain" writes its own anonymous memory.
func BenchmarkProduce(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name+"/plain", func(b *testing.B) {
			m := plainMemory(b, s.n)
			b.SetBytes(int64(s.n))
			b.ResetTimer()
			for i := range b.N {
				produce(m, uint64(i))
			}
		})
		for _, mb := range mapBackings {
			b.Run(s.name+"/"+mb.name, func(b *testing.B) {
				d := benchBacking(b, mb.id, s.n)
				m := d.mmap(b, 0, s.n)
				produce(m, 0)
				b.SetBytes(int64(s.n))
				b.ResetTimer()
				for i := range b.N {
					produce(m, uint64(i))
				}
			})
		}
		b.Run(s.name+"/write", func(b *testing.B) {
			d := benchDev(b, s.n)
			buf := make([]byte, s.n)
			b.SetBytes(int64(s.n))
			b.ResetTimer()
			for i := range b.N {
				produce(buf, uint64(i))
				if _, err := unix.Pwrite(d.fd, buf, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPinned: the kernel's worker writes n bytes into a pinned user
// buffer (KMMAP_IOC_PIN_FILL, waited for), and userland reads them.
func BenchmarkPinned(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			d := openDev(b)
			buf := userBuffer(b, (s.n+unix.Getpagesize()-1)/unix.Getpagesize())[:s.n]
			if err := d.pin(uintptr(unsafe.Pointer(&buf[0])), s.n); err != nil {
				b.Fatalf("pin %d bytes: %v", s.n, err)
			}
			b.Cleanup(func() { _ = ioctl(d.fd, IocUnpin, nil) })
			b.SetBytes(int64(s.n))
			b.ResetTimer()
			for i := range b.N {
				d.pinFill(b, uint64(i))
				d.pinWait(b)
				wordSink += sum(buf)
			}
		})
	}
}

// BenchmarkRing: the kernel emits records into the shared ring in batches
// (one KMMAP_IOC_RING_EMIT each) and userland drains them from the mapping.
func BenchmarkRing(b *testing.B) {
	for _, batch := range []uint32{1, 64} {
		b.Run(fmt.Sprintf("batch%d", batch), func(b *testing.B) {
			r := openRing(b, 64)
			var next uint64
			b.ResetTimer()
			for range b.N {
				r.emit(b, batch)
				if n := r.drain(b, &next); n != int(batch) {
					b.Fatalf("drained %d records, emitted %d", n, batch)
				}
			}
			b.ReportMetric(float64(b.N)*float64(batch)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
