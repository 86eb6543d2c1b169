//go:build !kmmap_guest

package guest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
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
	cmd := exec.Command("go", "tool", "cgo", "-objdir", tmp, "-godefs", "--", "-I../../kmod/include", "uapi_godefs.go")
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
	if s := unsafe.Sizeof(Info{}); s != 32 {
		t.Errorf("sizeof(struct kmmap_info) = %d, want 32 (the ABI)", s)
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
