//go:build !kmmap_guest

package guest

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"
)

// TestUAPIGenerated regenerates the Go mirror of the UAPI header and fails
// if the committed uapi_linux.go differs: C and Go cannot drift apart.
func TestUAPIGenerated(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Fatal("gcc not found (apt-get install gcc): cgo -godefs needs it to read the UAPI header")
	}
	tmp := t.TempDir()
	cmd := exec.Command("go", "tool", "cgo", "-objdir", tmp, "-godefs", "--", "-I../../kmod/include/uapi", "uapi_godefs.go")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cgo -godefs: %v\n%s", err, err.(*exec.ExitError).Stderr)
	}
	// Drop the line that records cgo's command line (it names a temp dir).
	var kept [][]byte
	for _, l := range bytes.SplitAfter(out, []byte("\n")) {
		if !bytes.HasPrefix(l, []byte("// cgo ")) {
			kept = append(kept, l)
		}
	}
	gofmt := exec.Command("gofmt")
	gofmt.Stdin = bytes.NewReader(bytes.Join(kept, nil))
	want, err := gofmt.Output()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("uapi_linux.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		os.WriteFile(filepath.Join(tmp, "uapi_linux.go"), want, 0o644)
		t.Errorf("uapi_linux.go is stale: run `go generate ./vmtests/guest` (fresh output in %s)", tmp)
	}
}

// abiSizes are the sizes the module pins with static_assert (kmod/main.c):
// the ioctl numbers encode them, so a change is a new ABI.
var abiSizes = []struct {
	name string
	got  uintptr
	want uintptr
}{
	{"kmmap_setup", unsafe.Sizeof(Setup{}), 16},
	{"kmmap_info", unsafe.Sizeof(Info{}), 40},
	{"kmmap_range", unsafe.Sizeof(Range{}), 40},
	{"kmmap_pin", unsafe.Sizeof(PinRange{}), 24},
	{"kmmap_pin_fill", unsafe.Sizeof(PinFill{}), 16},
	{"kmmap_ring_ctl", unsafe.Sizeof(RingCtl{}), 16},
	{"kmmap_ring_header", unsafe.Sizeof(RingHeader{}), 32},
	{"kmmap_ring_record", unsafe.Sizeof(RingRecord{}), 64},
}

// abiOffsets are the ring's field offsets the module pins with
// static_assert: what a consumer on any arch, of either byte order, reads.
var abiOffsets = []struct {
	name, field string
	got, want   uintptr
}{
	{"kmmap_ring_header", "tail", unsafe.Offsetof(RingHeader{}.Tail), 4},
	{"kmmap_ring_header", "nr_records", unsafe.Offsetof(RingHeader{}.Nr_records), 8},
	{"kmmap_ring_header", "dropped", unsafe.Offsetof(RingHeader{}.Dropped), 16},
	{"kmmap_ring_header", "produced", unsafe.Offsetof(RingHeader{}.Produced), 24},
	{"kmmap_ring_record", "source", unsafe.Offsetof(RingRecord{}.Source), 8},
	{"kmmap_ring_record", "len", unsafe.Offsetof(RingRecord{}.Len), 12},
	{"kmmap_ring_record", "data", unsafe.Offsetof(RingRecord{}.Data), 16},
}

// TestUAPISizes: the Go mirror, the module's static_asserts and the header
// compiled for 32-bit userland and for every guest arch (big-endian s390x
// among them) agree on every structure's size and the ring's offsets.
func TestUAPISizes(t *testing.T) {
	src, err := os.ReadFile("../../kmod/main.c")
	if err != nil {
		t.Fatal(err)
	}
	var c strings.Builder
	c.WriteString("#include <linux/kmmap.h>\n")
	for _, s := range abiSizes {
		if s.got != s.want {
			t.Errorf("Go: sizeof(struct %s) = %d, want %d", s.name, s.got, s.want)
		}
		assert := fmt.Sprintf("static_assert(sizeof(struct %s) == %d);", s.name, s.want)
		if !bytes.Contains(src, []byte(assert)) {
			t.Errorf("kmod/main.c lacks %q", assert)
		}
		fmt.Fprintf(&c, "_Static_assert(sizeof(struct %s) == %d, \"%s\");\n", s.name, s.want, s.name)
	}
	c.WriteString("#include <stddef.h>\n")
	for _, o := range abiOffsets {
		if o.got != o.want {
			t.Errorf("Go: offsetof(struct %s, %s) = %d, want %d", o.name, o.field, o.got, o.want)
		}
		assert := fmt.Sprintf("static_assert(offsetof(struct %s, %s) == %d);", o.name, o.field, o.want)
		if !bytes.Contains(src, []byte(assert)) {
			t.Errorf("kmod/main.c lacks %q", assert)
		}
		fmt.Fprintf(&c, "_Static_assert(offsetof(struct %s, %s) == %d, \"%s.%s\");\n", o.name, o.field, o.want, o.name, o.field)
	}
	// 32-bit userland (through compat_ioctl) and every guest arch must
	// see the same layout.
	for _, cc := range []string{"gcc", "i686-linux-gnu-gcc", "arm-linux-gnueabihf-gcc", "aarch64-linux-gnu-gcc", "powerpc64le-linux-gnu-gcc", "s390x-linux-gnu-gcc", "riscv64-linux-gnu-gcc"} {
		if _, err := exec.LookPath(cc); err != nil {
			t.Errorf("%s not found (make deps installs it)", cc)
			continue
		}
		cmd := exec.Command(cc, "-fsyntax-only", "-Werror", "-I../../kmod/include/uapi", "-x", "c", "-")
		cmd.Stdin = strings.NewReader(c.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: the UAPI's sizes differ: %v\n%s", cc, err, out)
		}
	}
}

// TestUAPIHeaderC90: the header compiles as the kernel's own header check
// compiles UAPI headers, and stricter: C90, pedantic, every warning an
// error (no inline, no long long literals, no // comments).
func TestUAPIHeaderC90(t *testing.T) {
	cmd := exec.Command("gcc", "-std=c90", "-pedantic", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-I../../kmod/include/uapi", "-x", "c", "-")
	cmd.Stdin = strings.NewReader("#include <linux/kmmap.h>\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("<linux/kmmap.h> is not C90: %v\n%s", err, out)
	}
}

func TestPatternDiffersBetweenPages(t *testing.T) {
	for _, ps := range []uint64{4096, 16384, 65536} {
		seen := map[string]uint64{}
		for p := uint64(0); p < MaxPages; p++ {
			b := make([]byte, 64)
			for i := range b {
				b[i] = Pattern(1, p*ps+uint64(i)*ps/64)
			}
			if q, ok := seen[string(b)]; ok {
				t.Fatalf("page size %d: pages %d and %d get the same pattern", ps, q, p)
			}
			seen[string(b)] = p
		}
	}
}

// TestIoctlNumbersPerArch: the ioctl numbers the Go mirror uses on each
// guest arch are those the UAPI header gives that arch's C compiler (the
// cross compilers make deps installs): powerpc encodes _IOC otherwise.
func TestIoctlNumbersPerArch(t *testing.T) {
	generic := []uint{genericIocInfo, genericIocSetup, genericIocFill, genericIocChecksum, genericIocPin, genericIocUnpin, genericIocPinFill, genericIocPinWait, genericIocRingEmit, genericIocRingTimer}
	src := "#include <linux/kmmap.h>\nunsigned long kmmap_iocs[] = {KMMAP_IOC_INFO, KMMAP_IOC_SETUP, KMMAP_IOC_FILL, KMMAP_IOC_CHECKSUM, KMMAP_IOC_PIN, KMMAP_IOC_UNPIN, KMMAP_IOC_PIN_FILL, KMMAP_IOC_PIN_WAIT, KMMAP_IOC_RING_EMIT, KMMAP_IOC_RING_TIMER};\n"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "iocs.c"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	for goarch, cc := range map[string]string{"amd64": "x86_64-linux-gnu-gcc", "arm64": "aarch64-linux-gnu-gcc", "ppc64le": "powerpc64le-linux-gnu-gcc", "s390x": "s390x-linux-gnu-gcc", "riscv64": "riscv64-linux-gnu-gcc"} {
		if _, err := exec.LookPath(cc); err != nil {
			t.Errorf("%s not found (make deps installs it): the %s numbers cannot be checked", cc, goarch)
			continue
		}
		obj := filepath.Join(dir, goarch+".o")
		if out, err := exec.Command(cc, "-c", "-I../../kmod/include/uapi", "-o", obj, filepath.Join(dir, "iocs.c")).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", cc, err, out)
		}
		f, err := elf.Open(obj)
		if err != nil {
			t.Fatal(err)
		}
		data, err := f.Section(".data").Data()
		f.Close()
		if err != nil || len(data) < 8*len(generic) {
			t.Fatalf("%s: .data of %d bytes: %v", obj, len(data), err)
		}
		for i, g := range generic {
			want := uint(f.ByteOrder.Uint64(data[8*i:]))
			if got := iocFor(goarch, g); got != want {
				t.Errorf("%s: ioctl %d is %#x in Go, %#x in C (%s)", goarch, i, got, want, cc)
			}
		}
	}
}
