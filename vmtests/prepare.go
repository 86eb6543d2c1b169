package vmtests

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/kmmap/kmmap/initramfs"
	"github.com/kmmap/kmmap/initramfs/event"
	"github.com/kmmap/kmmap/internal/arch"
	"github.com/kmmap/kmmap/internal/device"
	"github.com/kmmap/kmmap/internal/lifeline"
	"github.com/kmmap/kmmap/kernels"
)

// CellOptions says how one cell is prepared and run.
type CellOptions struct {
	// Logf receives progress lines.
	Logf func(format string, args ...any)
	// GDB starts QEMU halted with its gdb stub on a free port, and no
	// time limit (also when the configuration says so).
	GDB bool
	// ModuleDir builds the module from another directory than the
	// harness's (a mutant of it).
	ModuleDir string
	// KernelArgs are added to the guest's command line.
	KernelArgs []string
	// ResultsID names the results directory (default: the cell's ID).
	ResultsID string
	// NoModule boots without the module under test (nothing is built).
	NoModule bool
	// Share mounts this host directory in the guest at the same path,
	// read-write, over virtio 9p.
	Share string
	// Cold boots every run of the cell cold, for this reason, instead of
	// restoring its snapshot (the rerun line says so).
	Cold string
	// BootWhileBuilding returns the cell before its module is built: the
	// guest boots meanwhile, and a module that fails to build fails the
	// run (Cell.Module says why). Otherwise Prepare returns the error.
	BootWhileBuilding bool
}

// Prepare builds everything a cell of tree's kernel needs to boot: its
// module (with its kernel's compiler), its initramfs (in the cell's
// results directory), its QEMU setup.
func (h *Harness) Prepare(ctx context.Context, f *kernels.Fetcher, tree *kernels.Tree, o CellOptions) (_ *Cell, err error) {
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	k := tree.Kernel
	a, err := arch.Lookup(k.Arch)
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %v", k.ID, err)
	}
	if err := a.CheckQEMU(); err != nil {
		return nil, fmt.Errorf("kernel %s: %v", k.ID, err)
	}
	config, err := tree.ReadConfig()
	if err != nil {
		return nil, err
	}
	var extra []string
	if o.Share != "" {
		if extra, err = device.ShareModules(k.ID, config); err != nil {
			return nil, err
		}
	}
	mods, err := tree.GuestModules(extra...)
	if err != nil {
		return nil, err
	}
	mod := h.module
	if o.ModuleDir != "" {
		mod.Dir = o.ModuleDir
	}
	// The module's ioctl numbers against the kernel's registry, while the
	// toolchain root is made (both may download, on a first run).
	ioctls := make(chan error, 1)
	if !o.NoModule {
		go func() { ioctls <- h.checkIoctls(ctx, f, mod) }()
	}
	tc, err := h.toolchainFor(ctx, f, k, logf)
	if err != nil {
		return nil, err
	}
	var kmod *moduleBuild
	if !o.NoModule {
		if err := <-ioctls; err != nil {
			return nil, err
		}
		kmod = startModuleBuild(ctx, tree, config, mod, h.cache, tc, logf)
		if !o.BootWhileBuilding {
			<-kmod.done
			if kmod.err != nil {
				return nil, kmod.err
			}
		}
	}
	kern := Kernel{ID: k.ID, Arch: k.Arch, Release: k.Release, PageSize: config.PageSize(), CPUs: h.cpusFor(k), Config: config, Seed: h.cfg.Seed}
	timeout := h.cfg.timeout()
	if o.ResultsID == "" {
		o.ResultsID = k.ID
	}
	results := h.ResultsDir(o.ResultsID)
	claim, err := claimResults(results)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			claim.release()
		}
	}()
	if err := os.RemoveAll(results); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(results, 0o755); err != nil {
		return nil, err
	}
	label := mod.Dir
	if rel, err := filepath.Rel(h.root, mod.Dir); err == nil && filepath.IsLocal(rel) {
		label = rel
	}
	cell := &Cell{ID: k.ID, Tree: tree, Arch: a, kmod: kmod, KmodSrc: mod.Dir, kmodLabel: label, toolchain: tc, Modules: mods,
		CPUs: kern.CPUs, Timeout: timeout, Results: results, claim: claim, config: config, allow: h.allow, cfg: &h.cfg}
	if cell.lifeline, err = lifeline.Prefix(); err != nil {
		return nil, err
	}
	if cell.Image, err = bootImage(tree, h.cache, logf); err != nil {
		return nil, err
	}
	var why string
	cell.Accel, why = h.kvm.For(h.cfg.Accel, k.Arch, tree.Vmlinuz, h.cache)
	logf("%s: QEMU accelerator %s (%s)", k.ID, cell.Accel, why)
	devs := []device.Device{device.SerialConsole(a), device.ExitOnPanic(), device.QuietCrypto(),
		device.Accel(cell.Accel, device.OneTCGThread(a, config.Enabled("CONFIG_JUMP_LABEL"), kern.CPUs)),
		device.CPUs(kern.CPUs), device.KernelOnly(memoryDebugArgs(config, k.FromSource() || h.cfg.MemDebug)...)}
	if h.guest.KernelArgs != nil {
		devs = append(devs, device.KernelOnly(h.guest.KernelArgs(kern)...))
	}
	devs = append(devs, device.KernelOnly(k.Cmdline...), device.KernelOnly(h.kernelArgs...), device.QEMUOnly(h.qemuArgs...), device.KernelOnly(o.KernelArgs...))
	if o.GDB || h.cfg.GDB {
		if cell.GDB, err = FreePort(); err != nil {
			return nil, fmt.Errorf("a port for the gdb stub: %w", err)
		}
		devs = append(devs, device.GDBStub(cell.GDB))
		cell.Timeout = 0
	}
	var shares []event.Share
	if o.Share != "" {
		devs = append(devs, device.Share9p(a, o.Share, device.ShareTag))
		shares = append(shares, event.Share{Tag: device.ShareTag, Path: o.Share})
	}
	cell.QEMUArgs, cell.KernelArgs = device.Join(devs)
	cell.noModule = o.NoModule
	cell.Initramfs = filepath.Join(results, "initramfs.cpio")
	// What every job's guest is sent; the job adds its own (work).
	cell.base = event.Job{KmodParams: mod.Params, NoModule: o.NoModule, Shares: shares}
	if h.guest.Flags != nil {
		cell.base.TestArgs = h.guest.Flags(kern)
	}
	cell.snap = h.snapshotPolicy(a, cell.GDB != 0)
	if o.Cold != "" {
		cell.snap.cold = o.Cold
	}
	if cell.files, err = h.guestSuite(k.ID, a); err != nil {
		return nil, err
	}
	base, err := h.guestImage(k.ID, a, logf)
	if err != nil {
		return nil, err
	}
	if err := initramfs.Cell(cell.Initramfs, base, initramfs.CellSpec{Modules: mods}); err != nil {
		return nil, err
	}
	return cell, nil
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

// FreePort returns a TCP port on 127.0.0.1 nothing listens on now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
