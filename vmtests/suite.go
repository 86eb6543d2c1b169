package vmtests

import (
	"context"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmmap/kmmap/internal/arch"
	"github.com/kmmap/kmmap/internal/console"
	"github.com/kmmap/kmmap/internal/progress"
	"github.com/kmmap/kmmap/internal/toolchain"
	"github.com/kmmap/kmmap/kernels"
)

// Run runs module m's guest suite g on the selected cells, as subtests
// <test>/<cell>/<guest test> of t: the configuration from the environment
// (ConfigFromEnv), then opts, then one parallel subtest per cell.
func Run(t *testing.T, m Module, g Guest, opts ...Option) {
	t.Helper()
	cfg, err := ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(m, g, append([]Option{WithConfig(cfg)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	h.Test(t)
}

// Test boots every selected cell of the harness and replays its guest
// tests as subtests t/<cell>/<test>. With a custom kernel, it runs as
// cell "custom" (and the lock's cells only when the configuration names
// them).
//
// Kernels are work the cells wait for, not cells: they are fetched in
// the lock's order, the distribution kernels (downloads) apart from the
// kernels built from source (one build at a time), and a cell starts, as
// many at once as go test's -parallel, when its kernel is ready. A cell
// that needs no build never waits behind one.
func (h *Harness) Test(t *testing.T) {
	t.Helper()
	h.readSources(t)
	ks := h.chosen(testing.Short())
	if len(ks) == 0 {
		t.Fatalf("the cells chosen (%s) select none of %s", strings.Join(h.cfg.Cells, ","), strings.Join(h.lock.IDs(), ", "))
	}
	ids := make([]string, len(ks))
	for i, k := range ks {
		ids[i] = k.ID
	}
	if testing.Short() && len(h.cfg.Cells) == 0 && !h.cfg.Custom.set() {
		t.Logf("-short: one cell per arch (%s); without -short, or with KMMAP_CELLS, others", strings.Join(ids, ", "))
	}
	// kmmap report lists them from this line: a cell that never started
	// (its kernel still building when the test binary died) is reported.
	t.Logf("%s %s", CellsLine, strings.Join(ids, " "))
	f, err := h.Fetcher(t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer h.prepareGuests(ks, t.Logf)() // logs to t: ends before it
	slots := make(chan struct{}, parallelism())
	var wg sync.WaitGroup
	for k := range h.trees(t.Context(), f, ks, deadline(t)) {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			t.Run(k.Kernel.ID, func(t *testing.T) { h.testCell(t, k) })
		}()
	}
	wg.Wait()
}

// chosen are the kernels of the cells the configuration chooses, in the
// lock's order, the custom kernel's first: each cell id is resolved to its
// kernel here, once, and the kernel is what the rest of the run is given.
// A -short run without a choice boots ShortCells.
func (h *Harness) chosen(short bool) []kernels.Kernel {
	var ks []kernels.Kernel
	if h.cfg.Custom.set() {
		ks = append(ks, customKernel(h.cfg.Custom))
		if len(h.cfg.Cells) == 0 {
			return ks
		}
	}
	if short && len(h.cfg.Cells) == 0 {
		return ShortCells(h.lock)
	}
	for _, k := range h.lock.Kernels {
		if h.cfg.Selects(k) {
			ks = append(ks, k)
		}
	}
	return ks
}

// ShortCells are the cells a -short run boots, the quick developer run:
// one per arch, the newest distribution kernel of the arch with its
// default page size (the last cell named <series>-<arch> in the lock).
func ShortCells(l *kernels.Lock) []kernels.Kernel {
	var arches []string
	last := map[string]kernels.Kernel{}
	for _, k := range l.Kernels {
		if k.FromSource() || k.ID != k.Series+"-"+k.Arch {
			continue
		}
		if _, ok := last[k.Arch]; !ok {
			arches = append(arches, k.Arch)
		}
		last[k.Arch] = k
	}
	var ks []kernels.Kernel
	for _, a := range arches {
		ks = append(ks, last[a])
	}
	return ks
}

// minBuildTime is the least time a kernel build from source is given
// before a test's deadline (what one takes: BENCHMARKS.md, "Why the
// machines are so").
const minBuildTime = 30 * time.Minute

// buildFits says why kernel k cannot be built before deadline (nil: it
// is built, needs no build, or there is time).
func buildFits(ctx context.Context, f *kernels.Fetcher, k kernels.Kernel, deadline time.Time) error {
	if !k.FromSource() || deadline.IsZero() {
		return nil
	}
	left := time.Until(deadline)
	if left >= minBuildTime {
		return nil
	}
	if built, err := f.Built(ctx, k); err != nil || built {
		return err
	}
	return fmt.Errorf("kernel %s is built from source (10-30 min on a 2-CPU machine, once: it is cached), and go test's deadline is %s away: "+
		"build it first with no deadline, `go run github.com/kmmap/kmmap/cmd/kmmap kernels fetch %s` (make kernels builds them all), or run go test with -timeout 0",
		k.ID, left.Round(time.Second), k.ID)
}

// deadline is t's deadline (go test -timeout), zero for none.
func deadline(t *testing.T) time.Time {
	d, _ := t.Deadline()
	return d
}

// prepareGuests starts building, in the background, the guest suite and
// image of each arch of kernels ks, one arch after the other in their
// order (both are built once per arch and kept by the harness): on a
// cold cache they take minutes, which then pass while the first kernels
// download and their modules build, and the first cell's arch is ready
// first. wait waits for them.
func (h *Harness) prepareGuests(ks []kernels.Kernel, logf func(string, ...any)) (wait func()) {
	type job struct {
		id string
		a  arch.Arch
	}
	var jobs []job
	seen := map[string]bool{}
	for _, k := range ks {
		a, err := arch.Lookup(k.Arch)
		if err != nil || seen[k.Arch] {
			continue // Prepare says what is wrong
		}
		seen[k.Arch] = true
		jobs = append(jobs, job{k.ID, a})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, j := range jobs {
			if _, err := h.guestSuite(j.id, j.a); err == nil {
				h.guestImage(j.id, j.a, logf)
			}
		}
	}()
	return func() { <-done }
}

// parallelism is how many cells run at once: go test's -parallel (by
// default GOMAXPROCS), or GOMAXPROCS outside a test binary.
func parallelism() int {
	if fl := flag.Lookup("test.parallel"); fl != nil {
		if g, ok := fl.Value.(flag.Getter); ok {
			if n, ok := g.Get().(int); ok && n > 0 {
				return n
			}
		}
	}
	return runtime.GOMAXPROCS(0)
}

// readyTree is a cell's kernel tree, or why there is none.
type readyTree struct {
	Kernel kernels.Kernel
	Tree   *kernels.Tree
	Err    error
}

// trees fetches the kernel trees of cells ids and sends each as it is
// ready: the custom kernel and the distribution kernels in order, one at
// a time, and beside them the kernels built from source in order, one at
// a time (kernelbuild also keeps to one build on the machine). The
// channel is closed when every cell's tree was sent, or ctx is done.
//
// A kernel that must still be built when the test's deadline (go test
// -timeout) is nearer than minBuildTime is not started: its cell fails at
// once saying how to build it without a deadline, and the others run.
func (h *Harness) trees(ctx context.Context, f *kernels.Fetcher, ks []kernels.Kernel, deadline time.Time) <-chan readyTree {
	out := make(chan readyTree, len(ks))
	var fetched, rooted, built []kernels.Kernel
	for _, k := range ks {
		switch {
		case k.FromSource():
			built = append(built, k)
		case toolchain.NeedsRoot(k):
			rooted = append(rooted, k)
		default:
			fetched = append(fetched, k)
		}
	}
	// The cells whose modules the host's compiler builds first: the others
	// wait for a toolchain root before their first module.
	fetched = append(fetched, rooted...)
	var wg sync.WaitGroup
	for _, queue := range [][]kernels.Kernel{fetched, built} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, k := range queue {
				if ctx.Err() != nil {
					return
				}
				if err := buildFits(ctx, f, k, deadline); err != nil {
					out <- readyTree{Kernel: k, Err: err}
					continue
				}
				t, err := h.fetch(ctx, k, f)
				out <- readyTree{Kernel: k, Tree: t, Err: err}
			}
		}()
	}
	go func() {
		wg.Wait()
		close(out)
	}()
	return out
}

// readSources reads what the module and the guest side are built from,
// so that go test's cache, which tracks the files a test opens, reruns
// the cells when one changes (they are built in subprocesses).
func (h *Harness) readSources(t *testing.T) {
	t.Helper()
	for _, dir := range h.sourceDirs() {
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			_, err = os.ReadFile(p)
			return err
		})
		if err != nil {
			t.Fatalf("reading the sources of the module and its guest suite: %v", err)
		}
	}
}

// testCell prepares, boots and judges the cell of kernel k as the
// running subtest.
func (h *Harness) testCell(t *testing.T, k readyTree) {
	if k.Err != nil {
		t.Fatal(k.Err)
	}
	ctx, id, tree := t.Context(), k.Kernel.ID, k.Tree
	f, err := h.Fetcher(t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	prep := time.Now()
	// The guest boots while the module builds (an edit's rebuild overlaps
	// the kernel's boot); a module that fails to build fails the cell.
	cell, err := h.Prepare(ctx, f, tree, CellOptions{Logf: t.Logf, BootWhileBuilding: true})
	if err != nil {
		t.Fatal(err)
	}
	test, pkg := rerunTarget(t, h.root)
	defer cell.Module() // its progress goes to t.Logf: not after t ends
	prepared := time.Since(prep)

	done := progress.Step(t.Logf, id, "boot and test")
	r := boot(ctx, cell, SuiteJob{Run: guestRun()})
	done(r.err)
	rerun := func(guestTest string) string { return reproducer(cell, r.mode, test, pkg, guestTest) }
	con, res := r.con, r.res
	if err := cell.writeResults(r); err != nil {
		t.Errorf("keeping the results: %v", err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("console of %s (%s):\n%s", cell.ID, cell.Image, strings.Join(con.Lines, "\n"))
			t.Logf("%s", rerun(""))
		}
	}()
	t.Logf("%s: prepared in %.1fs, QEMU (%s, %s) ran %.1fs, %d guest tests", cell.ID, prepared.Seconds(), cell.Accel, cell.bootedHow(r), r.elapsed.Seconds(), len(res.list))
	for _, n := range r.notes {
		t.Logf("%s: %s", cell.ID, n)
	}
	for _, p := range cell.problems(r) {
		t.Error(p)
	}
	for _, race := range con.KernelRaces {
		t.Logf("KCSAN: a race of the kernel's own with a device, no frame of the module (not counted):\n%s", race)
	}
	if len(res.list) == 0 {
		t.FailNow()
	}
	failed := false
	seen := map[string]bool{}
	for _, name := range res.list {
		failed = !replay(t, cell, rerun, name, res, con, seen) || failed
	}
	for name, lines := range con.Splats {
		if name != "" && !seen[name] {
			t.Errorf("kernel splat (%s) during %s (no result from the guest for it):\n%s", console.KindsOf(lines), name, strings.Join(lines, "\n"))
		}
	}
	if res.exitErr != "" && !failed {
		t.Errorf("guest test binary exited with %s although every test passed", res.exitErr)
	}
	if !res.unloaded {
		t.Errorf("the guest never tried to unload the module")
	} else if res.unloadErr != "" {
		t.Errorf("unloading the module after the tests failed (references leaked?): %s", res.unloadErr)
	} else if !res.reloaded {
		t.Errorf("the guest unloaded the module but never loaded it again (it must load again after its exit)")
	} else if res.reloadErr != "" {
		t.Errorf("the module did not load again after its exit (did the exit leave something behind?): %s", res.reloadErr)
	}
	if err := cell.keepCoverage(ctx, r, h.cache); err != nil {
		t.Errorf("coverage: %v", err)
	}
}

// rerunTarget is the top-level test a cell subtest t runs under and the
// package, relative to the Go module at root, it is in (go test runs a
// package's tests in its directory).
func rerunTarget(t *testing.T, root string) (test, pkg string) {
	test, _, _ = strings.Cut(t.Name(), "/")
	pkg = "."
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(root, wd); err == nil && filepath.IsLocal(rel) {
			pkg = "./" + filepath.ToSlash(rel)
		}
	}
	return test, pkg
}

// CellsLine starts the log line of Test that names every cell it runs.
const CellsLine = "kmmap-cells:"

// GuestElapsedAttr is the test attribute (testing.T.Attr) of a replayed
// guest test that says how long it ran in the guest, e.g. "1.25s".
const GuestElapsedAttr = "guest_elapsed"

// replay reports the guest test full (and its subtests, recursively) as a
// subtest of t, with any kernel splat seen while it ran, and when it failed
// the line that reruns it (rerun). It returns whether the subtest passed.
func replay(t *testing.T, cell *Cell, rerun func(test string) string, full string, res *results, con *console.Console, seen map[string]bool) bool {
	tr := res.tests[full]
	if tr == nil {
		tr = &testResult{}
	}
	seen[full] = true
	splats := con.Splats[full]
	return t.Run(full[strings.LastIndex(full, "/")+1:], func(t *testing.T) {
		defer func() {
			if t.Failed() {
				t.Log(rerun(full))
			}
		}()
		if tr.action != "" {
			// The subtest's own time is the host's replay; the guest's
			// is an attribute (go test -json: an "attr" event), which
			// kmmap report shows in the test's --- line.
			t.Attr(GuestElapsedAttr, fmt.Sprintf("%.2fs", tr.elapsed))
		}
		if len(splats) > 0 {
			t.Errorf("kernel splat (%s) during %s:\n%s", console.KindsOf(splats), full, cell.withSources(strings.Join(splats, "\n")))
		}
		if testing.Verbose() {
			for _, l := range strings.Split(tr.output.String(), "\n") {
				if strings.Contains(l, "_test.go:") {
					t.Log(strings.TrimSpace(l)) // the guest test's own t.Log lines
				}
			}
		}
		for _, c := range tr.children {
			replay(t, cell, rerun, c, res, con, seen)
		}
		switch tr.action {
		case "pass":
		case "skip":
			t.Skipf("skipped in the guest:\n%s", tr.output.String())
		case "fail":
			if !res.childFailed(tr) { // a failing subtest already said why
				t.Errorf("failed in the guest after %.2fs:\n%s", tr.elapsed, tr.output.String())
			}
		default:
			msg := "did not run to completion in the guest (crash, hang or earlier failure)"
			if to := con.From("panic: test timed out"); to != "" {
				msg = "was still running when the guest suite's -test.timeout (a little under the VM timeout) ended it:\n" + to
			}
			t.Errorf("%s:\n%s", msg, tr.output.String())
		}
	})
}
