package vmtests

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmmap/kmmap/initramfs"
	"github.com/kmmap/kmmap/initramfs/event"
	"github.com/kmmap/kmmap/internal/accel"
	"github.com/kmmap/kmmap/internal/arch"
	"github.com/kmmap/kmmap/internal/cache"
	"github.com/kmmap/kmmap/internal/kernelbuild"
	"github.com/kmmap/kmmap/internal/lifeline"
	"github.com/kmmap/kmmap/internal/progress"
	"github.com/kmmap/kmmap/internal/snapshot"
	"github.com/kmmap/kmmap/internal/toolchain"
	"github.com/kmmap/kmmap/kernels"
)

// kmmapModulePath is the harness's own Go module: the guest agent and
// u-root's commands are built in it.
const kmmapModulePath = "github.com/kmmap/kmmap"

// Harness runs one module and its guest suite on the cells of a kernel
// lock: it holds what is shared between cells (the configuration, the
// lock, the cache, the accelerator verdict, the guest images built per
// arch). Make one with New; Run is the usual way in from a test.
type Harness struct {
	module Module
	guest  Guest
	cfg    Config

	root       string // the Go module the host test runs in
	lock       *kernels.Lock
	lockPath   string
	cache      string
	results    string
	kernelArgs []string
	qemuArgs   []string
	allow      []*regexp.Regexp

	kmmapDir func() (string, error) // the harness's Go module, for the agent
	kvm      accel.Probe
	imagesMu sync.Mutex
	images   map[string]func() (string, error)       // arch -> base image
	suites   map[string]func() ([]event.File, error) // arch -> guest suite
	ioctls   map[string]func() (struct{}, error)     // module dir -> its ioctl check
	snapDir  string                                  // "" for the cache's snapshots/
	snaps    *snapshot.Store
}

// Option configures a Harness.
type Option func(*Harness)

// WithConfig replaces the configuration (default: ConfigFromEnv's in Run,
// the zero Config in New).
func WithConfig(c Config) Option { return func(h *Harness) { h.cfg = c } }

// WithLock sets the kernel lock file.
func WithLock(path string) Option { return func(h *Harness) { h.cfg.Lock = path } }

// WithCache sets the cache directory.
func WithCache(dir string) Option { return func(h *Harness) { h.cfg.Cache = dir } }

// WithResults sets the directory each cell's results go under.
func WithResults(dir string) Option { return func(h *Harness) { h.cfg.Results = dir } }

// WithCells runs these cells of the lock (and "custom" for a custom
// kernel) unless the configuration chooses others.
func WithCells(ids ...string) Option {
	return func(h *Harness) {
		if len(h.cfg.Cells) == 0 {
			h.cfg.Cells = ids
		}
	}
}

// WithKernelArgs adds arguments to every guest's kernel command line.
func WithKernelArgs(args ...string) Option {
	return func(h *Harness) { h.kernelArgs = append(h.kernelArgs, args...) }
}

// WithQEMUArgs adds arguments to every guest's QEMU command line.
func WithQEMUArgs(args ...string) Option {
	return func(h *Harness) { h.qemuArgs = append(h.qemuArgs, args...) }
}

// WithAllow adds kernel log lines that are expected, not reports.
func WithAllow(res ...*regexp.Regexp) Option {
	return func(h *Harness) { h.allow = append(h.allow, res...) }
}

// WithCustomKernel adds a kernel of one's own as cell "custom".
func WithCustomKernel(k CustomKernel) Option { return func(h *Harness) { h.cfg.Custom = k } }

// WithRoot sets the Go module the harness works in (default: the one
// holding the working directory): the guest package's, and where
// results/ and kernels/kernels.lock are looked for.
func WithRoot(dir string) Option { return func(h *Harness) { h.root = dir } }

// WithSnapshotDir keeps the snapshots of booted guests in dir instead of
// the cache's snapshots/ directory.
func WithSnapshotDir(dir string) Option { return func(h *Harness) { h.snapDir = dir } }

// WithVMTimeout bounds each guest's run.
func WithVMTimeout(d time.Duration) Option { return func(h *Harness) { h.cfg.VMTimeout = d } }

var tieTestBinary = sync.OnceValue(lifeline.Self)

// specDir resolves a directory a spec names (field, as given) against
// base (what is says which directory that is) and checks that it is one;
// the error names what was given, where it was looked for and, when it is
// relative to the Go module's root instead, how to write it.
func specDir(field, given, base, what, root string) (string, error) {
	dir := given
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(base, dir)
	}
	fi, err := os.Stat(dir)
	if err == nil && fi.IsDir() {
		return dir, nil
	}
	if err == nil {
		err = errors.New("not a directory")
	}
	msg := fmt.Sprintf("%s %q: %v (it is relative to %s, %s)", field, given, err, what, base)
	alt := filepath.Join(root, given)
	if fi, err := os.Stat(alt); err == nil && fi.IsDir() && !filepath.IsAbs(given) && alt != dir {
		if rel, err := filepath.Rel(base, alt); err == nil {
			if field == "Guest.Package" && !strings.HasPrefix(rel, ".") {
				rel = "./" + rel
			}
			msg += fmt.Sprintf("; %s is there, relative to the Go module's root: write %q", alt, rel)
		}
	}
	return "", errors.New(msg)
}

// New returns a harness for module m and guest suite g.
func New(m Module, g Guest, opts ...Option) (*Harness, error) {
	// A test binary dies with its go test: its guests and builds then
	// die with it (lifeline). Not a program's: a daemon may outlive the
	// shell that started it.
	if testing.Testing() {
		if err := tieTestBinary(); err != nil {
			return nil, err
		}
	}
	h := &Harness{module: m, guest: g, images: map[string]func() (string, error){}, suites: map[string]func() ([]event.File, error){},
		ioctls: map[string]func() (struct{}, error){}}
	for _, o := range opts {
		o(h)
	}
	if h.root == "" {
		root, err := goModuleRoot("")
		if err != nil {
			return nil, err
		}
		h.root = root
	}
	root := h.root
	// Module.Dir and Guest.Package are relative to the host test's own
	// directory, where go test runs it (as a test's testdata/ is).
	base, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	const testDir = "the host test's directory, where go test runs it"
	pkgBase := "Guest.Dir"
	if h.guest.Dir == "" {
		h.guest.Dir, pkgBase = base, testDir
	}
	if h.module.Dir, err = specDir("Module.Dir", m.Dir, base, testDir, root); err != nil {
		return nil, err
	}
	if strings.HasPrefix(g.Package, ".") || filepath.IsAbs(g.Package) { // not an import path
		if _, err := specDir("Guest.Package", g.Package, h.guest.Dir, pkgBase, root); err != nil {
			return nil, err
		}
	}
	h.allow = append(h.allow, g.Allow...)
	h.kmmapDir = sync.OnceValues(func() (string, error) { return goModuleDir(h.guest.Dir, kmmapModulePath) })
	if h.cache = h.cfg.Cache; h.cache == "" {
		if h.cache, err = cache.DefaultDir(); err != nil {
			return nil, err
		}
	}
	if h.snapDir == "" {
		h.snapDir = filepath.Join(h.cache, "snapshots")
	}
	h.snaps = snapshot.New(h.snapDir)
	if h.results = h.cfg.Results; h.results == "" {
		h.results = filepath.Join(root, "results")
	}
	if h.lockPath = h.cfg.Lock; h.lockPath == "" {
		h.lockPath = filepath.Join(root, "kernels", "kernels.lock")
		if _, err := os.Stat(h.lockPath); err != nil {
			dir, err := h.kmmapDir()
			if err != nil {
				return nil, fmt.Errorf("no kernels/kernels.lock in %s and kmmap's own not found (%v): set KMMAP_LOCK or use WithLock", root, err)
			}
			h.lockPath = filepath.Join(dir, "kernels", "kernels.lock")
		}
	}
	if h.lock, err = kernels.LoadLock(h.lockPath); err != nil {
		return nil, err
	}
	return h, nil
}

// Config is the harness's configuration.
func (h *Harness) Config() Config { return h.cfg }

// Lock is the kernel lock the harness runs.
func (h *Harness) Lock() *kernels.Lock { return h.lock }

// CacheDir is the harness's cache directory.
func (h *Harness) CacheDir() string { return h.cache }

// Module is the harness's module under test.
func (h *Harness) Module() Module { return h.module }

// Root is the Go module the host test runs in.
func (h *Harness) Root() string { return h.root }

// ResultsDir is where cell id's results go (emptied for each run).
func (h *Harness) ResultsDir(id string) string { return filepath.Join(h.results, id) }

// Fetcher returns a fetcher of the harness's cache whose progress goes to
// logf, which builds the kernels the lock pins as source.
func (h *Harness) Fetcher(logf func(string, ...any), opts ...kernels.Option) (*kernels.Fetcher, error) {
	base := []kernels.Option{kernels.WithLogf(logf), kernels.WithSourceBuilder(kernelbuild.New()),
		kernels.WithCacheDir(h.cache), kernels.WithKeepFailed(h.cfg.KeepFailed)}
	if h.cfg.Mirror != "" {
		base = append(base, kernels.WithMirror(h.cfg.Mirror))
	}
	return kernels.NewFetcher(append(base, opts...)...)
}

// Tree returns the kernel tree of cell id: CustomID for the custom
// kernel, else the lock's kernel, fetched (or built) into the cache; a
// progress step "kernel" on f's log.
func (h *Harness) Tree(ctx context.Context, id string, f *kernels.Fetcher) (*kernels.Tree, error) {
	k := customKernel(h.cfg.Custom)
	if id != CustomID {
		var err error
		if k, err = h.lock.Kernel(id); err != nil {
			return nil, err
		}
	}
	return h.fetch(ctx, k, f)
}

// fetch returns the tree of kernel k (the lock's, or the custom kernel's),
// a progress step "kernel" on f's log.
func (h *Harness) fetch(ctx context.Context, k kernels.Kernel, f *kernels.Fetcher) (*kernels.Tree, error) {
	done := progress.Step(f.Logf, k.ID, "kernel")
	t, err := h.tree(ctx, k, f)
	done(err)
	return t, err
}

func (h *Harness) tree(ctx context.Context, k kernels.Kernel, f *kernels.Fetcher) (*kernels.Tree, error) {
	if k.ID == CustomID {
		if !h.cfg.Custom.set() {
			return nil, fmt.Errorf("cell %q needs KMMAP_KERNEL and KMMAP_KDIR", CustomID)
		}
		t, err := customTree(h.cfg.Custom)
		if err != nil {
			return nil, err
		}
		config, err := t.ReadConfig()
		if err != nil {
			return nil, err
		}
		if err := customTools(config); err != nil {
			return nil, err
		}
		if t.KDir, err = kbuildDir(t.KDir, h.cache); err != nil {
			return nil, err
		}
		return t, nil
	}
	return f.Fetch(ctx, k)
}

// goModuleRoot finds the directory holding go.mod at or above dir ("" for
// the working directory).
func goModuleRoot(dir string) (string, error) {
	if dir == "" {
		var err error
		if dir, err = os.Getwd(); err != nil {
			return "", err
		}
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if d == filepath.Dir(d) {
			return "", fmt.Errorf("go.mod not found at or above %s: run from a Go module", dir)
		}
	}
}

// goModuleDir is where Go module path's sources are for the Go module in
// dir (the module itself, a replace directory or the module cache).
func goModuleDir(dir, path string) (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", path)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%v: %s", err, ee.Stderr)
		}
		return "", fmt.Errorf("go list -m %s in %s: %w", path, dir, err)
	}
	d := strings.TrimSpace(string(out))
	if d == "" {
		return "", fmt.Errorf("go list -m %s in %s: no directory (run go mod download %s)", path, dir, path)
	}
	return d, nil
}

// guestImage is the base initramfs of arch (u-root's init and the guest
// agent, cached by their content), built once per arch for the harness.
func (h *Harness) guestImage(id string, a arch.Arch, logf func(string, ...any)) (string, error) {
	done := progress.Step(logf, id, "guest image")
	img, err := once(&h.imagesMu, h.images, a.Name, func() (string, error) { return h.baseImage(a, logf) })
	done(err)
	return img, err
}

// baseImage builds (or finds in the cache) the base initramfs of arch.
func (h *Harness) baseImage(a arch.Arch, logf func(string, ...any)) (string, error) {
	src, err := h.kmmapDir()
	if err != nil {
		return "", err
	}
	return initramfs.Base(a.GoArch, src, h.cache, logf)
}

// guestSuite is the guest test binary and the suite's files for arch,
// built once per arch for the harness: they go to the guest with each
// run (event.WriteFiles), after the snapshot point.
func (h *Harness) guestSuite(id string, a arch.Arch) ([]event.File, error) {
	return once(&h.imagesMu, h.suites, a.Name, func() ([]event.File, error) { return h.buildGuestSuite(a) })
}

// once returns build's result for key, calling it once for all callers
// (m holds the memo of each key, under mu).
func once[T any](mu *sync.Mutex, m map[string]func() (T, error), key string, build func() (T, error)) (T, error) {
	mu.Lock()
	f := m[key]
	if f == nil {
		f = sync.OnceValues(build)
		m[key] = f
	}
	mu.Unlock()
	return f()
}

func (h *Harness) buildGuestSuite(a arch.Arch) ([]event.File, error) {
	dir, err := os.MkdirTemp("", "kmmap-guest-"+a.Name+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir) // read into memory below
	g := h.guest
	bin := filepath.Join(dir, "guest.test")
	args := []string{"test", "-c", "-trimpath", "-ldflags=-s -w", "-o", bin}
	if len(g.Tags) > 0 {
		args = append(args, "-tags", strings.Join(g.Tags, ","))
	}
	cmd := lifeline.Tie(exec.Command("go", append(args, g.Package)...))
	cmd.Dir = g.Dir
	cmd.Env = append(os.Environ(), "GOARCH="+a.GoArch, "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the guest suite %s for %s (go %s in %s): %v\n%s", g.Package, a.Name, strings.Join(args, " "), g.Dir, err, out)
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("the guest package %s has no tests (go test -c made no binary)", g.Package)
	}
	paths := map[string]string{}
	if g.Files != nil {
		if paths, err = g.Files(a.Name, dir); err != nil {
			return nil, err
		}
	}
	paths[initramfs.GuestTestPath] = bin
	var files []event.File
	for guest, host := range paths {
		st, err := os.Stat(host)
		if err != nil {
			return nil, fmt.Errorf("the guest suite's file %s: %w", guest, err)
		}
		b, err := os.ReadFile(host)
		if err != nil {
			return nil, err
		}
		if err := loadsOnEveryPageSize(b); err != nil {
			return nil, fmt.Errorf("the guest suite's file %s (%s): %w", guest, host, err)
		}
		files = append(files, event.File{Path: "/" + strings.TrimPrefix(guest, "/"), Mode: st.Mode().Perm(), Data: b})
	}
	slices.SortFunc(files, func(x, y event.File) int { return strings.Compare(x.Path, y.Path) })
	return files, nil
}

// maxPageSize is the largest page size an ARM kernel may have (64K): a
// program for an ARM guest must align its loadable segments to it to run
// on every cell (the 16K cells now).
const maxPageSize = 64 << 10

// loadsOnEveryPageSize checks that b, if it is an ARM or arm64 ELF
// program, aligns its loadable segments to maxPageSize. The armhf linker
// aligns to 4K by default; on a 16K kernel such a program's execve fails
// after the point of no return and it dies with a bare SIGSEGV, or passes
// by the luck of its layout.
func loadsOnEveryPageSize(b []byte) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return nil // not an ELF file: data
	}
	if f.Machine != elf.EM_ARM && f.Machine != elf.EM_AARCH64 {
		return nil
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Align < maxPageSize {
			return fmt.Errorf("an %s program whose loadable segments are aligned to %d bytes: a kernel with 16K or 64K pages cannot load it (it dies with SIGSEGV in execve); link it with -Wl,-z,max-page-size=%d", f.Machine, p.Align, maxPageSize)
		}
	}
	return nil
}

// cpusFor is how many CPUs cell k's guest gets: the configuration's when
// set (KMMAP_CPUS), else the lock's (cpus), else 2 for a kernel built
// from source and 1 for a Debian kernel.
func (h *Harness) cpusFor(k kernels.Kernel) int {
	switch {
	case h.cfg.CPUs > 0:
		return h.cfg.CPUs
	case k.CPUs > 0:
		return k.CPUs
	case k.FromSource():
		return 2
	}
	return 1
}

// CustomID names the cell of a kernel given through the configuration.
const CustomID = "custom"

// customTree returns the tree of a custom kernel: its image (what QEMU
// boots), its Kbuild tree, its arch (default: the host's) and its modules
// directory (needed only when virtio is built as modules).
func customTree(c CustomKernel) (*kernels.Tree, error) {
	if c.Image == "" || c.KDir == "" {
		return nil, errors.New("custom kernel: set both KMMAP_KERNEL (the image QEMU boots: bzImage or arm64 Image) and KMMAP_KDIR (the Kbuild tree it was built in)")
	}
	if _, err := os.Stat(c.Image); err != nil {
		return nil, fmt.Errorf("custom kernel: KMMAP_KERNEL: %w", err)
	}
	config := filepath.Join(c.KDir, ".config")
	if _, err := os.Stat(config); err != nil {
		return nil, fmt.Errorf("custom kernel: KMMAP_KDIR=%s is not a configured Kbuild tree (no .config): %w", c.KDir, err)
	}
	rel, err := os.ReadFile(filepath.Join(c.KDir, "include", "config", "kernel.release"))
	if err != nil {
		return nil, fmt.Errorf("custom kernel: KMMAP_KDIR=%s has no include/config/kernel.release: run `make modules_prepare` in it", c.KDir)
	}
	k := customKernel(c)
	if _, err := arch.Lookup(k.Arch); err != nil {
		return nil, fmt.Errorf("custom kernel: KMMAP_ARCH: %w", err)
	}
	k.Release = strings.TrimSpace(string(rel))
	return &kernels.Tree{Kernel: k, Dir: c.KDir, Vmlinuz: c.Image, Config: config, KDir: c.KDir, ModulesDir: c.Modules}, nil
}

// customKernel is the kernel of cell CustomID, as far as the configuration
// says (its tree says the rest).
func customKernel(c CustomKernel) kernels.Kernel {
	return kernels.Kernel{ID: CustomID, Arch: c.arch(), GuestModules: []string{"virtio_pci", "virtio_console"}}
}

// modulePaths are the directories the module and the guest side are
// built from.
func (h *Harness) sourceDirs() []string {
	pkg := h.guest.Package
	if !filepath.IsAbs(pkg) {
		pkg = filepath.Join(h.guest.Dir, pkg)
	}
	return append([]string{h.module.Dir, pkg}, h.guest.Sources...)
}

// toolchainFor is the build root cell k's module is built in (nil: the
// host's compiler).
func (h *Harness) toolchainFor(ctx context.Context, f *kernels.Fetcher, k kernels.Kernel, logf func(string, ...any)) (*toolchain.Root, error) {
	if !toolchain.NeedsRoot(k) {
		return nil, nil
	}
	mirror, err := f.Mirror()
	if err != nil {
		return nil, err
	}
	done := progress.Step(logf, k.ID, "toolchain root")
	tc, err := toolchain.Ensure(ctx, h.cache, k.Suite, k.Compiler, k.Arch, mirror, logf)
	done(err)
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %v", k.ID, err)
	}
	return tc, nil
}
