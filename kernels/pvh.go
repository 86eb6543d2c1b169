package kernels

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/klauspost/compress/zstd"
)

// ErrNoPVH says a kernel image cannot be booted through the PVH entry: it
// is not an x86 bzImage, its payload is compressed in a way PVHImage does
// not undo, or the kernel was built without CONFIG_PVH. The caller boots
// the image as it is.
var ErrNoPVH = errors.New("no PVH entry")

// PVHImage returns the uncompressed ELF vmlinux inside the x86 bzImage at
// bzImage, kept in dir under a name derived from the bzImage's content, so
// that QEMU boots it through the PVH entry point. Under TCG that skips the
// kernel's self-decompression (xz or zstd, run as emulated code) and the
// real-mode setup: Debian's kernels reach init seconds sooner
// (BENCHMARKS.md, "Why the machines are so").
//
// The bzImage's payload (boot protocol 2.08+: payload_offset and
// payload_length) is decompressed and checked against the size the build
// appended to it, and the ELF must carry the Xen PVH entry note
// (XEN_ELFNOTE_PHYS32_ENTRY, CONFIG_PVH=y); otherwise the error wraps
// ErrNoPVH.
func PVHImage(bzImage, dir string) (string, error) {
	b, err := os.ReadFile(bzImage)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	out := filepath.Join(dir, "vmlinux-pvh-"+hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(out); err == nil {
		now := time.Now()
		return out, os.Chtimes(out, now, now) // in use: prune keeps it
	}
	payload, err := bzPayload(b)
	if err != nil {
		return "", fmt.Errorf("%s: %w", bzImage, err)
	}
	elfImage, err := unpackPayload(payload)
	if err != nil {
		return "", fmt.Errorf("%s: decompress the payload: %w", bzImage, err)
	}
	if err := checkPVH(elfImage); err != nil {
		return "", fmt.Errorf("%s: %w", bzImage, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, ".vmlinux-pvh-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(elfImage); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	return out, os.Rename(tmp.Name(), out)
}

// bzPayload returns the compressed kernel inside a bzImage.
func bzPayload(b []byte) ([]byte, error) {
	if len(b) < 0x250 || string(b[0x202:0x206]) != "HdrS" {
		return nil, fmt.Errorf("not an x86 bzImage: %w", ErrNoPVH)
	}
	if v := binary.LittleEndian.Uint16(b[0x206:]); v < 0x208 {
		return nil, fmt.Errorf("boot protocol %#x has no payload fields: %w", v, ErrNoPVH)
	}
	setupSects := int(b[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	off := (setupSects+1)*512 + int(binary.LittleEndian.Uint32(b[0x248:]))
	n := int(binary.LittleEndian.Uint32(b[0x24c:]))
	if n < 4 || off+n > len(b) {
		return nil, fmt.Errorf("payload %d+%d outside the %d-byte image (truncated?)", off, n, len(b))
	}
	return b[off : off+n], nil
}

// unpackPayload decompresses a bzImage payload: a stream whose last four
// bytes are the uncompressed size, 32-bit little endian (appended by the
// build after xz and zstd streams; gzip's own trailer ends with it). xz is
// undone by the host's xz,
// since the kernel's xz streams use the x86 BCJ filter that Go's xz package
// does not implement.
func unpackPayload(p []byte) ([]byte, error) {
	want := int(binary.LittleEndian.Uint32(p[len(p)-4:]))
	if want > maxVmlinux {
		return nil, fmt.Errorf("the image says its kernel is %d bytes, over %d (corrupt image?)", want, maxVmlinux)
	}
	stream := p[:len(p)-4]
	var out []byte
	var err error
	switch {
	case bytes.HasPrefix(stream, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		if _, lookErr := exec.LookPath("xz"); lookErr != nil {
			return nil, errors.New("xz not found (apt-get install xz-utils)")
		}
		cmd := exec.Command("xz", "-dc")
		cmd.Stdin = bytes.NewReader(stream)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if out, err = cmd.Output(); err != nil {
			err = fmt.Errorf("xz -dc: %v: %s", err, bytes.TrimSpace(stderr.Bytes()))
		}
	case bytes.HasPrefix(stream, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		var zr *zstd.Decoder
		if zr, err = zstd.NewReader(nil, zstd.WithDecoderMaxMemory(maxVmlinux)); err == nil {
			out, err = zr.DecodeAll(stream, make([]byte, 0, want))
			zr.Close()
		}
	case bytes.HasPrefix(stream, []byte{0x1f, 0x8b}):
		var gr *gzip.Reader
		if gr, err = gzip.NewReader(bytes.NewReader(p)); err == nil {
			out, err = io.ReadAll(gr)
		}
	default:
		return nil, fmt.Errorf("payload compressed with an unsupported method (magic % x): %w", stream[:min(6, len(stream))], ErrNoPVH)
	}
	if err != nil {
		return nil, err
	}
	if len(out) != want {
		return nil, fmt.Errorf("payload decompressed to %d bytes, the image says %d (corrupt image?)", len(out), want)
	}
	return out, nil
}

// maxVmlinux bounds what a payload may decompress to (Debian's are 35-70 MB).
const maxVmlinux = 1 << 30

// xenElfnotePhys32Entry is the note type of the PVH entry point
// (include/xen/interface/elfnote.h).
const xenElfnotePhys32Entry = 18

// checkPVH checks that an ELF kernel has the PVH entry note.
func checkPVH(b []byte) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("the payload is not an ELF vmlinux: %v: %w", err, ErrNoPVH)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		notes, err := io.ReadAll(p.Open())
		if err != nil {
			return err
		}
		for len(notes) >= 12 {
			namesz := int(binary.LittleEndian.Uint32(notes))
			descsz := int(binary.LittleEndian.Uint32(notes[4:]))
			typ := binary.LittleEndian.Uint32(notes[8:])
			name := notes[12:min(len(notes), 12+namesz)]
			if string(bytes.TrimRight(name, "\x00")) == "Xen" && typ == xenElfnotePhys32Entry {
				return nil
			}
			next := 12 + align4(namesz) + align4(descsz)
			if next > len(notes) {
				break
			}
			notes = notes[next:]
		}
	}
	return fmt.Errorf("vmlinux has no Xen PVH entry note (CONFIG_PVH is off): %w", ErrNoPVH)
}

func align4(n int) int { return (n + 3) &^ 3 }
