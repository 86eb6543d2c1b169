package vmtests

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kmmap/kmmap/internal/progress"
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

// Test boots every selected cell of the harness as a parallel subtest of
// t and replays its guest tests as subtests t/<cell>/<test>. With a custom
// kernel, it runs as cell "custom" (and the lock's cells only when the
// configuration names them).
func (h *Harness) Test(t *testing.T) {
	t.Helper()
	h.readSources(t)
	ran := 0
	if h.cfg.Custom.set() {
		ran++
		t.Run(CustomID, func(t *testing.T) {
			t.Parallel()
			h.testCell(t, CustomID)
		})
	}
	for _, k := range h.lock.Kernels {
		if !h.cfg.selects(k.ID) || (h.cfg.Custom.set() && len(h.cfg.Cells) == 0) {
			continue
		}
		ran++
		t.Run(k.ID, func(t *testing.T) {
			t.Parallel()
			h.testCell(t, k.ID)
		})
	}
	if ran == 0 {
		t.Fatalf("the cells chosen (%s) select none of %s", strings.Join(h.cfg.Cells, ","), strings.Join(h.lock.IDs(), ", "))
	}
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

// testCell prepares, boots and judges cell id as the running subtest.
func (h *Harness) testCell(t *testing.T, id string) {
	ctx := t.Context()
	f, err := h.Fetcher(t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := h.Tree(ctx, id, f)
	if err != nil {
		t.Fatal(err)
	}
	prep := time.Now()
	// The guest boots while the module builds (an edit's rebuild overlaps
	// the kernel's boot); a module that fails to build fails the cell.
	cell, err := h.Prepare(ctx, f, tree, CellOptions{Logf: t.Logf, GuestRun: guestRun(), BootWhileBuilding: true})
	if err != nil {
		t.Fatal(err)
	}
	cell.test, cell.pkg = rerunTarget(t, h.root)
	defer cell.Module() // its progress goes to t.Logf: not after t ends
	prepared := time.Since(prep)

	done := progress.Step(t.Logf, id, "boot and test")
	r := boot(ctx, cell)
	done(r.err)
	con, res := r.con, r.res
	if err := cell.writeResults(r); err != nil {
		t.Errorf("keeping the results: %v", err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("console of %s (%s):\n%s", cell.ID, cell.Image, strings.Join(con.lines, "\n"))
			t.Logf("%s", reproducer(cell, ""))
		}
	}()
	t.Logf("%s: prepared in %.1fs, QEMU (%s, %s) ran %.1fs, %d guest tests", cell.ID, prepared.Seconds(), cell.Accel, cell.bootedHow(), r.elapsed.Seconds(), len(res.list))
	for _, n := range r.notes {
		t.Logf("%s: %s", cell.ID, n)
	}
	for _, p := range cell.problems(r) {
		t.Error(p)
	}
	for _, race := range con.kernelRaces {
		t.Logf("KCSAN: a race of the kernel's own with a device, no frame of the module (not counted):\n%s", race)
	}
	if len(res.list) == 0 {
		t.FailNow()
	}
	failed := false
	seen := map[string]bool{}
	for _, name := range res.list {
		failed = !replay(t, cell, name, res, con, seen) || failed
	}
	for name, lines := range con.splats {
		if name != "" && !seen[name] {
			t.Errorf("kernel splat (%s) during %s (no result from the guest for it):\n%s", kindsOf(lines), name, strings.Join(lines, "\n"))
		}
	}
	if res.exitErr != "" && !failed {
		t.Errorf("guest test binary exited with %s although every test passed", res.exitErr)
	}
	if !res.unloaded {
		t.Errorf("the guest never tried to unload the module")
	} else if res.unloadErr != "" {
		t.Errorf("unloading the module after the tests failed (references leaked?): %s", res.unloadErr)
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

// replay reports the guest test full (and its subtests, recursively) as a
// subtest of t, with any kernel splat seen while it ran. It returns whether
// the subtest passed.
func replay(t *testing.T, cell *Cell, full string, res *results, con *console, seen map[string]bool) bool {
	tr := res.tests[full]
	if tr == nil {
		tr = &testResult{}
	}
	seen[full] = true
	splats := con.splats[full]
	return t.Run(full[strings.LastIndex(full, "/")+1:], func(t *testing.T) {
		defer func() {
			if t.Failed() {
				t.Log(reproducer(cell, full))
			}
		}()
		if len(splats) > 0 {
			t.Errorf("kernel splat (%s) during %s:\n%s", kindsOf(splats), full, strings.Join(splats, "\n"))
		}
		if testing.Verbose() {
			for _, l := range strings.Split(tr.output.String(), "\n") {
				if strings.Contains(l, "_test.go:") {
					t.Log(strings.TrimSpace(l)) // the guest test's own t.Log lines
				}
			}
		}
		for _, c := range tr.children {
			replay(t, cell, c, res, con, seen)
		}
		switch tr.action {
		case "pass":
		case "skip":
			t.Skipf("skipped in the guest:\n%s", tr.output.String())
		case "fail":
			if !res.childFailed(tr) { // a failing subtest already said why
				t.Errorf("failed in the guest:\n%s", tr.output.String())
			}
		default:
			msg := "did not run to completion in the guest (crash, hang or earlier failure)"
			if to := con.from("panic: test timed out"); to != "" {
				msg = "was still running when the guest suite's -test.timeout (a little under the VM timeout) ended it:\n" + to
			}
			t.Errorf("%s:\n%s", msg, tr.output.String())
		}
	})
}
