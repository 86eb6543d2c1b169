// Package vmtests is the host side of kmmap: it prepares each cell of the
// kernel matrix (kernel, module built for it, initramfs), boots it under
// QEMU and replays the guest's test results as Go subtests named
// TestGuest/<cell>/<test>.
package vmtests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hugelgupf/vmtest/qemu"
	"github.com/kmmap/kmmap/internal/toolchain"
	"github.com/kmmap/kmmap/kernels"
)

// Machine is how one guest architecture is run under QEMU.
type Machine struct {
	QEMU     string   // binary
	Package  string   // Debian package that provides it
	Args     []string // machine, CPU, memory
	Console  string   // console= device
	QEMUArch qemu.Arch
}

// machines per guest arch, chosen by measurement under TCG on the 2-core
// development machine. arm64: "-cpu max" spends 4-9 s of each boot
// emulating pointer authentication (DESIGN.md); pauth-impdef=on removes
// that and keeps a CPU with every granule size, which the 16K cells need
// (cortex-a57 has no 16K granule). Against cortex-a57 on the 4K cells,
// QEMU start to power-off, -parallel 1, twice each: 5.10 4.2 vs 4.1 s,
// 6.1 4.0 vs 4.1 s, 6.12 4.3 vs 4.3 s, 7.3 3.9 vs 5.2 s; so one model,
// max with pauth-impdef, serves every arm64 cell.
var machines = map[string]Machine{
	"amd64": {
		QEMU: "qemu-system-x86_64", Package: "qemu-system-x86",
		// qboot instead of SeaBIOS: 0.5-1.3 s less of each boot under TCG
		// (make bench, 6.1-amd64 13.3 -> 10.5 s, 6.12-amd64 7.9 -> 7.2 s).
		// Not microvm: QEMU start to "Run /init" of 6.1's PVH vmlinux,
		// three boots each, q35 1.83-1.94 s, microvm,pcie=on (qevent's
		// virtio-serial is PCI) 1.79-1.90 s; microvm without PCI
		// 1.60-1.74 s but one boot in three hung calibrating the TSC (no
		// PIT, HPET or PM timer) and it needs virtio-mmio devices.
		Args:    []string{"-machine", "q35", "-cpu", "max", "-m", "512M", "-nic", "none", "-bios", "/usr/share/qemu/qboot.rom"},
		Console: "ttyS0", QEMUArch: qemu.ArchAMD64,
	},
	"arm64": {
		QEMU: "qemu-system-aarch64", Package: "qemu-system-arm",
		Args:    []string{"-machine", "virt", "-cpu", "max,pauth-impdef=on", "-m", "512M", "-nic", "none"},
		Console: "ttyAMA0", QEMUArch: qemu.ArchArm64,
	},
}

// Cell is the blueprint of one run: a kernel of the matrix and everything
// built for it. A VM is started from it; the Cell itself never runs.
type Cell struct {
	ID      string
	Tree    *kernels.Tree
	Machine Machine
	// Image is what QEMU boots: on x86 the uncompressed vmlinux with the
	// PVH entry when the kernel has one (kernels.PVHImage), else
	// Tree.Vmlinuz.
	Image   string
	kmod    *moduleBuild // kmmap.ko built for this kernel: Module()
	KmodSrc string       // the directory it was built from
	// kmodLabel names KmodSrc in coverage reports: its path in the
	// repository ("kmod"), or its absolute path outside it.
	kmodLabel string
	toolchain *toolchain.Root // the root the module was built in (nil: the host)
	Modules   []string        // the kernel's own modules the guest loads first
	Initramfs string          // base image + this cell's archive
	// KernelArgs is the guest command line (default: kernelArgs(Machine)).
	KernelArgs []string
	Accel      string // "tcg" or "kvm"
	CPUs       int    // QEMU's -smp: the guest's CPUs (see cpusFor)
	Timeout    time.Duration
	// Results is the directory the run's console, command lines and
	// initramfs are kept in.
	Results string
	// GDB, when not 0, starts QEMU halted with its gdb stub on this port.
	GDB int
}

// machineFor returns the QEMU setup for arch, or an error naming the
// package to install.
func machineFor(arch string) (Machine, error) {
	m, ok := machines[arch]
	if !ok {
		return Machine{}, fmt.Errorf("no QEMU machine defined for guest arch %q", arch)
	}
	if _, err := exec.LookPath(m.QEMU); err != nil {
		return Machine{}, fmt.Errorf("%s not found (apt-get install %s)", m.QEMU, m.Package)
	}
	for i, a := range m.Args {
		if a == "-bios" && i+1 < len(m.Args) {
			if _, err := os.Stat(m.Args[i+1]); err != nil {
				return Machine{}, fmt.Errorf("QEMU firmware %s not found (apt-get install qemu-system-data)", m.Args[i+1])
			}
		}
	}
	return m, nil
}

// CPUsEnv overrides the number of CPUs every cell's guest gets.
const CPUsEnv = "KMMAP_CPUS"

// smpCells are the distribution cells booted with two CPUs: one per arch,
// so that a bug only two CPUs show fails on a Debian kernel as it is
// shipped, besides the debug and KCSAN cells (every cell built from
// source has two). Measured on the 2-core development machine under TCG
// (QEMU runs a host thread per vCPU): one cell alone, QEMU start to
// verdict, median of 3 (`KMMAP_CPUS=N go run ./cmd/kmmap bench -parts
// cells -runs 3 -cells 6.12-amd64,6.12-arm64`): 6.12-amd64 8.0 s with one
// CPU, 8.4 s with two (suite 4.8 -> 5.3 s); 6.12-arm64 10.9 -> 10.5 s
// (suite 7.1 -> 6.3 s). Alone, a second CPU is free. In the matrix, where
// two cells run at once on the two cores, it is not: the ten distribution
// cells, all with one CPU 76.0/94.8/77.8 s, all with two 103.1/106.2/92.5
// s (alternating runs, `go test -run '^TestGuest$'`), a third more. So
// two cells, not ten.
var smpCells = map[string]bool{"6.12-amd64": true, "6.12-arm64": true}

// cpusFor is how many CPUs cell k's guest gets: KMMAP_CPUS (1 to 8) when
// set, else 2 for the cells built from source and smpCells, else 1.
func cpusFor(k kernels.Kernel) (int, error) {
	if s := os.Getenv(CPUsEnv); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 8 {
			return 0, fmt.Errorf("%s=%q: want a number of CPUs from 1 to 8 (the debug kernels are built with NR_CPUS=8)", CPUsEnv, s)
		}
		return n, nil
	}
	if k.FromSource() || smpCells[k.ID] {
		return 2, nil
	}
	return 1, nil
}

// smpArgs is what a guest with cpus CPUs adds to its command line. An x86
// kernel with jump labels patches its own code while it runs (text_poke_bp:
// an int3 first, the other CPUs synchronised by IPI), and QEMU 7.2's
// multi-threaded TCG can run a stale translation of the int3 on the other
// vCPU after the patch is done: "Oops: int3" in sched_clock_cpu, a panic
// at boot, when the kernel marks sched_clock stable (a static key) with
// both CPUs up. 6.12-amd64 with two CPUs: 1 boot in 30 went so; with
// tsc=unstable, which keeps sched_clock from ever being marked stable (the
// clocksource is then the HPET), 0 in 20. The kernels built here have no
// jump labels (allnoconfig) and need nothing.
func smpArgs(arch string, jumpLabels bool, cpus int) []string {
	if cpus < 2 || arch != "amd64" || !jumpLabels {
		return nil
	}
	return []string{"tsc=unstable"}
}

// kernelArgs is the guest command line: the console, no chatter below
// warnings (WARNING: splats stay visible), and a panic ends QEMU at once
// (with -no-reboot) instead of waiting for the timeout. An Oops panics
// too: it kills only the thread in the module, and the Go test binary's
// other threads would wait for it until the timeout.
//
// printk.devkmsg=on: the guest suite writes its start and end markers
// through one open /dev/kmsg, which by default lets 10 records through
// per 5 s and silently drops the rest.
//
// cryptomgr.notests skips the self-tests of every crypto algorithm the
// kernel registers, which nothing here uses: 0.37 s of a Debian 6.1 boot
// under TCG (initcall_debug: crypto_algapi_init).
func kernelArgs(m Machine) []string {
	return []string{"console=" + m.Console, "loglevel=5", "panic=-1", "oops=panic", "printk.time=1", "printk.devkmsg=on", "cryptomgr.notests"}
}

// MemDebugEnv, set to 1, gives the distribution cells the full run-time
// memory debugging the debug cells always have (see memoryDebugArgs).
const MemDebugEnv = "KMMAP_MEMDEBUG"

// memoryDebugArgs turn on the memory debugging a kernel supports at run
// time, so that a use-after-free or an overflow in the module surfaces as
// a splat. Every cell gets sampled KFENCE guards, which cost nothing
// measurable. With full (the debug cells, or KMMAP_MEMDEBUG=1) also SLUB
// red zones, poisoning and sanity checks, freed pages poisoned and zeroed,
// and page_owner. Those cost a distribution cell under TCG 1-2 s of each
// boot (every free page is written at boot) and slow the suite; the debug
// cells' KASAN catches what they catch, with the offending access.
// Each only where the kernel's config has it.
func memoryDebugArgs(tree *kernels.Tree, full bool) ([]string, error) {
	has, err := tree.ConfigSet("CONFIG_KFENCE", "CONFIG_SLUB_DEBUG", "CONFIG_PAGE_POISONING", "CONFIG_PAGE_OWNER")
	if err != nil {
		return nil, err
	}
	var args []string
	if has["CONFIG_KFENCE"] {
		args = append(args, "kfence.sample_interval=10")
	}
	if !full {
		return args, nil
	}
	args = append(args, "init_on_free=1")
	if has["CONFIG_SLUB_DEBUG"] {
		args = append(args, "slub_debug=FZPU")
	}
	if has["CONFIG_PAGE_POISONING"] {
		args = append(args, "page_poison=1")
	}
	if has["CONFIG_PAGE_OWNER"] {
		args = append(args, "page_owner=on") // who allocated a page, in every bad-page report
	}
	return args, nil
}

// repoRoot finds the directory holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("go.mod not found above %s", dir)
		}
		dir = parent
	}
}

// selected reports whether cell id is chosen by KMMAP_CELLS (comma
// separated; empty means all).
func selected(id string) bool {
	env := strings.TrimSpace(os.Getenv("KMMAP_CELLS"))
	if env == "" {
		return true
	}
	for _, s := range strings.Split(env, ",") {
		if strings.TrimSpace(s) == id {
			return true
		}
	}
	return false
}
