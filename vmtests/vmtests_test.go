package vmtests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmmap/kmmap/initramfs"
	"github.com/kmmap/kmmap/internal/toolchain"
	"github.com/kmmap/kmmap/kernels"
)

// guestImages builds the guest test binary and the base initramfs once per
// arch for the whole test process.
var guestImages sync.Map // arch -> func() (string, error)

func guestImage(t *testing.T, root, arch string) string {
	t.Helper()
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
		demo, err := buildDemo(root, arch, dir)
		if err != nil {
			return "", err
		}
		return initramfs.Base(arch, root, map[string]string{initramfs.GuestTestPath: bin, "/kmmap/kmmap-demo": demo}, t.Logf)
	}))
	path, err := f.(func() (string, error))()
	if err != nil {
		t.Fatal(err)
	}
	return path
}

func vmTimeout(t *testing.T) time.Duration {
	d := 5 * time.Minute // TCG: boot is seconds, but a loaded CI host is slow
	if s := os.Getenv("KMMAP_VM_TIMEOUT"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			t.Fatalf("KMMAP_VM_TIMEOUT=%q: %v (want a Go duration such as 90s)", s, err)
		}
	}
	return d
}

// readGuestSources reads what the guest side is built from in a subprocess
// (the guest suite, the C demo), so that go test's cache, which tracks the
// files a test opens, reruns the VMs when they change.
func readGuestSources(t *testing.T, root string) {
	t.Helper()
	for _, dir := range []string{"vmtests/guest", "kmod/examples", "kmod/include/uapi"} {
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
	f, err := kernels.NewFetcher(kernels.WithLogf(t.Logf))
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

// prepare builds everything a cell needs to boot: its module (with its
// kernel's compiler), its initramfs, its QEMU setup.
func prepare(t *testing.T, root string, fetcher *kernels.Fetcher, tree *kernels.Tree) *Cell {
	k := tree.Kernel
	m, err := machineFor(k.Arch)
	if err != nil {
		t.Fatalf("kernel %s: %v", k.ID, err)
	}
	mods, err := tree.GuestModules()
	if err != nil {
		t.Fatal(err)
	}
	var tc *toolchain.Root
	if toolchain.NeedsRoot(k) {
		mirror, err := fetcher.Mirror()
		if err != nil {
			t.Fatal(err)
		}
		if tc, err = toolchain.Ensure(context.Background(), fetcher.CacheDir(), k.Suite, k.Compiler, mirror, t.Logf); err != nil {
			t.Fatalf("kernel %s: %v", k.ID, err)
		}
	}
	ko, err := buildModule(context.Background(), tree, filepath.Join(root, "kmod"), fetcher.CacheDir(), tc)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := checkCompiler(ko, tree.Config)
	if err != nil {
		t.Fatalf("kernel %s: %v", k.ID, err)
	}
	t.Logf("%s: module built with the kernel's compiler, %s", k.ID, cc)
	pageSize, err := tree.PageSize()
	if err != nil {
		t.Fatal(err)
	}
	debug, err := memoryDebugArgs(tree.Config)
	if err != nil {
		t.Fatal(err)
	}
	cell := &Cell{ID: k.ID, Tree: tree, Machine: m, Kmod: ko, Modules: mods,
		KernelArgs: append(kernelArgs(m), debug...), Timeout: vmTimeout(t)}
	var why string
	cell.Accel, why = accel.get(k.Arch, tree.Vmlinuz, fetcher.CacheDir())
	t.Logf("%s: QEMU accelerator %s (%s)", k.ID, cell.Accel, why)
	cell.Initramfs = filepath.Join(t.TempDir(), "initramfs.cpio")
	spec := initramfs.CellSpec{Modules: mods, Kmod: ko, TestArgs: []string{fmt.Sprintf("-kmmap.pagesize=%d", pageSize)}}
	if seed := os.Getenv("KMMAP_RANDOM_SEED"); seed != "" {
		spec.TestArgs = append(spec.TestArgs, "-kmmap.seed="+seed)
	}
	if err := initramfs.Cell(cell.Initramfs, guestImage(t, root, k.Arch), spec); err != nil {
		t.Fatal(err)
	}
	return cell
}

func runCell(t *testing.T, root string, fetcher *kernels.Fetcher, tree *kernels.Tree) {
	prep := time.Now()
	cell := prepare(t, root, fetcher, tree)
	prepared := time.Since(prep)

	r := boot(cell)
	con, res := r.con, r.res
	defer func() {
		if t.Failed() {
			t.Logf("console of %s (%s):\n%s", cell.ID, tree.Vmlinuz, strings.Join(con.lines, "\n"))
		}
	}()
	t.Logf("%s: prepared in %.1fs, QEMU (%s) ran %.1fs, %d guest tests", cell.ID, prepared.Seconds(), cell.Accel, r.elapsed.Seconds(), len(res.list))
	for _, p := range cell.problems(r) {
		t.Error(p)
	}
	if len(res.list) == 0 {
		t.FailNow()
	}
	failed := false
	seen := map[string]bool{}
	for _, name := range res.list {
		failed = !replay(t, name, res, con, seen) || failed
	}
	for name, lines := range con.splats {
		if name != "" && !seen[name] {
			t.Errorf("kernel splat during %s (no result from the guest for it):\n%s", name, strings.Join(lines, "\n"))
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
}

// replay reports the guest test full (and its subtests, recursively) as a
// subtest of t, with any kernel splat seen while it ran. It returns whether
// the subtest passed.
func replay(t *testing.T, full string, res *results, con *console, seen map[string]bool) bool {
	tr := res.tests[full]
	if tr == nil {
		tr = &testResult{}
	}
	seen[full] = true
	splats := con.splats[full]
	return t.Run(full[strings.LastIndex(full, "/")+1:], func(t *testing.T) {
		if len(splats) > 0 {
			t.Errorf("kernel splat during %s:\n%s", full, strings.Join(splats, "\n"))
		}
		if testing.Verbose() {
			for _, l := range strings.Split(tr.output.String(), "\n") {
				if strings.Contains(l, "_test.go:") {
					t.Log(strings.TrimSpace(l)) // the guest test's own t.Log lines
				}
			}
		}
		for _, c := range tr.children {
			replay(t, c, res, con, seen)
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
