// Package arch is the one table of the guest architectures the harness
// knows: how Kbuild names each, its cross compilers, the QEMU that runs
// it and how, and the Debian packages that provide them.
package arch

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"

	"github.com/hugelgupf/vmtest/qemu"
)

// Arch is one guest architecture, named as Go and Debian name it.
type Arch struct {
	Name string // amd64, arm64
	// Kbuild is make's ARCH= for the kernel and its modules.
	Kbuild string
	// Image is the boot image a kernel build leaves, relative to its tree.
	Image string
	// GNU is the GNU triplet (CROSS_COMPILE without its dash), Debian the
	// spelling of it in Debian's cross package names.
	GNU, Debian string
	// QEMU is the emulator's binary, QEMUPackage the Debian package of it.
	QEMU, QEMUPackage string
	// Machine is the machine, CPU and memory QEMU is given.
	Machine []string
	// Console is the serial console's device, for console=.
	Console string
	// QEMUArch is vmtest's name of it.
	QEMUArch qemu.Arch
	// Compat32 is the compiler of static 32-bit programs this arch's
	// kernels run (IA32_EMULATION, COMPAT), and the packages with it and
	// its libc: Debian's cross compilers, since gcc-multilib cannot be
	// installed beside the aarch64 cross compiler.
	Compat32, Compat32Packages string
}

// all, chosen by measurement under TCG on the 2-core development machine
// (the figures: BENCHMARKS.md, "Why the machines are so").
//
// amd64: qboot instead of SeaBIOS, which boots slower under TCG. Not
// microvm: no faster with PCI (virtio-serial is PCI here), and without
// PCI it hung calibrating the TSC (no PIT, HPET or PM timer) and needs
// virtio-mmio devices.
//
// arm64: "-cpu max" spends seconds of each boot emulating pointer
// authentication (DESIGN.md); pauth-impdef=on removes that and keeps a CPU
// with every granule size, which the 16K cells need (cortex-a57 has no 16K
// granule). It is as fast as cortex-a57 on the 4K cells, so one model,
// max with pauth-impdef, serves every arm64 cell.
var all = []Arch{
	{
		Name: "amd64", Kbuild: "x86", Image: "arch/x86/boot/bzImage",
		GNU: "x86_64-linux-gnu", Debian: "x86-64-linux-gnu",
		QEMU: "qemu-system-x86_64", QEMUPackage: "qemu-system-x86",
		Machine: []string{"-machine", "q35", "-cpu", "max", "-m", "512M", "-nic", "none", "-bios", "/usr/share/qemu/qboot.rom"},
		Console: "ttyS0", QEMUArch: qemu.ArchAMD64,
		Compat32: "i686-linux-gnu-gcc", Compat32Packages: "gcc-i686-linux-gnu libc6-dev-i386-cross",
	},
	{
		Name: "arm64", Kbuild: "arm64", Image: "arch/arm64/boot/Image",
		GNU: "aarch64-linux-gnu", Debian: "aarch64-linux-gnu",
		QEMU: "qemu-system-aarch64", QEMUPackage: "qemu-system-arm",
		Machine: []string{"-machine", "virt", "-cpu", "max,pauth-impdef=on", "-m", "512M", "-nic", "none"},
		Console: "ttyAMA0", QEMUArch: qemu.ArchArm64,
		Compat32: "arm-linux-gnueabihf-gcc", Compat32Packages: "gcc-arm-linux-gnueabihf libc6-dev-armhf-cross",
	},
}

// Names lists the arches, in the table's order.
func Names() []string {
	var out []string
	for _, a := range all {
		out = append(out, a.Name)
	}
	return out
}

// Lookup returns the arch named name.
func Lookup(name string) (Arch, error) {
	i := slices.IndexFunc(all, func(a Arch) bool { return a.Name == name })
	if i < 0 {
		return Arch{}, fmt.Errorf("unknown guest arch %q: want one of %s", name, strings.Join(Names(), ", "))
	}
	return all[i], nil
}

// Host is the arch of this host.
func Host() (Arch, error) { return Lookup(runtime.GOARCH) }

// Native reports whether a's code runs on this host as it is.
func (a Arch) Native() bool { return a.Name == runtime.GOARCH }

// Cross returns CROSS_COMPILE for building a's code with compiler on this
// host ("" for the host's own arch) and the Debian package with that
// compiler.
func (a Arch) Cross(compiler string) (prefix, pkg string) {
	if a.Native() {
		return "", compiler
	}
	return a.GNU + "-", compiler + "-" + a.Debian
}

// CC is the C compiler of static programs for a, with the packages it and
// its libc come in.
func (a Arch) CC() (cc, pkgs string) {
	if a.Native() {
		return "gcc", "gcc libc6-dev"
	}
	return a.GNU + "-gcc", "gcc-" + a.GNU + " libc6-dev-" + a.Name + "-cross"
}

// CheckQEMU says what to install when a's QEMU or its firmware is missing.
func (a Arch) CheckQEMU() error {
	if _, err := exec.LookPath(a.QEMU); err != nil {
		return fmt.Errorf("%s not found (apt-get install %s)", a.QEMU, a.QEMUPackage)
	}
	for i, s := range a.Machine {
		if s == "-bios" && i+1 < len(a.Machine) {
			if _, err := os.Stat(a.Machine[i+1]); err != nil {
				return fmt.Errorf("QEMU firmware %s not found (apt-get install qemu-system-data)", a.Machine[i+1])
			}
		}
	}
	return nil
}
