package vmtests

import (
	"testing"

	"github.com/kmmap/kmmap/kernels"
)

// TestGuest boots every selected cell and replays kmmap's guest tests as
// subtests TestGuest/<cell>/<test>.
func TestGuest(t *testing.T) {
	root := moduleRoot(t)
	Run(t, KmmapModule(root), KmmapGuest(root))
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
	h, err := New(KmmapModule(root), KmmapGuest(root), append([]Option{WithConfig(cfg)}, opts...)...)
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
	return kmmapHarness(t).Config().selects(id)
}
