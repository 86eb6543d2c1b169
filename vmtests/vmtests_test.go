package vmtests

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kmmap/kmmap/internal/kmmap"
	"github.com/kmmap/kmmap/kernels"
)

func TestMain(m *testing.M) {
	flag.Parse()
	if step := os.Getenv(lifelineStepEnv); step != "" {
		os.Exit(lifelineRun(step)) // the run TestNothingOutlivesRun ends
	}
	stop := prebuild()
	code := m.Run()
	stop()
	os.Exit(code)
}

// prebuild starts, when the whole package runs (no -run, no -short, as
// make test runs it), the builds of the selected cells' kernels that are
// built from source, one at a time in the background and below the
// guests' priority: the tests that need one (TestInjectedBugs, the
// matrix's debug and KCSAN cells) find it built or wait for its build,
// instead of building in turn while nothing else runs. stop cancels what
// is left (the next run starts it again).
func prebuild() (stop func()) {
	if fl := flag.Lookup("test.run"); testing.Short() || fl == nil || fl.Value.String() != "" {
		return func() {}
	}
	cfg, err := ConfigFromEnv()
	if err != nil {
		return func() {}
	}
	root, err := goModuleRoot("")
	if err != nil {
		return func() {}
	}
	h, err := New(kmmapModule(root), kmmapGuest(root), WithConfig(cfg))
	if err != nil {
		return func() {}
	}
	logf := func(format string, args ...any) { fmt.Printf("prebuild: "+format+"\n", args...) }
	f, err := h.Fetcher(logf)
	if err != nil {
		return func() {}
	}
	var ks []kernels.Kernel
	for _, k := range h.Lock().Kernels {
		if k.FromSource() && cfg.selects(k.ID) {
			ks = append(ks, k)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range h.trees(ctx, f, ks, time.Time{}) { // errors: the tests that need the kernel say them
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// TestGuest boots every selected cell and replays kmmap's guest tests as
// subtests TestGuest/<cell>/<test>.
func TestGuest(t *testing.T) {
	// Beside the self-tests that mostly wait (a new user's first run, the
	// timeouts): the package takes minutes less than one after another.
	t.Parallel()
	root := moduleRoot(t)
	Run(t, kmmapModule(root), kmmapGuest(root))
}

// kmmapModule is kmmap.ko, in the kmmap checkout at root.
func kmmapModule(root string) Module { return Module{Dir: filepath.Join(root, kmmap.ModuleDir)} }

// kmmapGuest is kmmap's guest suite with its C programs, in the kmmap
// checkout at root (package kmmap says what each part is).
func kmmapGuest(root string) Guest {
	return Guest{
		Dir: root, Package: kmmap.GuestPackage, Tags: []string{kmmap.GuestTag},
		Files:      func(arch, dir string) (map[string]string, error) { return kmmap.Programs(root, arch, dir) },
		Flags:      func(k Kernel) []string { return kmmap.Flags(k.Arch, k.PageSize, k.CPUs, k.Config, k.Seed) },
		KernelArgs: func(k Kernel) []string { return kmmap.KernelArgs(k.Arch, k.Config) },
		Sources:    kmmap.Sources(root),
	}
}

// bootsVMs marks a self-test of the harness that boots guests: -short,
// the quick developer run (TestGuest on one cell per arch), skips it.
func bootsVMs(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots guests: a self-test of the harness, not in -short (the quick run: TestGuest on one cell per arch)")
	}
}

// moduleRoot is the kmmap checkout the tests run in.
func moduleRoot(t testing.TB) string {
	t.Helper()
	root, err := goModuleRoot("")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// kmmapHarness is the harness TestGuest runs: kmmap's module and suite,
// configured from the environment.
func kmmapHarness(t testing.TB, opts ...Option) *Harness {
	t.Helper()
	cfg, err := ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	root := moduleRoot(t)
	h, err := New(kmmapModule(root), kmmapGuest(root), append([]Option{WithConfig(cfg)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// loadLock returns the repository root and its kernel lock.
func loadLock(t *testing.T) (string, *kernels.Lock) {
	t.Helper()
	h := kmmapHarness(t)
	return h.Root(), h.Lock()
}

// cellFetcher is a fetcher whose progress lines go to the cell's test log.
func cellFetcher(t *testing.T) *kernels.Fetcher {
	t.Helper()
	f, err := kmmapHarness(t).Fetcher(t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// selected reports whether the environment's configuration chooses cell id.
func selected(t testing.TB, id string) bool {
	t.Helper()
	h := kmmapHarness(t)
	if k, err := h.Lock().Kernel(id); err == nil {
		return h.Config().Selects(k) // an extra cell only when asked for
	}
	return h.Config().selects(id)
}
