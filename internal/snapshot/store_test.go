package snapshot

import (
	"os"
	"path/filepath"
	"testing"
)

// The snapshot's name changes with anything that made the guest: another
// QEMU, kernel argument, QEMU argument or initramfs.
func TestSnapshotKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	s := New(dir)
	s.versions["qemu-system-x86_64"] = "QEMU emulator version 7.2.22"
	c := &Machine{ID: "6.1-amd64", QEMU: "qemu-system-x86_64", Image: write("vmlinux", "kernel"), Initramfs: write("initramfs.cpio", "cpio"), KernelArgs: []string{"console=ttyS0"}, QEMUArgs: []string{"-smp", "1"}}
	base, err := s.Key(*c)
	if err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func(){
		"QEMU version":   func() { s.versions["qemu-system-x86_64"] = "QEMU emulator version 8.2.0" },
		"kernel args":    func() { c.KernelArgs = []string{"console=ttyS0", "nokaslr"} },
		"QEMU args":      func() { c.QEMUArgs = []string{"-smp", "2"} },
		"initramfs":      func() { c.Initramfs = write("other.cpio", "cpio2") },
		"the same image": func() { c.Image = write("vmlinux", "kernel2") },
	} {
		saved := *c
		savedVersion := s.versions["qemu-system-x86_64"]
		change()
		got, err := s.Key(*c)
		if err != nil {
			t.Fatal(err)
		}
		if got == base {
			t.Errorf("%s changed: the snapshot's name stayed %s", name, got)
		}
		*c = saved
		s.versions["qemu-system-x86_64"] = savedVersion
		write("vmlinux", "kernel")
	}
}
