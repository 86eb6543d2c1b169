package vmtests

import (
	"debug/dwarf"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// gdbAttach is what to paste into gdb before the guest runs.
func (c *Cell) gdbAttach() string {
	var b strings.Builder
	fmt.Fprintf(&b, "QEMU is halted with its gdb stub on 127.0.0.1:%d. In gdb (gdb-multiarch for another arch):\n", c.GDB)
	vmlinux := filepath.Join(c.Tree.KDir, "vmlinux")
	if _, err := os.Stat(vmlinux); err == nil {
		fmt.Fprintf(&b, "    file %s\n", vmlinux)
	}
	fmt.Fprintf(&b, "    target remote 127.0.0.1:%d\n    continue\n", c.GDB)
	b.WriteString("The module's add-symbol-file command follows once the guest has loaded it.")
	return b.String()
}

// gdbSymbols is the add-symbol-file command for the module, with the
// section addresses the guest read from /sys/module/<name>/sections.
func (c *Cell) gdbSymbols(sections map[string]string) string {
	var b strings.Builder
	ko, _ := c.Module() // built: the guest has loaded it
	if dir, err := compDir(ko); err == nil && c.KmodSrc != "" && dir != c.KmodSrc {
		// The module was built in a copy of its sources that is gone.
		fmt.Fprintf(&b, "set substitute-path %s %s\n", dir, c.KmodSrc)
	}
	fmt.Fprintf(&b, "add-symbol-file %s", ko)
	if text, ok := sections[".text"]; ok {
		fmt.Fprintf(&b, " %s", text)
	}
	names := make([]string, 0, len(sections))
	for n, addr := range sections {
		if strings.Trim(strings.TrimPrefix(addr, "0x"), "0") == "" {
			continue // not loaded (e.g. .exit.text without module unloading)
		}
		if n != ".text" && (strings.HasPrefix(n, ".data") || strings.HasPrefix(n, ".rodata") || n == ".bss" || strings.HasPrefix(n, ".init") || strings.HasPrefix(n, ".exit") || strings.HasPrefix(n, ".text.")) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, " -s %s %s", n, sections[n])
	}
	return b.String()
}

// compDir is the directory ko's first compilation unit was compiled in,
// from its DWARF (DW_AT_name of the unit, or DW_AT_comp_dir).
func compDir(ko string) (string, error) {
	f, err := elf.Open(ko)
	if err != nil {
		return "", err
	}
	defer f.Close()
	d, err := f.DWARF()
	if err != nil {
		return "", err
	}
	r := d.Reader()
	for {
		e, err := r.Next()
		if err != nil || e == nil {
			return "", fmt.Errorf("%s: no compilation unit in its DWARF", ko)
		}
		if e.Tag != dwarf.TagCompileUnit {
			continue
		}
		if name, ok := e.Val(dwarf.AttrName).(string); ok && filepath.IsAbs(name) {
			return filepath.Dir(name), nil
		}
		if dir, ok := e.Val(dwarf.AttrCompDir).(string); ok {
			return dir, nil
		}
		r.SkipChildren()
	}
}

// shellNote writes a line of kmmap's to a shell's terminal, raw or not.
func shellNote(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "\r\nkmmap: %s\r\n", strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", "\r\n"))
}
