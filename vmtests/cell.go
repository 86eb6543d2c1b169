// Package vmtests is a harness that proves, on real kernels, that an
// out-of-tree kernel module works: it builds the module for each kernel
// of a lock with that kernel's compiler, boots the kernel under QEMU with
// a u-root initramfs, loads the module, runs a Go test package inside the
// guest and replays its results as Go subtests TestGuest/<cell>/<test>,
// failing the test in which any kernel report (WARNING, BUG, Oops, KASAN,
// KCSAN, lockdep, ...) appeared.
//
// A module's whole host test:
//
//	func TestGuest(t *testing.T) {
//		vmtests.Run(t, vmtests.Module{Dir: "../mymod"}, vmtests.Guest{Package: "./guest", Tags: []string{"guest"}},
//			vmtests.WithCells("6.1-amd64", "6.1-arm64"))
//	}
//
// and its guest package's TestMain calls testmain.Run (package
// github.com/kmmap/kmmap/vmtests/testmain). The specs say what to test
// (Module, Guest); a Harness holds what is shared between cells (New); a
// Cell is the blueprint of one boot (Harness.Prepare), which never changes;
// a Job says what the guest does (SuiteJob, CommandJob, BenchJob,
// ShellJob), and every entry point boots a cell with one through the same
// boot. The package owns the run of a cell and the verdict; the VM and its
// parts (internal/vm, device, accel, snapshot, watchdog, monitor), the console's
// reports (internal/console), the kernels (package kernels) and the cache
// (internal/cache) are packages below it, and a module's own policy (its
// style, its mutants, its workflows) is its own: kmmap's is internal/kmmap.
//
// The environment is read in one place, ConfigFromEnv, which Run calls;
// these are its variables (Vars):
//
//   - KMMAP_CELLS: comma-separated cells to run (empty: every cell of the lock
//     but the extra ones; all: every cell). Default: unset; not in the rerun
//     line.
//   - KMMAP_LOCK: the kernel lock file. Default: kernels/kernels.lock of the
//     test's Go module, else kmmap's; in the rerun line.
//   - KMMAP_CACHE: the cache of kernels, toolchain roots, modules and images.
//     Default: $XDG_CACHE_HOME/kmmap; not in the rerun line.
//   - KMMAP_RESULTS: where each cell's console, command lines and image are
//     kept. Default: results/ in the test's Go module; in the rerun line.
//   - KMMAP_DEBIAN_MIRROR: the Debian archive to download from. Default: the
//     first Debian source of apt's configuration; not in the rerun line.
//   - KMMAP_VM_TIMEOUT: how long a guest may run (a Go duration); the guest
//     suite gets -test.timeout a little under it. Default: 5m; in the rerun
//     line.
//   - KMMAP_STALL: how long a guest may print nothing and send no event before
//     the harness prints its goroutines, QEMU's state and the last console
//     lines and fails the cell (a Go duration; 0: never; a command of kmmap
//     run: only when set). Default: 3m; not in the rerun line.
//   - KMMAP_ACCEL: kvm or tcg, skipping the probe boot. Default: probed: KVM
//     only when a boot under it works; in the rerun line.
//   - KMMAP_CPUS: CPUs of every guest (1 to 8). Default: each cell's cpus in
//     the lock: 2 for the debug and KCSAN cells, 6.12-amd64 and 6.12-arm64,
//     else 1; in the rerun line.
//   - KMMAP_MEMDEBUG: 1: full run-time memory debugging on the distribution
//     cells too. Default: unset; in the rerun line.
//   - KMMAP_RANDOM_SEED: seed of the guest suite's random tests. Default: 1;
//     in the rerun line.
//   - KMMAP_SNAPSHOT: 0: boot every guest cold instead of restoring the
//     snapshot of its booted guest (the rerun line says which ran). Default:
//     1: restore, the first run boots and saves it; in the rerun line.
//   - KMMAP_TRACE: 1: print each guest agent event with its time. Default:
//     unset; not in the rerun line.
//   - KMMAP_GDB: 1: start guests halted with a gdb stub and print how to
//     attach. Default: unset; not in the rerun line.
//   - KMMAP_KERNEL: a custom kernel image to run as cell custom. Default:
//     unset; in the rerun line.
//   - KMMAP_KDIR: the Kbuild tree of the custom kernel. Default: unset; in the
//     rerun line.
//   - KMMAP_ARCH: the custom kernel's arch, amd64 or arm64. Default: the
//     host's; in the rerun line.
//   - KMMAP_KMODS: the custom kernel's modules directory
//     (lib/modules/<release>). Default: unset; in the rerun line.
//   - KMMAP_KEEP_FAILED: 1: keep a failed kernel build's tree in the cache.
//     Default: unset; not in the rerun line.
package vmtests

import (
	"regexp"
	"time"

	"github.com/kmmap/kmmap/initramfs/event"
	"github.com/kmmap/kmmap/internal/arch"
	"github.com/kmmap/kmmap/internal/snapshot"
	"github.com/kmmap/kmmap/internal/toolchain"
	"github.com/kmmap/kmmap/kernels"
)

// Cell is the blueprint of one run: a kernel of the matrix and everything
// built for it. A VM is started from it; the Cell itself never runs.
type Cell struct {
	ID   string
	Tree *kernels.Tree
	Arch arch.Arch
	// Image is what QEMU boots: on x86 the uncompressed vmlinux with the
	// PVH entry when the kernel has one (kernels.PVHImage), else
	// Tree.Vmlinuz.
	Image string
	kmod  *moduleBuild // the module built for this kernel: Module()
	// files are the guest test binary and the suite's files, sent to the
	// guest with each run (not in the image, so an edit keeps it).
	files   []event.File
	KmodSrc string // the directory it was built from
	// kmodLabel names KmodSrc in coverage reports: its path in the
	// test's Go module ("kmod"), or its absolute path outside it.
	kmodLabel string
	toolchain *toolchain.Root // the root the module was built in (nil: the host)
	Modules   []string        // the kernel's own modules the guest loads first
	Initramfs string          // base image + this cell's archive
	// KernelArgs is the guest's command line and QEMUArgs what is added
	// to the arch's machine, both from the cell's devices.
	KernelArgs, QEMUArgs []string
	Accel                string // "tcg" or "kvm"
	CPUs                 int    // QEMU's -smp: the guest's CPUs
	Timeout              time.Duration
	// Results is the directory the run's console, command lines and
	// initramfs are kept in.
	Results string
	// claim is this cell's hold on Results, from Prepare to the end of
	// its run.
	claim *resultsClaim
	// GDB, when not 0, starts QEMU halted with its gdb stub on this port.
	GDB int

	// noModule: the cell boots without the module under test.
	noModule bool

	// base is what every job's guest is sent (the job adds its own:
	// work); snap whether a boot restores a snapshot.
	base event.Job
	snap snapshotPolicy

	lifeline []string // what QEMU's command starts with (qemuCommand)

	config kernels.Config   // the kernel's
	allow  []*regexp.Regexp // expected kernel lines beside the built-in ones
	cfg    *Config          // the harness's: the rerun line repeats it
}

// memoryDebugArgs turn on the memory debugging a kernel supports at run
// time, so that a use-after-free or an overflow in the module surfaces as
// a splat. Every cell gets sampled KFENCE guards, which cost nothing
// measurable. With full (the debug cells, or KMMAP_MEMDEBUG=1) also SLUB
// red zones, poisoning and sanity checks, freed pages poisoned and zeroed,
// and page_owner. Those cost a distribution cell seconds of each boot
// under TCG (every free page is written at boot: BENCHMARKS.md, "Why the
// machines are so") and slow the suite; the debug cells' KASAN catches
// what they catch, with the offending access.
// Each only where the kernel's config has it.
func memoryDebugArgs(c kernels.Config, full bool) []string {
	var args []string
	if c.Enabled("CONFIG_KFENCE") {
		args = append(args, "kfence.sample_interval=10")
	}
	if !full {
		return args
	}
	args = append(args, "init_on_free=1")
	if c.Enabled("CONFIG_SLUB_DEBUG") {
		args = append(args, "slub_debug=FZPU")
	}
	if c.Enabled("CONFIG_PAGE_POISONING") {
		args = append(args, "page_poison=1")
	}
	if c.Enabled("CONFIG_PAGE_OWNER") {
		args = append(args, "page_owner=on") // who allocated a page, in every bad-page report
	}
	return args
}

// snapshotPolicy is a cell's: the harness's store, or why the cell boots
// cold.
type snapshotPolicy struct {
	store *snapshot.Store
	cold  string
}

// snapshotPolicy says whether a cell with these options restores
// snapshots.
func (h *Harness) snapshotPolicy(a arch.Arch, gdb bool) snapshotPolicy {
	p := snapshotPolicy{store: h.snaps}
	switch {
	case h.cfg.Cold:
		p.cold = "KMMAP_SNAPSHOT=0"
	case gdb:
		p.cold = "with a gdb stub the guest starts halted before its first instruction, to be debugged from there"
	case a.NoSnapshot != "":
		p.cold = a.NoSnapshot
	}
	return p
}
