package vmtests

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kmmap/kmmap/internal/console"
	"github.com/kmmap/kmmap/internal/moddir"
	"github.com/kmmap/kmmap/kernels"
)

// edit is one textual change to a file of kmod/.
type edit struct{ file, old, new string }

// bug is a deliberate bug injected into a copy of the module: the harness
// must fail the guest test that triggers it with a report of the right
// kind, on the cells that can see it.
type bug struct {
	name  string
	edits []edit
	test  string            // the guest test (top level) that triggers it
	args  []string          // kernel command line additions that make it show quickly
	kind  map[string]string // arch -> the kind of report expected ("A|B": either)
	// cells is the flavour of built kernel the bug needs: "debug" (KASAN,
	// lockdep, DEBUG_VM, UBSAN), "kcsan" (a data race); "" for the
	// distribution 6.12 cells.
	cells string
	live  bool // run by every `go test`, not only when capturing fixtures
	count int  // runs of the test in the one boot (a race shows now and then)
	// cold: also booted cold, beside the restored run: a snapshot must
	// not change the verdict.
	cold bool
}

// inInfo injects code at the start of KMMAP_IOC_INFO, which TestInfo calls.
func inInfo(code string) []edit {
	return []edit{
		{"main.c", "#include <linux/fs.h>\n", "#include <linux/delay.h>\n#include <linux/fs.h>\n#include <linux/kfence.h>\n#include <linux/sched.h>\n"},
		{"main.c", "\tunsigned long i, n;\n\n\tif (copy_from_user(&info, uarg, sizeof(info)))", "\tunsigned long i, n;\n\n" + code + "\n\tif (copy_from_user(&info, uarg, sizeof(info)))"},
	}
}

func both(kind string) map[string]string { return map[string]string{"amd64": kind, "arm64": kind} }

var bugs = []bug{
	{
		// KFENCE samples an allocation now and then (every 100 ms): when
		// it took this one, it reports the write first, not KASAN (seen
		// on 6.12-arm64-debug booted cold).
		name: "use-after-free-on-close", live: true, cold: true, cells: "debug", test: "TestInfo", kind: both("KASAN|KFENCE"),
		edits: []edit{{"main.c", "\tmutex_destroy(&kf->lock);\n\tkfree(kf);\n", "\tmutex_destroy(&kf->lock);\n\tkfree(kf);\n\tWRITE_ONCE(kf->buf.size, 0);\t/* injected: use after free */\n"}},
	},
	{
		name: "lock-order-inversion", live: true, cells: "debug", test: "TestReadWriteBounds", kind: both("lockdep"),
		edits: []edit{
			{"main.c", "\tssize_t ret;\n\n\tkmmap_get_buf(kf);\n\tret = simple_read_from_buffer(",
				"\tssize_t ret;\n\n\tmutex_lock(&kf->pin.mutex);\n\tmutex_lock(&kf->lock);\n\tmutex_unlock(&kf->lock);\n\tmutex_unlock(&kf->pin.mutex);\n\tkmmap_get_buf(kf);\n\tret = simple_read_from_buffer("},
			{"main.c", "\tssize_t ret;\n\n\tkmmap_get_buf(kf);\n\tif (len && *ppos >= (loff_t)kf->buf.size)",
				"\tssize_t ret;\n\n\tmutex_lock(&kf->lock);\n\tmutex_lock(&kf->pin.mutex);\n\tmutex_unlock(&kf->pin.mutex);\n\tmutex_unlock(&kf->lock);\n\tkmmap_get_buf(kf);\n\tif (len && *ppos >= (loff_t)kf->buf.size)"},
		},
	},
	{
		name: "missing-page-reference", cells: "debug", test: "TestTwoMappingsReadKernelContents", kind: both("DEBUG_VM"),
		edits: []edit{{"buffer.c", "\tget_page(page);\t/* the core mm drops it when the page is unmapped */\n", ""}},
	},
	{
		name: "array-out-of-bounds", cells: "debug", test: "TestInfo", kind: both("UBSAN"),
		edits: inInfo("\t{\n\t\tstatic const u8 tbl[2];\n\n\t\tinfo.backing = tbl[kf->buf.npages];\t/* injected: npages >= 2 */\n\t}"),
	},
	{
		// KASAN would report the access first: read through a helper it
		// does not instrument, so the unmapped page faults.
		name: "freed-page-read", cells: "debug", test: "TestInfo", kind: both("Oops"),
		edits: append(inInfo("\t{\n\t\tunsigned long pg = __get_free_page(GFP_KERNEL);\n\n\t\tfree_page(pg);\n\t\tinfo.backing = kmmap_peek((const u8 *)pg);\t/* injected: DEBUG_PAGEALLOC unmapped it */\n\t}"),
			edit{"main.c", "static long kmmap_ioctl_info(", "static noinline __no_sanitize_address u8 kmmap_peek(const u8 *p)\n{\n\treturn READ_ONCE(*p);\n}\n\nstatic long kmmap_ioctl_info("}),
	},
	{
		// The ring's producers on two CPUs without the lock that
		// serialises them: every record's fields and bytes race.
		name: "producers-unlocked", live: true, cells: "kcsan", count: 3, test: "TestRaceRingConsumer", kind: both("KCSAN"),
		edits: []edit{
			{"ring.c", "\tlockdep_assert_held(&ring->lock);\n\tfor (i = 0; i < count; i++) {", "\tfor (i = 0; i < count; i++) {"},
			{"ring.c", "\t\tspin_lock(&ring->lock);\n\t\tif (!ring->hdr) {\n\t\t\tspin_unlock(&ring->lock);\n\t\t\tbreak;\n\t\t}\n\t\tkmmap_ring_produce_locked(ring, n, source);\n\t\tspin_unlock(&ring->lock);\n",
				"\t\tif (!ring->hdr)\t/* injected: no ring->lock */\n\t\t\tbreak;\n\t\tkmmap_ring_produce_locked(ring, n, source);\n"},
		},
	},
	{
		// poll() reads the ring's head without the lock the producers
		// write it under, on another CPU: one racing read per poll;
		// KCSAN missed it in one boot of five (arm64, during a whole
		// make test), so it only makes fixtures.
		name: "poll-reads-head-unlocked", cells: "kcsan", count: 10, test: "TestRaceRingConsumer", kind: both("KCSAN"),
		edits: []edit{{"ring.c", "\tspin_lock(&ring->lock);\n\tif (ring->hdr)\n\t\treadable = READ_ONCE(ring->hdr->tail) != ring->head;\n\tspin_unlock(&ring->lock);\n",
			"\tif (ring->hdr)\t/* injected: no ring->lock */\n\t\treadable = READ_ONCE(ring->hdr->tail) != ring->head;\n"}},
	},
	{name: "warn", test: "TestInfo", kind: both("WARN"), edits: inInfo("\tWARN_ON_ONCE(kf->buf.npages);")},
	{name: "null-dereference", test: "TestInfo", kind: both("Oops"), edits: inInfo("\tWRITE_ONCE(*(int *)(kf->buf.npages >> 60), 1);")},
	{
		name: "non-canonical-address", test: "TestInfo", kind: map[string]string{"amd64": "general protection fault", "arm64": "Oops"},
		edits: inInfo("\tWRITE_ONCE(*(int *)(0xdead000000000000UL + (kf->buf.npages >> 60)), 1);"),
	},
	{name: "bug-on", test: "TestInfo", kind: both("BUG"), edits: inInfo("\tBUG_ON(kf->buf.npages);")},
	{
		name: "kfence-out-of-bounds", test: "TestInfo", kind: both("KFENCE"),
		edits: inInfo("\tfor (i = 0; i < 5000; i++) {\n\t\tu8 *p = kmalloc(32, GFP_KERNEL);\n\n\t\tif (p && is_kfence_address(p)) {\n\t\t\tinfo.backing = READ_ONCE(p[32]);\n\t\t\tkfree(p);\n\t\t\tbreak;\n\t\t}\n\t\tkfree(p);\n\t\tmsleep(1);\n\t}"),
	},
	{
		name: "soft-lockup", test: "TestInfo", kind: both("soft lockup"), args: []string{"watchdog_thresh=1"},
		edits: inInfo("\tpreempt_disable();\n\tmdelay(6000);\n\tpreempt_enable();"),
	},
	{
		name: "hung-task", test: "TestInfo", kind: both("hung task"), args: []string{"sysctl.kernel.hung_task_timeout_secs=2"},
		edits: inInfo("\tschedule_timeout_uninterruptible(8 * HZ);"),
	},
	{
		name: "rcu-stall", test: "TestInfo", kind: both("RCU stall"), args: []string{"rcupdate.rcu_cpu_stall_timeout=3"},
		edits: inInfo("\tpreempt_disable();\n\tmdelay(8000);\n\tpreempt_enable();"),
	},
	{name: "panic", test: "TestInfo", kind: both("panic"), edits: inInfo("\tif (kf->buf.npages)\n\t\tpanic(\"kmmap: injected panic\");")},
}

// CaptureEnv, set to 1, runs every injected bug and writes each report to
// internal/console/testdata/splats as a fixture of the classifier: a
// variable of kmmap's own test, not of the harness's configuration.
const CaptureEnv = "KMMAP_CAPTURE_SPLATS"

// TestInjectedBugs builds the module with each deliberate bug and runs the
// guest test that triggers it: that test, and only it, must get a report
// of the bug's kind. The use-after-free and the lock-order inversion run
// on the debug cells, the data race on the KCSAN cells, in every run;
// KMMAP_CAPTURE_SPLATS=1 runs them all and refreshes the fixtures. The
// use-after-free runs restored from the cell's snapshot and booted cold,
// and must give the same verdict both ways.
func TestInjectedBugs(t *testing.T) {
	bootsVMs(t)
	// Needs the kernels built from source: after the tests that need
	// none, so that on a cold cache they run while these build.
	t.Parallel()
	h := kmmapHarness(t)
	root, lock := h.Root(), h.Lock()
	capture := os.Getenv(CaptureEnv) == "1"
	ran := 0
	for _, b := range bugs {
		if !b.live && !capture {
			continue
		}
		for _, k := range lock.Kernels {
			if !selected(t, k.ID) || !b.runsOn(k) {
				continue
			}
			ran++
			t.Run(b.name+"/"+k.ID, func(t *testing.T) {
				t.Parallel()
				runBug(t, root, k, b, capture, h.Config().Cold)
			})
			if b.cold && !h.Config().Cold {
				t.Run(b.name+"/"+k.ID+"-cold", func(t *testing.T) {
					t.Parallel()
					runBug(t, root, k, b, false, true)
				})
			}
		}
	}
	if ran == 0 {
		t.Skipf("KMMAP_CELLS=%q selects no debug or KCSAN cell to inject bugs into", os.Getenv("KMMAP_CELLS"))
	}
}

// runsOn reports whether b is injected into cell k: a built kernel of the
// flavour it needs, or the 4K distribution 6.12 cells.
func (b bug) runsOn(k kernels.Kernel) bool {
	if b.cells != "" {
		return k.FromSource() && k.Flavour == b.cells
	}
	return !k.FromSource() && k.Series == "6.12" && !strings.HasSuffix(k.ID, "-16k")
}

// editedModule copies kmod/ to a temporary directory, applies edits to
// the copy and returns it.
func editedModule(t *testing.T, root, name string, edits []edit) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "kmod")
	if err := moddir.Copy(src, filepath.Join(root, "kmod")); err != nil {
		t.Fatal(err)
	}
	for _, e := range edits {
		p := filepath.Join(src, e.file)
		body, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(body), e.old) {
			t.Fatalf("%s: kmod/%s no longer has the text it changes:\n%s", name, e.file, e.old)
		}
		if err := os.WriteFile(p, []byte(strings.Replace(string(body), e.old, e.new, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return src
}

// bootEdited boots cell k with kmod/ changed by edits, running only the
// guest test test, and keeps the run's results under resultsID; it says
// how the guest started.
func bootEdited(t *testing.T, root string, k kernels.Kernel, name string, edits []edit, test string, count int, args []string, resultsID string, opts ...Option) (run, BootMode) {
	t.Helper()
	src := editedModule(t, root, name, edits)
	h := kmmapHarness(t, opts...)
	f, err := h.Fetcher(t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := f.Fetch(t.Context(), k)
	if err != nil {
		t.Fatal(err)
	}
	cell, err := h.Prepare(t.Context(), f, tree, CellOptions{Logf: t.Logf, ModuleDir: src, KernelArgs: args, ResultsID: resultsID})
	if err != nil {
		t.Fatal(err)
	}
	r := boot(t.Context(), cell, SuiteJob{Run: "^" + test + "$", Count: count})
	if err := cell.writeResults(r); err != nil {
		t.Error(err)
	}
	for _, n := range r.notes {
		t.Logf("%s: %s", cell.ID, n)
	}
	if !slices.Contains(r.res.list, test) {
		// Say why: a guest that never ran its test proves nothing.
		t.Fatalf("the guest suite did not run %s (it listed %d tests); results in %s:\n%s", test, len(r.res.list), cell.Results, strings.Join(cell.problems(r), "\n"))
	}
	return r, r.mode
}

// reportsDuring returns the kernel reports during test and its subtests,
// in the order they began.
func reportsDuring(r run, test string) []string { return r.con.During(test) }

// runBug boots cell k with bug b, cold or (snapshots on) restored, and
// checks the verdict.
func runBug(t *testing.T, root string, k kernels.Kernel, b bug, capture, cold bool) {
	var opts []Option
	id := k.ID + "-bug-" + b.name
	if cold {
		cfg := kmmapHarness(t).Config()
		cfg.Cold = true
		opts, id = []Option{WithConfig(cfg)}, id+"-cold"
	}
	r, mode := bootEdited(t, root, k, "bug "+b.name, b.edits, b.test, b.count, b.args, id, opts...)
	if restored := mode != Cold; restored == cold {
		t.Errorf("the guest started %s, want %s", mode, map[bool]string{true: "cold", false: "from a snapshot"}[cold])
	}
	for name, s := range r.con.Splats {
		if !strings.HasPrefix(name, b.test) {
			t.Errorf("a report during %q, not %s:\n%s", name, b.test, strings.Join(s, "\n"))
		}
	}
	reports := reportsDuring(r, b.test)
	if len(reports) == 0 {
		t.Fatalf("no kernel report during %s; its output:\n%s\nconsole:\n%s", b.test, r.res.test(b.test).output.String(), r.con.Tail(40))
	}
	want := b.kind[k.Arch]
	got := console.KindOf(reports[0])
	if !slices.Contains(strings.Split(want, "|"), got) {
		t.Errorf("the first report during %s is a %q report, want %q:\n%s", b.test, got, want, reports[0])
	}
	if capture {
		writeFixture(t, got, b.name, k.ID, reports[0])
	}
}

// fixtureDir holds real kernel reports, one per file named
// <kind>--<bug>--<cell>.log, from the injected bugs: the fixtures of
// package console's classifier.
const fixtureDir = "../internal/console/testdata/splats"

func writeFixture(t *testing.T, kind, bug, cell, report string) {
	name := fmt.Sprintf("%s--%s--%s.log", console.Slug(kind), bug, cell)
	if err := os.MkdirAll(fixtureDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(fixtureDir, name), []byte(report+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}
