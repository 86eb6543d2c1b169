// Package arch is the one table of the guest architectures the harness
// knows: how Kbuild names each, its cross compilers, the QEMU that runs
// it and how, and the Debian packages that provide them. It is data and
// lookups: it runs nothing and installs nothing.
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

// Arch is one guest architecture, named as Debian names it.
type Arch struct {
	Name string // amd64, arm64, ppc64el, s390x, riscv64
	// GoArch is Go's name of it (GOARCH): ppc64le where Debian says ppc64el.
	GoArch string
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
	// QEMUArch is vmtest's name of it. vmtest knows no ppc64le or s390x
	// and refuses an arch it does not know; it uses the arch only to pick
	// its own 9p device and to build u-root images, neither of which the
	// harness asks of it, so those two are started as amd64 (the 9p share
	// is -virtfs, which QEMU resolves for the machine: PCI on pseries, CCW
	// on s390x).
	QEMUArch qemu.Arch
	// Compat32 is the compiler of static 32-bit programs this arch's
	// kernels run (IA32_EMULATION, COMPAT), and the packages with it and
	// its libc: Debian's cross compilers, since gcc-multilib cannot be
	// installed beside the aarch64 cross compiler. "" where Debian has no
	// 32-bit userland of the arch (ppc64el, s390x, riscv64).
	Compat32, Compat32Packages string
	// BigEndian: the guest's byte order.
	BigEndian bool
	// Suites are the Debian suites whose build roots carry this arch's
	// cross compiler (nil: every suite): the arches added with trixie's
	// kernels only there, so that older roots stay as they were.
	Suites []string
	// Host: the harness runs on this arch too (kbuild is pinned for it).
	Host bool
	// NoSnapshot says why a guest of this arch always boots cold ("":
	// it restores snapshots).
	NoSnapshot string
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
		Name: "amd64", GoArch: "amd64", Kbuild: "x86", Image: "arch/x86/boot/bzImage",
		GNU: "x86_64-linux-gnu", Debian: "x86-64-linux-gnu",
		QEMU: "qemu-system-x86_64", QEMUPackage: "qemu-system-x86",
		Machine: []string{"-machine", "q35", "-cpu", "max", "-m", "512M", "-nic", "none", "-bios", "/usr/share/qemu/qboot.rom"},
		Console: "ttyS0", QEMUArch: qemu.ArchAMD64, Host: true,
		Compat32: "i686-linux-gnu-gcc", Compat32Packages: "gcc-i686-linux-gnu libc6-dev-i386-cross",
	},
	{
		Name: "arm64", GoArch: "arm64", Kbuild: "arm64", Image: "arch/arm64/boot/Image",
		GNU: "aarch64-linux-gnu", Debian: "aarch64-linux-gnu",
		QEMU: "qemu-system-aarch64", QEMUPackage: "qemu-system-arm",
		Machine: []string{"-machine", "virt", "-cpu", "max,pauth-impdef=on", "-m", "512M", "-nic", "none"},
		Console: "ttyAMA0", QEMUArch: qemu.ArchArm64, Host: true,
		Compat32: "arm-linux-gnueabihf-gcc", Compat32Packages: "gcc-arm-linux-gnueabihf libc6-dev-armhf-cross",
	},
	{
		// Debian's powerpc64le-64k flavour: 64K pages. pseries with
		// SLOF; power9 has the radix MMU the kernel prefers.
		Name: "ppc64el", GoArch: "ppc64le", Kbuild: "powerpc", Image: "vmlinux",
		GNU: "powerpc64le-linux-gnu", Debian: "powerpc64le-linux-gnu",
		QEMU: "qemu-system-ppc64", QEMUPackage: "qemu-system-ppc",
		Machine: []string{"-machine", "pseries", "-cpu", "power9", "-m", "512M", "-nic", "none"},
		Console: "hvc0", QEMUArch: qemu.ArchAMD64, Suites: []string{"trixie"},
		// Restored from a snapshot saved this way, the 6.12 guest hung
		// in its first test that waits on a kernel timer, every time;
		// booted cold the same test passes (BENCHMARKS.md, "Why the
		// machines are so").
		NoSnapshot: "QEMU 7.2's ppc64 pseries guest hangs after a restore from some of its snapshots (its first test that waits on a kernel timer never returned)",
	},
	{
		// Big-endian; the console is the SCLP line, devices are CCW.
		Name: "s390x", GoArch: "s390x", Kbuild: "s390", Image: "arch/s390/boot/bzImage",
		GNU: "s390x-linux-gnu", Debian: "s390x-linux-gnu",
		QEMU: "qemu-system-s390x", QEMUPackage: "qemu-system-misc",
		Machine: []string{"-machine", "s390-ccw-virtio", "-cpu", "max", "-m", "512M", "-nic", "none"},
		Console: "ttysclp0", QEMUArch: qemu.ArchAMD64, BigEndian: true, Suites: []string{"trixie"},
	},
	{
		// virt with OpenSBI, QEMU's default firmware for it.
		Name: "riscv64", GoArch: "riscv64", Kbuild: "riscv", Image: "arch/riscv/boot/Image",
		GNU: "riscv64-linux-gnu", Debian: "riscv64-linux-gnu",
		QEMU: "qemu-system-riscv64", QEMUPackage: "qemu-system-misc",
		Machine: []string{"-machine", "virt", "-cpu", "rv64", "-m", "512M", "-nic", "none"},
		Console: "ttyS0", QEMUArch: qemu.ArchRiscv64, Suites: []string{"trixie"},
		// Restored from its snapshot, the 6.12 guest hung in its first
		// test that sleeps; booted cold the same suite passes
		// (BENCHMARKS.md, "Why the machines are so").
		NoSnapshot: "QEMU 7.2's riscv64 virt guest hangs after a restore from a snapshot (its first sleeping test never returned)",
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

// Hosts lists the arches the harness runs on, in the table's order.
func Hosts() []string {
	var out []string
	for _, a := range all {
		if a.Host {
			out = append(out, a.Name)
		}
	}
	return out
}

// InSuite reports whether a build root of Debian suite carries a's cross
// compiler.
func (a Arch) InSuite(suite string) bool { return a.Suites == nil || slices.Contains(a.Suites, suite) }

// Lookup returns the arch named name.
func Lookup(name string) (Arch, error) {
	i := slices.IndexFunc(all, func(a Arch) bool { return a.Name == name })
	if i < 0 {
		return Arch{}, fmt.Errorf("unknown guest arch %q: want one of %s", name, strings.Join(Names(), ", "))
	}
	return all[i], nil
}

// Host is the arch of this host.
func Host() (Arch, error) {
	i := slices.IndexFunc(all, func(a Arch) bool { return a.GoArch == runtime.GOARCH })
	if i < 0 {
		return Arch{}, fmt.Errorf("this host's arch %s is none of %s", runtime.GOARCH, strings.Join(Names(), ", "))
	}
	return all[i], nil
}

// Native reports whether a's code runs on this host as it is.
func (a Arch) Native() bool { return a.GoArch == runtime.GOARCH }

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
