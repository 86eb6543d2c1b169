package vmtests

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kmmap/kmmap/kernels"
)

// readGuestSources reads what the guest side is built from in a subprocess
// (the guest suite, the C demo), so that go test's cache, which tracks the
// files a test opens, reruns the VMs when they change.
func readGuestSources(t *testing.T, root string) {
	t.Helper()
	for _, dir := range []string{"vmtests/guest", "vmtests/guest/testdata", "kmod/examples", "kmod/include/uapi/linux"} {
		ents, err := os.ReadDir(filepath.Join(root, dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if e.IsDir() {
				continue
			}
			if _, err := os.ReadFile(filepath.Join(root, dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// loadLock returns the repository root and its kernel lock.
func loadLock(t *testing.T) (string, *kernels.Lock) {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	lock, err := kernels.LoadLock(filepath.Join(root, "kernels", "kernels.lock"))
	if err != nil {
		t.Fatal(err)
	}
	return root, lock
}

// cellFetcher is a fetcher whose progress lines go to the cell's test log.
func cellFetcher(t *testing.T) *kernels.Fetcher {
	t.Helper()
	f, err := NewFetcher(t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestGuest boots every selected cell and replays its guest tests as
// subtests TestGuest/<cell>/<test>. With KMMAP_KERNEL and KMMAP_KDIR set,
// the kernel they name runs as cell "custom" (and the lock's cells only
// when KMMAP_CELLS names them).
func TestGuest(t *testing.T) {
	root, lock := loadLock(t)
	readGuestSources(t, root)
	custom, haveCustom, err := customTree()
	if err != nil {
		t.Fatal(err)
	}
	ran := 0
	if haveCustom {
		ran++
		t.Run(CustomID, func(t *testing.T) {
			t.Parallel()
			runCell(t, root, cellFetcher(t), custom)
		})
	}
	for _, k := range lock.Kernels {
		if !selected(k.ID) || (haveCustom && os.Getenv("KMMAP_CELLS") == "") {
			continue
		}
		ran++
		t.Run(k.ID, func(t *testing.T) {
			t.Parallel()
			f := cellFetcher(t)
			tree, err := f.Fetch(context.Background(), k)
			if err != nil {
				t.Fatal(err)
			}
			runCell(t, root, f, tree)
		})
	}
	if ran == 0 {
		t.Fatalf("KMMAP_CELLS=%q selects none of %s", os.Getenv("KMMAP_CELLS"), strings.Join(lock.IDs(), ", "))
	}
}

func runCell(t *testing.T, root string, fetcher *kernels.Fetcher, tree *kernels.Tree) {
	prep := time.Now()
	// The guest boots while the module builds (an edit's rebuild overlaps
	// the kernel's boot); a module that fails to build fails the cell.
	cell, err := Prepare(context.Background(), root, fetcher, tree, Options{Logf: t.Logf, GuestRun: guestRun(), GDB: WantGDB(), BootWhileBuilding: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cell.Module() // its progress goes to t.Logf: not after t ends
	prepared := time.Since(prep)

	r := boot(cell)
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
	t.Logf("%s: prepared in %.1fs, QEMU (%s) ran %.1fs, %d guest tests", cell.ID, prepared.Seconds(), cell.Accel, r.elapsed.Seconds(), len(res.list))
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
	if err := cell.keepCoverage(context.Background(), r, fetcher.CacheDir()); err != nil {
		t.Errorf("coverage: %v", err)
	}
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
			t.Errorf("did not run to completion in the guest (crash, hang or earlier failure):\n%s", tr.output.String())
		}
	})
}
