package kernels

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// fakeELF is a minimal ELF64 x86-64 executable with one PT_NOTE segment
// holding note (name, type); the PVH note is ("Xen", 18).
func fakeELF(name string, typ uint32) []byte {
	var note bytes.Buffer
	n := append([]byte(name), 0)
	binary.Write(&note, binary.LittleEndian, []uint32{uint32(len(n)), 4, typ})
	note.Write(n)
	note.Write(make([]byte, align4(len(n))-len(n)))
	note.Write([]byte{0, 0, 0x10, 0}) // the entry address
	const ehsize, phentsize = 64, 56
	var b bytes.Buffer
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	binary.Write(&b, binary.LittleEndian, struct {
		Type, Machine                                        uint16
		Version                                              uint32
		Entry, Phoff, Shoff                                  uint64
		Flags                                                uint32
		Ehsize, Phentsize, Phnum, Shentsize, Shnum, Shstrndx uint16
	}{2, 62, 1, 0x1000000, ehsize, 0, 0, ehsize, phentsize, 1, 64, 0, 0})
	binary.Write(&b, binary.LittleEndian, struct {
		Type, Flags                             uint32
		Off, Vaddr, Paddr, Filesz, Memsz, Align uint64
	}{4, 4, ehsize + phentsize, 0, 0, uint64(note.Len()), uint64(note.Len()), 4})
	b.Write(note.Bytes())
	return b.Bytes()
}

// fakeBzImage wraps payload (already compressed, size appended as the
// build does) in a bzImage with 4 setup sectors.
func fakeBzImage(payload []byte) []byte {
	b := make([]byte, 5*512)
	b[0x1f1] = 4
	copy(b[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(b[0x206:], 0x20f)
	binary.LittleEndian.PutUint32(b[0x248:], 0x100)
	binary.LittleEndian.PutUint32(b[0x24c:], uint32(len(payload)))
	b = append(b, make([]byte, 0x100)...)
	return append(b, payload...)
}

func gzipped(b []byte) []byte {
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	w.Write(b)
	w.Close()
	return out.Bytes() // gzip's trailer ends with the size
}

func zstded(b []byte) []byte {
	w, _ := zstd.NewWriter(nil)
	out := w.EncodeAll(b, nil)
	return binary.LittleEndian.AppendUint32(out, uint32(len(b)))
}

func writeImage(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "vmlinuz")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPVHImage(t *testing.T) {
	elfImage := fakeELF("Xen", xenElfnotePhys32Entry)
	for name, payload := range map[string][]byte{"gzip": gzipped(elfImage), "zstd": zstded(elfImage)} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			img := writeImage(t, fakeBzImage(payload))
			got, err := PVHImage(img, dir)
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(got)
			if err != nil || !bytes.Equal(b, elfImage) {
				t.Fatalf("extracted %s: %v, %d bytes, want the %d-byte ELF", got, err, len(b), len(elfImage))
			}
			if again, err := PVHImage(img, dir); err != nil || again != got {
				t.Errorf("second call: %s, %v; want the cached %s", again, err, got)
			}
		})
	}
}

func TestPVHImageRefuses(t *testing.T) {
	good := fakeELF("Xen", xenElfnotePhys32Entry)
	wrongSize := zstded(good)
	binary.LittleEndian.PutUint32(wrongSize[len(wrongSize)-4:], uint32(len(good)+1))
	whole := fakeBzImage(gzipped(good))
	for _, c := range []struct {
		name  string
		image []byte
		noPVH bool   // the caller should boot the image as it is
		want  string // in the error
	}{
		{"arm64 Image", append([]byte("MZ"), make([]byte, 4096)...), true, "not an x86 bzImage"},
		{"no PVH note", fakeBzImage(gzipped(fakeELF("Linux", 1))), true, "CONFIG_PVH is off"},
		{"payload not ELF", fakeBzImage(gzipped([]byte("not an elf file at all"))), true, "not an ELF"},
		{"lz4 payload", fakeBzImage([]byte{0x02, 0x21, 0x4c, 0x18, 1, 2, 3, 4}), true, "unsupported method"},
		{"truncated", whole[:len(whole)-10], false, "truncated"},
		{"corrupt stream", fakeBzImage(append([]byte{0x28, 0xb5, 0x2f, 0xfd}, bytes.Repeat([]byte{0xee}, 64)...)), false, "decompress"},
		{"size mismatch", fakeBzImage(wrongSize), false, "corrupt"},
		{"absurd size", fakeBzImage(append(gzipped(good)[:20], 0xff, 0xff, 0xff, 0xff)), false, "corrupt"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := PVHImage(writeImage(t, c.image), dir)
			if err == nil || errors.Is(err, ErrNoPVH) != c.noPVH || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v; want an error with %q, errors.Is(ErrNoPVH) = %v", err, c.want, c.noPVH)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("a refused image left %d files in the cache", len(ents))
			}
		})
	}
}
