package vmtests

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestGDBStub runs a cell as KMMAP_GDB=1 does and attaches gdb-multiarch
// to it: the guest must wait, halted at its reset vector, until gdb
// continues it; and the add-symbol-file command built from the guest's
// /sys/module/kmmap/sections must place the module's functions where the
// guest loaded them.
func TestGDBStub(t *testing.T) {
	bootsVMs(t)
	t.Parallel()
	gdb, err := exec.LookPath("gdb-multiarch")
	if err != nil {
		t.Fatal("gdb-multiarch not found (apt-get install gdb-multiarch): the KMMAP_GDB path is tested with it")
	}
	h := kmmapHarness(t)
	lock := h.Lock()
	var id string
	for _, k := range lock.Kernels {
		if selected(t, k.ID) && k.Arch == "amd64" && !k.FromSource() {
			id = k.ID
			break
		}
	}
	if id == "" {
		t.Skipf("KMMAP_CELLS=%q selects no amd64 distribution cell to attach gdb to", os.Getenv("KMMAP_CELLS"))
	}
	f := cellFetcher(t)
	tree, err := h.Tree(t.Context(), id, f)
	if err != nil {
		t.Fatal(err)
	}
	cell, err := h.Prepare(t.Context(), f, tree, CellOptions{Logf: t.Logf, GDB: true, ResultsID: id + "-gdb"})
	if err != nil {
		t.Fatal(err)
	}
	if cell.GDB == 0 || cell.Timeout != 0 {
		t.Fatalf("GDB option: port %d, timeout %s; want a port and no timeout", cell.GDB, cell.Timeout)
	}
	if !slices.Contains(cell.KernelArgs, "nokaslr") {
		t.Errorf("the gdb stub's guest boots without nokaslr (%q): `file vmlinux` addresses would not match", cell.KernelArgs)
	}
	cell.Timeout = h.Config().timeout() // keep a broken test from hanging
	done := make(chan run)
	go func() { done <- boot(t.Context(), cell, SuiteJob{Run: "^TestTwoMappingsReadKernelContents$"}) }()

	// gdb attaches, reads where the CPU is, and lets the guest run to its end.
	cmd := exec.Command(gdb, "-batch", "-nx",
		"-ex", fmt.Sprintf("target remote 127.0.0.1:%d", cell.GDB),
		"-ex", "info registers rip",
		"-ex", "continue")
	out, err := cmd.CombinedOutput()
	r := <-done
	if err != nil {
		t.Fatalf("gdb: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "0xfff0") {
		t.Errorf("the guest was not halted at the reset vector (rip 0xfff0) when gdb attached:\n%s", out)
	}
	if len(r.res.list) == 0 || r.res.tests["TestTwoMappingsReadKernelContents"] == nil || r.res.tests["TestTwoMappingsReadKernelContents"].action != "pass" {
		t.Fatalf("the guest test did not pass after gdb continued it; console:\n%s", r.con.Tail(30))
	}
	if r.res.sections[".text"] == "" {
		t.Fatalf("the guest sent no section addresses for the module: %v", r.res.sections)
	}

	// The command the harness prints, run in gdb against the .ko.
	script := cell.gdbSymbols(r.res.sections)
	args := []string{"-batch", "-nx", "-ex", "set confirm off"}
	for _, l := range strings.Split(script, "\n") {
		args = append(args, "-ex", l)
	}
	args = append(args, "-ex", "info address kmmap_buf_mmap")
	out, err = exec.Command(gdb, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("gdb %q: %v\n%s", script, err, out)
	}
	ko, err := cell.Module()
	if err != nil {
		t.Fatal(err)
	}
	want, err := symbolAddr(ko, "kmmap_buf_mmap", r.res.sections[".text"])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), fmt.Sprintf("0x%x", want)) {
		t.Errorf("after %q, gdb places kmmap_buf_mmap elsewhere than .text+offset (0x%x):\n%s", script, want, out)
	}
}

// symbolAddr is where sym of ko lies when its .text is loaded at text.
func symbolAddr(ko, sym, text string) (uint64, error) {
	base, err := strconv.ParseUint(strings.TrimPrefix(text, "0x"), 16, 64)
	if err != nil {
		return 0, err
	}
	f, err := elf.Open(ko)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return 0, err
	}
	for _, s := range syms {
		if s.Name == sym && int(s.Section) < len(f.Sections) && f.Sections[s.Section].Name == ".text" {
			return base + s.Value, nil
		}
	}
	return 0, fmt.Errorf("%s: no %s in .text", ko, sym)
}
