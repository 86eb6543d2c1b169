package vmtests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/kmmap/kmmap/internal/arch"
	"github.com/kmmap/kmmap/internal/cache"
	"github.com/kmmap/kmmap/internal/ioctl"
	"github.com/kmmap/kmmap/internal/lifeline"
	"github.com/kmmap/kmmap/internal/moddir"
	"github.com/kmmap/kmmap/internal/progress"
	"github.com/kmmap/kmmap/internal/toolchain"
	"github.com/kmmap/kmmap/kernels"
)

// buildModule builds module m for tree's kernel with the compiler that
// kernel was built with: in root (a toolchain root of the kernel's suite)
// if not nil, else with the host's. The .ko is cached by (kernel,
// toolchain, sources, make arguments).
func buildModule(ctx context.Context, tree *kernels.Tree, config kernels.Config, m Module, cacheDir string, root *toolchain.Root) (string, error) {
	k := tree.Kernel
	a, err := arch.Lookup(k.Arch)
	if err != nil {
		return "", fmt.Errorf("kernel %s: %w", k.ID, err)
	}
	src := m.Dir
	prefix, pkg := a.Cross(k.Compiler)
	where := "host"
	if root != nil {
		where = root.Dir
	} else if k.Compiler != "" {
		if _, err := exec.LookPath(prefix + k.Compiler); err != nil {
			return "", fmt.Errorf("kernel %s was built with %s: %s not found (apt-get install %s)", k.ID, k.Compiler, prefix+k.Compiler, pkg)
		}
	}
	extra := []string{tree.Dir, prefix, where}
	if !m.AllowWarnings {
		extra = append(extra, "warnings-are-errors")
	}
	if len(m.MakeArgs) > 0 { // so that modules built before MakeArgs existed keep their key
		extra = append(extra, fmt.Sprintf("make %q", m.MakeArgs))
	}
	// A kernel without CONFIG_DEBUG_INFO (the ones built here) builds
	// modules without line tables; with them a report's frames name the
	// module's source lines (withSources). -g does not change the code.
	var kcflags []string
	if !config.Enabled("CONFIG_DEBUG_INFO") {
		kcflags = []string{"KCFLAGS=-g"}
		extra = append(extra, kcflags...)
	}
	key, err := hashTree(src, extra...)
	if err != nil {
		return "", err
	}
	ko := filepath.Join(cacheDir, "kmod", k.ID+"-"+filepath.Base(src)+"-"+key+".ko")
	return cache.Build(ko, func(tmp string) (string, error) {
		if err := moddir.Copy(tmp, src); err != nil {
			return "", err
		}
		// -j: the module's files in parallel (BENCHMARKS.md, "Why the machines are so").
		args := []string{"-j" + strconv.Itoa(runtime.NumCPU()), "-C", tree.KDir, "M=" + tmp, "ARCH=" + a.Kbuild}
		if prefix != "" {
			args = append(args, "CROSS_COMPILE="+prefix)
		}
		if k.FromSource() {
			// Debian's headers name their compiler (.kernelvariables); a
			// tree built here was built with these.
			args = append(args, "CC="+prefix+k.Compiler, "HOSTCC="+k.Compiler)
		}
		args = append(append(append(args, kcflags...), m.MakeArgs...), "modules")
		cmd := lifeline.Tie(exec.CommandContext(ctx, "make", args...))
		cmd.Env = toolchain.MakeEnv(os.Environ())
		if root != nil {
			cmd = root.Command(ctx, tmp, append([]string{"make"}, args...)...)
		}
		b, err := cmd.CombinedOutput()
		b = yourPaths(b, tmp, src)
		if err != nil {
			return "", &BuildError{fmt.Sprintf("kernel %s: building the module with %s failed (make %s):\n%s", k.ID, where, strings.Join(args, " "), b)}
		}
		// The module must build warning-free on every kernel.
		if !m.AllowWarnings && bytes.Contains(b, []byte("warning:")) {
			return "", &BuildError{fmt.Sprintf("kernel %s: the module built with warnings (make %s):\n%s", k.ID, strings.Join(args, " "), b)}
		}
		built, err := builtModule(tmp)
		if err != nil {
			return "", fmt.Errorf("kernel %s: %w", k.ID, err)
		}
		if err := keepNotes(tmp, ko); err != nil {
			return "", fmt.Errorf("kernel %s: keeping the module's coverage notes: %w", k.ID, err)
		}
		return built, nil
	})
}

// yourPaths rewrites the paths the compiler printed in the build's copy
// of the sources (tmp) to the module's own directory (src), so that a
// diagnostic names the file to edit, and an editor can jump to it.
func yourPaths(out []byte, tmp, src string) []byte {
	if abs, err := filepath.Abs(src); err == nil {
		src = abs
	}
	return bytes.ReplaceAll(out, []byte(filepath.Clean(tmp)+"/"), []byte(src+"/"))
}

// builtModule is the one module a build in dir made, from Kbuild's
// modules.order (one line per module: "kmmap.o"; before 5.16 "kmmap.ko",
// on some kernels with the build directory's absolute path).
func builtModule(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "modules.order"))
	if err != nil {
		return "", fmt.Errorf("make succeeded but wrote no modules.order: does the Kbuild file set obj-m? (%w)", err)
	}
	var kos []string
	for _, l := range strings.Fields(string(b)) {
		ko := strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(l, "kernel/"), ".o"), ".ko") + ".ko"
		if !filepath.IsAbs(ko) {
			ko = filepath.Join(dir, ko)
		}
		kos = append(kos, ko)
	}
	switch {
	case len(kos) == 0:
		return "", errors.New("make succeeded but built no module (modules.order is empty): does the Kbuild file set obj-m?")
	case len(kos) > 1:
		return "", fmt.Errorf("the build made %d modules (%s): the harness loads one; build the others into it, or test each in its own directory", len(kos), strings.Join(kos, ", "))
	}
	if _, err := os.Stat(kos[0]); err != nil {
		return "", fmt.Errorf("modules.order names %s but it was not built: %w", kos[0], err)
	}
	if name, err := kernels.ModInfo(kos[0], "name"); err != nil || name == "" {
		return "", fmt.Errorf("%s has no module name in its .modinfo (%v)", kos[0], err)
	}
	return kos[0], nil
}

// BuildError is the module's sources failing to build (or building with
// warnings) for a kernel: its compiler's output, not the harness's fault.
type BuildError struct{ msg string }

func (e *BuildError) Error() string { return e.msg }

// hashTree hashes the module's sources with the strings that select the
// kernel and the compiler.
func hashTree(src string, extra ...string) (string, error) {
	h := sha256.New()
	for _, e := range extra {
		fmt.Fprintf(h, "%s\n", e)
	}
	files, err := moddir.Sources(src)
	if err != nil {
		return "", err
	}
	for _, rel := range files {
		b, err := os.ReadFile(filepath.Join(src, rel))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", rel, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// moduleBuild is the module under test being built for a cell: with
// Options.BootWhileBuilding the guest boots meanwhile and the module goes
// to it over event.ModulePort when ready.
type moduleBuild struct {
	done chan struct{}
	ko   string
	name string // from its .modinfo
	err  error
}

// startModuleBuild builds (or finds in the cache) module m for tree's
// kernel in the background, checking the compiler it was built with
// against the kernel's (config).
func startModuleBuild(ctx context.Context, tree *kernels.Tree, config kernels.Config, m Module, cacheDir string, tc *toolchain.Root, logf func(string, ...any)) *moduleBuild {
	b := &moduleBuild{done: make(chan struct{})}
	go func() {
		defer close(b.done)
		done := progress.Step(logf, tree.Kernel.ID, "module")
		defer func() { done(b.err) }()
		ko, err := buildModule(ctx, tree, config, m, cacheDir, tc)
		if err != nil {
			b.err = err
			return
		}
		name, err := kernels.ModInfo(ko, "name")
		if err != nil {
			b.err = err
			return
		}
		cc, err := checkCompiler(ko, config)
		if err != nil {
			b.err = fmt.Errorf("kernel %s: %v", tree.Kernel.ID, err)
			return
		}
		logf("%s: module built with the kernel's compiler, %s", tree.Kernel.ID, cc)
		b.ko, b.name = ko, name
	}()
	return b
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}

// checkIoctls fails when mod defines an ioctl number the kernel's registry
// of ioctl codes (ioctl-number.rst, from the linux-source the lock pins
// for checkpatch) gives to another, unless mod.AllowIoctlClash; once per
// module directory, for every cell.
func (h *Harness) checkIoctls(ctx context.Context, f *kernels.Fetcher, mod Module) error {
	if mod.AllowIoctlClash {
		return nil
	}
	_, err := once(&h.imagesMu, h.ioctls, mod.Dir, func() (struct{}, error) {
		nums, err := ioctl.FromSources(mod.Dir)
		if err != nil || len(nums) == 0 {
			return struct{}{}, err // no ioctl: nothing to check, nothing to fetch
		}
		if h.lock.Checkpatch == nil {
			return struct{}{}, fmt.Errorf("the module's ioctl numbers cannot be checked: the lock (%s) pins no linux-source to read the kernel's registry of ioctl codes from (\"checkpatch\"; `go tool kmmap kernels update` pins one), or set Module.AllowIoctlClash", h.lockPath)
		}
		dir, err := f.Checkpatch(ctx, h.lock.Checkpatch)
		if err != nil {
			return struct{}{}, fmt.Errorf("the kernel's registry of ioctl codes, to check the module's against: %w", err)
		}
		rst, err := os.ReadFile(filepath.Join(dir, filepath.Base(kernels.IoctlNumbers)))
		if err != nil {
			return struct{}{}, err
		}
		rows, err := ioctl.ParseTable(string(rst))
		if err != nil {
			return struct{}{}, fmt.Errorf("%s of %s: %w", kernels.IoctlNumbers, h.lock.Checkpatch.Package.Name, err)
		}
		clashes := ioctl.Check(nums, rows)
		if len(clashes) == 0 {
			return struct{}{}, nil
		}
		var b strings.Builder
		fmt.Fprintf(&b, "the module's ioctl numbers clash with the kernel's registry of ioctl codes (%s of %s): a program that calls one on the wrong file reaches another driver, and theirs reach the module (isatty() on the device runs TCGETS, 'T' 0x01):", kernels.IoctlNumbers, h.lock.Checkpatch.Package.Name)
		for _, c := range clashes {
			fmt.Fprintf(&b, "\n  %s/%s", mod.Dir, c)
		}
		b.WriteString("\npick a code the registry does not list, or set Module.AllowIoctlClash")
		return struct{}{}, errors.New(b.String())
	})
	return err
}

// notesDir is where buildModule keeps the gcov notes (.gcno) of the
// module ko, and in the file builddirFile the directory it was built in:
// the counters a guest sends are named by it.
func notesDir(ko string) string { return strings.TrimSuffix(ko, ".ko") + ".gcno" }

const builddirFile = "builddir"

// keepNotes copies the .gcno files a build in tmp made (none without
// gcov) into notesDir(ko).
func keepNotes(tmp, ko string) error {
	var notes []string
	err := filepath.WalkDir(tmp, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".gcno") {
			rel, _ := filepath.Rel(tmp, p)
			notes = append(notes, rel)
		}
		return err
	})
	if err != nil || len(notes) == 0 {
		return err
	}
	dir := notesDir(ko)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := moddir.CopyFiles(dir, tmp, notes); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, builddirFile), []byte(tmp), 0o644)
}
