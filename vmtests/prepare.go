package vmtests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kmmap/kmmap/initramfs"
	"github.com/kmmap/kmmap/internal/kernelbuild"
	"github.com/kmmap/kmmap/internal/toolchain"
	"github.com/kmmap/kmmap/kernels"
)

// ResultsEnv overrides where each cell's results go (default: results/ in
// the repository).
const ResultsEnv = "KMMAP_RESULTS"

// Options says how a cell is prepared and run.
type Options struct {
	// Logf receives progress lines.
	Logf func(format string, args ...any)
	// GuestRun is the guest suite's -test.run pattern ("" runs it all).
	GuestRun string
	// GuestCount runs each guest test this many times in one boot
	// (-test.count), for a race that shows only now and then.
	GuestCount int
	// GuestFailFast stops the guest suite at its first failing test
	// (-test.failfast): a mutant needs one.
	GuestFailFast bool
	// Shell boots to an interactive shell with the module loaded instead
	// of running the suite.
	Shell bool
	// GDB starts QEMU halted with its gdb stub on a free port, and no
	// time limit.
	GDB bool
	// KmodDir is the module's source directory (default: kmod/).
	KmodDir string
	// KernelArgs are added to the guest's command line.
	KernelArgs []string
	// ResultsID names the results directory (default: the cell's ID).
	ResultsID string
	// Bench runs the guest benchmarks matching it instead of the tests,
	// BenchTime (-test.benchtime) each.
	Bench, BenchTime string
	// BootWhileBuilding returns the cell before its module is built: the
	// guest boots meanwhile, and a module that fails to build fails the
	// run (Cell.Module says why). Otherwise Prepare returns the error.
	BootWhileBuilding bool
}

// NewFetcher returns the fetcher the harness uses: progress to logf, and
// kernels built from source by kernelbuild.
func NewFetcher(logf func(string, ...any), opts ...kernels.Option) (*kernels.Fetcher, error) {
	return kernels.NewFetcher(append([]kernels.Option{kernels.WithLogf(logf), kernels.WithSourceBuilder(kernelbuild.New())}, opts...)...)
}

// guestImages builds the guest test binary and the base initramfs once per
// arch for the whole process.
var guestImages sync.Map // arch -> func() (string, error)

func guestImage(root, arch string, logf func(string, ...any)) (string, error) {
	f, _ := guestImages.LoadOrStore(arch, sync.OnceValues(func() (string, error) {
		dir, err := os.MkdirTemp("", "kmmap-guest-"+arch+"-")
		if err != nil {
			return "", err
		}
		defer os.RemoveAll(dir) // Base copies what it needs into the image
		bin := filepath.Join(dir, "guest.test")
		cmd := exec.Command("go", "test", "-c", "-tags", "kmmap_guest", "-trimpath", "-ldflags=-s -w", "-o", bin, "./vmtests/guest")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOARCH="+arch, "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("building the guest suite for %s: %v\n%s", arch, err, out)
		}
		files, err := buildGuestPrograms(root, arch, dir)
		if err != nil {
			return "", err
		}
		files[initramfs.GuestTestPath] = bin
		return initramfs.Base(arch, root, files, logf)
	}))
	return f.(func() (string, error))()
}

// VMTimeout is how long a guest may run: KMMAP_VM_TIMEOUT, or 5 minutes
// (TCG boots take seconds, but a loaded CI host is slow).
func VMTimeout() (time.Duration, error) {
	d := 5 * time.Minute
	if s := os.Getenv("KMMAP_VM_TIMEOUT"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("KMMAP_VM_TIMEOUT=%q: %v (want a Go duration such as 90s)", s, err)
		}
	}
	return d, nil
}

// ResultsDir is where cell id's results go: $KMMAP_RESULTS/<id> or
// <root>/results/<id>. It is emptied for each run.
func ResultsDir(root, id string) string {
	base := os.Getenv(ResultsEnv)
	if base == "" {
		base = filepath.Join(root, "results")
	}
	return filepath.Join(base, id)
}

// Prepare builds everything a cell needs to boot: its module (with its
// kernel's compiler), its initramfs (in the cell's results directory), its
// QEMU setup.
func Prepare(ctx context.Context, root string, fetcher *kernels.Fetcher, tree *kernels.Tree, o Options) (*Cell, error) {
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	k := tree.Kernel
	m, err := machineFor(k.Arch)
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %v", k.ID, err)
	}
	mods, err := tree.GuestModules()
	if err != nil {
		return nil, err
	}
	var tc *toolchain.Root
	if toolchain.NeedsRoot(k) {
		mirror, err := fetcher.Mirror()
		if err != nil {
			return nil, err
		}
		if tc, err = toolchain.Ensure(ctx, fetcher.CacheDir(), k.Suite, k.Compiler, mirror, logf); err != nil {
			return nil, fmt.Errorf("kernel %s: %v", k.ID, err)
		}
	}
	if o.KmodDir == "" {
		o.KmodDir = filepath.Join(root, "kmod")
	}
	kmod := startModuleBuild(ctx, tree, o.KmodDir, fetcher.CacheDir(), tc, logf)
	if !o.BootWhileBuilding {
		<-kmod.done
		if kmod.err != nil {
			return nil, kmod.err
		}
	}
	pageSize, err := tree.PageSize()
	if err != nil {
		return nil, err
	}
	args, err := memoryDebugArgs(tree, k.FromSource() || os.Getenv(MemDebugEnv) == "1")
	if err != nil {
		return nil, err
	}
	cpus, err := cpusFor(k)
	if err != nil {
		return nil, err
	}
	confArgs, testArgs, err := configArgs(tree, cpus)
	if err != nil {
		return nil, err
	}
	args = append(append(args, confArgs...), k.Cmdline...)
	timeout, err := VMTimeout()
	if err != nil {
		return nil, err
	}
	if o.ResultsID == "" {
		o.ResultsID = k.ID
	}
	results := ResultsDir(root, o.ResultsID)
	if err := os.RemoveAll(results); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(results, 0o755); err != nil {
		return nil, err
	}
	label := o.KmodDir
	if rel, err := filepath.Rel(root, o.KmodDir); err == nil && filepath.IsLocal(rel) {
		label = rel
	}
	cell := &Cell{ID: k.ID, Tree: tree, Machine: m, kmod: kmod, KmodSrc: o.KmodDir, kmodLabel: label, toolchain: tc, Modules: mods,
		KernelArgs: append(append(kernelArgs(m), args...), o.KernelArgs...), CPUs: cpus, Timeout: timeout, Results: results}
	if o.GDB {
		if cell.GDB, err = FreePort(); err != nil {
			return nil, fmt.Errorf("a port for the gdb stub: %w", err)
		}
		cell.Timeout = 0
	}
	if cell.Image, err = bootImage(tree, fetcher.CacheDir(), logf); err != nil {
		return nil, err
	}
	var why string
	cell.Accel, why = accel.get(k.Arch, tree.Vmlinuz, fetcher.CacheDir())
	logf("%s: QEMU accelerator %s (%s)", k.ID, cell.Accel, why)
	cell.Initramfs = filepath.Join(results, "initramfs.cpio")
	spec := initramfs.CellSpec{Modules: mods, Shell: o.Shell, Bench: o.Bench, BenchTime: o.BenchTime, TestArgs: append([]string{fmt.Sprintf("-kmmap.pagesize=%d", pageSize)}, testArgs...)}
	if o.GuestRun != "" {
		spec.TestArgs = append(spec.TestArgs, "-test.run="+o.GuestRun)
	}
	if o.GuestFailFast {
		spec.TestArgs = append(spec.TestArgs, "-test.failfast")
	}
	if o.GuestCount > 1 {
		spec.TestArgs = append(spec.TestArgs, fmt.Sprintf("-test.count=%d", o.GuestCount))
	}
	if seed := os.Getenv("KMMAP_RANDOM_SEED"); seed != "" {
		spec.TestArgs = append(spec.TestArgs, "-kmmap.seed="+seed)
	}
	base, err := guestImage(root, k.Arch, logf)
	if err != nil {
		return nil, err
	}
	if err := initramfs.Cell(cell.Initramfs, base, spec); err != nil {
		return nil, err
	}
	return cell, nil
}

// configArgs derives from the kernel's config what its guest's command
// line and the guest suite need:
//   - 32-bit programs (the C demo built -m32 or for armhf, through
//     compat_ioctl) where the kernel runs them; Debian turns ia32 emulation
//     off by default from 6.7 (CONFIG_IA32_EMULATION_DEFAULT_DISABLED), and
//     ia32_emulation=1 turns it back on (arm64: COMPAT, which Debian's 16K
//     kernels have too).
//   - the largest sizes of TestLargeWork under a short soft-lockup
//     threshold where KASAN and the soft-lockup detector are built in,
//     and TestAllocFailures where failslab and fail_page_alloc are (the
//     debug cells).
//   - the race tests' denser KCSAN sampling where KCSAN is built in.
//   - the guest's number of CPUs, which the suite checks, and what a
//     guest with several needs (smpArgs).
func configArgs(tree *kernels.Tree, cpus int) (kernelArgs, testArgs []string, err error) {
	set, err := tree.ConfigSet("CONFIG_IA32_EMULATION", "CONFIG_IA32_EMULATION_DEFAULT_DISABLED", "CONFIG_COMPAT",
		"CONFIG_SOFTLOCKUP_DETECTOR", "CONFIG_KASAN", "CONFIG_FAILSLAB", "CONFIG_FAIL_PAGE_ALLOC", "CONFIG_FAULT_INJECTION_DEBUG_FS", "CONFIG_KCSAN",
		"CONFIG_JUMP_LABEL")
	if err != nil {
		return nil, nil, err
	}
	kernelArgs = smpArgs(tree.Kernel.Arch, set["CONFIG_JUMP_LABEL"], cpus)
	testArgs = append(testArgs, fmt.Sprintf("-kmmap.cpus=%d", cpus))
	compat := set["CONFIG_COMPAT"]
	if tree.Kernel.Arch == "amd64" {
		compat = set["CONFIG_IA32_EMULATION"]
		if set["CONFIG_IA32_EMULATION_DEFAULT_DISABLED"] {
			kernelArgs = append(kernelArgs, "ia32_emulation=1")
		}
	}
	testArgs = append(testArgs, fmt.Sprintf("-kmmap.compat=%t", compat))
	if set["CONFIG_SOFTLOCKUP_DETECTOR"] && set["CONFIG_KASAN"] {
		testArgs = append(testArgs, "-kmmap.large")
	}
	if set["CONFIG_FAILSLAB"] && set["CONFIG_FAIL_PAGE_ALLOC"] && set["CONFIG_FAULT_INJECTION_DEBUG_FS"] {
		testArgs = append(testArgs, "-kmmap.faultinject")
	}
	if set["CONFIG_KCSAN"] {
		testArgs = append(testArgs, "-kmmap.kcsan")
	}
	return kernelArgs, testArgs, nil
}

// TreeFor returns the kernel tree of cell id: "custom" for the kernel the
// environment names (see customTree), else the lock's kernel, fetched (or
// built) into the cache.
func TreeFor(ctx context.Context, lock *kernels.Lock, fetcher *kernels.Fetcher, id string) (*kernels.Tree, error) {
	if id == CustomID {
		t, ok, err := customTree()
		if !ok && err == nil {
			err = fmt.Errorf("cell %q needs KMMAP_KERNEL and KMMAP_KDIR", CustomID)
		}
		return t, err
	}
	k, err := lock.Kernel(id)
	if err != nil {
		return nil, err
	}
	return fetcher.Fetch(ctx, k)
}

// writeResults keeps what a person needs to look into a run: the whole
// console, the kernel command line, the QEMU command line and the module
// under test, beside the initramfs.
func (c *Cell) writeResults(r run) error {
	files := map[string]string{
		"console.log": strings.Join(r.con.lines, "\n") + "\n",
		"cmdline":     strings.Join(c.KernelArgs, " ") + "\n",
		"qemu":        r.qemuCmdline + "\n",
		"kernel":      c.Image + "\n",
	}
	if ko, err := c.Module(); err == nil {
		// the module the guest received over its port, not in the initramfs
		b, err := os.ReadFile(ko)
		if err != nil {
			return err
		}
		name := filepath.Base(ko)
		if mod, err := kernels.ModInfo(ko, "name"); err == nil && mod != "" {
			name = mod + ".ko"
		}
		files[name] = string(b)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(c.Results, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// bootImage is the kernel image QEMU boots for tree: on x86 the vmlinux
// inside the bzImage, booted through its PVH entry, which under TCG saves
// the emulated decompression (kernels.PVHImage); else the image itself.
func bootImage(tree *kernels.Tree, cache string, logf func(string, ...any)) (string, error) {
	if tree.Kernel.Arch != "amd64" {
		return tree.Vmlinuz, nil
	}
	img, err := kernels.PVHImage(tree.Vmlinuz, filepath.Join(cache, "pvh"))
	if errors.Is(err, kernels.ErrNoPVH) {
		logf("%s: booting the bzImage itself: %v", tree.Kernel.ID, err)
		return tree.Vmlinuz, nil
	}
	return img, err
}
