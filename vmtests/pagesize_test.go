package vmtests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmmap/kmmap/internal/kmmap"
)

// A program for an ARM guest that the linker aligned to 4K (armhf's
// default) is refused before any boot, saying what to link it with; one
// aligned to 64K, arm64's default and x86 programs pass. kmmap's own
// C programs are linked so for every arch.
func TestGuestFilesLoadOnEveryPageSize(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "p.c")
	if err := os.WriteFile(src, []byte("int main(void) { return 0; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cc, pkg string
		flags   []string
		refused bool
	}{
		{"arm-linux-gnueabihf-gcc", "gcc-arm-linux-gnueabihf", nil, true},
		{"arm-linux-gnueabihf-gcc", "gcc-arm-linux-gnueabihf", []string{"-Wl,-z,max-page-size=65536"}, false},
		{"aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu", nil, false},
		{"gcc", "gcc", nil, false},
	} {
		if _, err := exec.LookPath(c.cc); err != nil {
			t.Fatalf("%s not found (apt-get install %s)", c.cc, c.pkg)
		}
		bin := filepath.Join(dir, "p")
		args := append([]string{"-static", "-o", bin, src}, c.flags...)
		if out, err := exec.Command(c.cc, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", c.cc, strings.Join(args, " "), err, out)
		}
		b, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		err = loadsOnEveryPageSize(b)
		if refused := err != nil; refused != c.refused || refused && !strings.Contains(err.Error(), "max-page-size=65536") {
			t.Errorf("%s %v: loadsOnEveryPageSize = %v, want refused %v with the flag to link with", c.cc, c.flags, err, c.refused)
		}
	}
	if err := loadsOnEveryPageSize([]byte("not ELF: a data file")); err != nil {
		t.Errorf("a data file: %v", err)
	}

	// kmmap's own programs, for each arch with an ARM userland.
	root, _ := loadLock(t)
	for _, a := range []string{"arm64"} {
		progs, err := kmmap.Programs(root, a, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		for guest, host := range progs {
			b, err := os.ReadFile(host)
			if err == nil {
				err = loadsOnEveryPageSize(b)
			}
			if err != nil {
				t.Errorf("kmmap's %s for %s: %v", guest, a, err)
			}
		}
	}
}

// pageSizeBug is what an out-of-tree module ships with: the ring's
// records placed 4096 bytes in, where the UAPI says the second page.
var pageSizeBug = []edit{
	{"ring.c", "rounddown_pow_of_two((size - PAGE_SIZE) / sizeof(*ring->rec))", "rounddown_pow_of_two((size - 4096) / sizeof(*ring->rec))"},
	{"ring.c", "ring->rec = buf + PAGE_SIZE;", "ring->rec = buf + 4096;"},
}

// TestPageSizeAssumption: a module that assumes 4K pages fails the guest
// suite on the 64K cell and passes it on a 4K one (big-endian s390x): the
// 64K cell catches what the others cannot. Runs when both cells are
// selected (by default, or by naming them).
func TestPageSizeAssumption(t *testing.T) {
	bootsVMs(t)
	t.Parallel()
	root, lock := loadLock(t)
	for _, c := range []struct {
		cell  string
		fails bool
	}{{"6.12-ppc64el-64k", true}, {"6.12-s390x", false}} {
		if !selected(t, c.cell) {
			t.Skipf("SKIP LOUDLY: needs the cells 6.12-ppc64el-64k and 6.12-s390x, and KMMAP_CELLS leaves out %s", c.cell)
		}
	}
	for _, c := range []struct {
		cell  string
		fails bool
	}{{"6.12-ppc64el-64k", true}, {"6.12-s390x", false}} {
		k, err := lock.Kernel(c.cell)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(c.cell, func(t *testing.T) {
			t.Parallel()
			r, _ := bootEdited(t, root, k, "4K pages assumed", pageSizeBug, "TestRing", 0, nil, k.ID+"-pagesize-assumed")
			tr := r.res.test("TestRing")
			if failed := tr.action == "fail"; failed != c.fails {
				t.Fatalf("with the ring's records 4096 bytes in, TestRing %s on %s, want it to %s:\n%s", tr.action, k.ID, map[bool]string{true: "fail", false: "pass"}[c.fails], tr.output.String())
			}
			t.Logf("TestRing %s on %s, as it must:\n%s", tr.action, k.ID, tr.output.String())
		})
	}
}
