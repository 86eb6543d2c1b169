package vmtests

import (
	"os"
	"strings"
	"testing"

	"github.com/kmmap/kmmap/internal/kmmap"
)

// regression undoes one fix of kmod/ in a copy of the module: the guest
// test written for that fix must then fail (a test failure or a kernel
// report during it), on the cell that can show it. Each is proof that the
// test can fail, and a mutant the suite must keep killing.
type regression struct {
	name  string
	why   string // what the fix it undoes is for
	edits []edit
	test  string // the top-level guest test that must fail
	cell  string // the cell it runs on
	count int    // runs of the test in the one boot (a race shows now and then)
}

// regressionCell has init_on_alloc=0 (kernels.lock): where a missing
// __GFP_ZERO shows.
const regressionCell = kmmap.DefaultMutantCell

var regressions = []regression{
	{
		name: "setup-frees-first", test: "TestSetupFailureKeepsFile", cell: regressionCell,
		why: "a failed SETUP left the file without a buffer, and the ring ioctls dereferenced NULL",
		edits: []edit{{"main.c", "\tret = kmmap_buf_alloc(&nb, s.backing, s.nr_pages);\n\tif (ret)\n\t\treturn ret;\n\tmutex_lock(&kf->lock);\n",
			"\tmutex_lock(&kf->lock);\n\tif (!atomic_read(&kf->maps) && !atomic_read(&kf->users)) {\n\t\tkmmap_ring_stop(&kf->ring);\n\t\tkmmap_buf_free(&kf->buf);\n\t}\n" +
				"\tret = kmmap_buf_alloc(&nb, s.backing, s.nr_pages);\n\tif (ret) {\n\t\tmutex_unlock(&kf->lock);\n\t\treturn ret;\n\t}\n"}},
	},
	{
		name: "pfns-for-everyone", test: "TestPFNsOnlyForAdmin", cell: regressionCell,
		why:   "INFO handed physical page numbers to any user",
		edits: []edit{{"main.c", "bool show_pfn = file_ns_capable(file, &init_user_ns, CAP_SYS_ADMIN);", "bool show_pfn = true;"}},
	},
	{
		name: "pins-not-limited", test: "TestPinMemlock", cell: regressionCell,
		why:   "long-term pins escaped RLIMIT_MEMLOCK",
		edits: []edit{{"pin.c", "if (pinned > limit && !capable(CAP_IPC_LOCK)) {", "if (pinned > limit && !capable(CAP_IPC_LOCK) && 0) {"}},
	},
	{
		name: "partial-pin-kept", test: "TestPinPartialFault", cell: regressionCell,
		why:   "a pin that failed part way must release the pages it got",
		edits: []edit{{"pin.c", "\t\tif (got > 0)\n\t\t\tunpin_user_pages(pages, got);\n", ""}},
	},
	{
		name: "buffer-not-zeroed", test: "TestFreshBuffersZero", cell: regressionCell,
		why:   "init_on_alloc=1 hid buffers that were not zeroed",
		edits: []edit{{"buffer.c", "KMMAP_GFP_USER_ACCOUNT | __GFP_ZERO | \\", "KMMAP_GFP_USER_ACCOUNT | \\"}},
	},
	{
		name: "buffer-not-charged", test: "TestMemcgLimit", cell: regressionCell,
		why:   "a memory cgroup limit did not hold for the buffers",
		edits: []edit{{"compat.h", "#define KMMAP_GFP_USER_ACCOUNT\t__GFP_ACCOUNT", "#define KMMAP_GFP_USER_ACCOUNT\t0"}},
	},
	{
		name: "seek-end-inode-size", test: "TestSeek", cell: regressionCell,
		why:   "SEEK_END was relative to the device inode's size, 0",
		edits: []edit{{"main.c", "fixed_size_llseek(file, offset, whence, kf->buf.size)", "default_llseek(file, offset, whence)"}},
	},
	{
		name: "read-only-map-refused", test: "TestReadOnlyOpen", cell: regressionCell,
		why:   "MAP_SHARED|PROT_READ of an O_RDONLY file failed with EINVAL",
		edits: []edit{{"buffer.c", "if (!(vma->vm_flags & VM_MAYSHARE))", "if (!(vma->vm_flags & VM_SHARED))"}},
	},
	{
		name: "flags-ignored", test: "TestFlagsMustBeZero", cell: regressionCell,
		why:   "unknown flags must be refused so that the ABI can grow",
		edits: []edit{{"main.c", "\tif (s.flags || s.reserved)\n\t\treturn -EINVAL;\n", ""}},
	},
	{
		// On a debug cell: PREEMPT_NONE there, so nothing else lets the
		// other thread in (on 6.1-amd64, PREEMPT_DYNAMIC voluntary, it ran
		// 0 times in one run and 44 in 112 ms in another).
		name: "fill-never-reschedules", test: "TestLargeWork", cell: "6.12-amd64-debug",
		why:   "a 16 MiB FILL or CHECKSUM held the CPU from every other thread",
		edits: []edit{{"main.c", "\t\t\th = kmmap_fnv1a(h, p, n);\n\t\tcond_resched();\n", "\t\t\th = kmmap_fnv1a(h, p, n);\n"}},
	},
	{
		name: "insert-error-path-frees-the-failed-page", test: "TestAllocFailures", cell: "6.12-amd64-debug",
		why:   "an error path is only right if something makes it run: fault injection on the debug cells does",
		edits: []edit{{"buffer.c", "\twhile (i--)\n\t\t__free_page(b->pages[i]);\n", "\tdo {\n\t\t__free_page(b->pages[i]);\n\t} while (i--);\n"}},
	},
	{
		// Two CPUs: poll() read the ring header SETUP was freeing. KCSAN
		// saw it in none of 10 runs once, in CI with every cell running.
		name: "ring-stop-unlocked", test: "TestRacePollSetup", cell: "6.12-amd64-kcsan", count: 20,
		why: "kmmap_ring_stop cleared the ring without ring->lock, so poll() could read a header being freed",
		edits: []edit{{"ring.c", "\tcancel_delayed_work_sync(&ring->tick);\n\tspin_lock(&ring->lock);\n\tring->hdr = NULL;\n\tring->rec = NULL;\n\tspin_unlock(&ring->lock);\n",
			"\tcancel_delayed_work_sync(&ring->tick);\n\tring->hdr = NULL;\n\tring->rec = NULL;\n"}},
	},
	{
		// Two CPUs, no race detector: a Debian kernel as shipped, SMP.
		// Failed in 6 of 7 boots of one run each (once missed while other
		// edited cells ran beside it): five runs in the boot. On arm64:
		// 6.12-amd64 runs its vCPUs in one TCG thread (oneTCGThread), and
		// taking turns they caught it in 3 of 5 runs booted cold, 0 of 5
		// restored, 0 of 5 in CI; 6.12-arm64's run at once.
		name: "ring-producers-unserialised", test: "TestRaceRingConsumer", cell: "6.12-arm64", count: 5,
		why: "producers on two CPUs must not fill the same slot or publish the same head",
		edits: []edit{{"ring.c", "\t\tspin_lock(&ring->lock);\n\t\tif (!ring->hdr) {\n\t\t\tspin_unlock(&ring->lock);\n\t\t\tbreak;\n\t\t}\n\t\tkmmap_ring_produce_locked(ring, n, source);\n\t\tspin_unlock(&ring->lock);\n",
			"\t\tif (!ring->hdr)\n\t\t\tbreak;\n\t\tkmmap_ring_produce_locked(ring, n, source);\n"}},
	},
	{
		name: "deprecated-workqueue", test: "TestPinned", cell: "7.3-amd64",
		why:   "7.3 warns about work queued on system_unbound_wq, naming the module",
		edits: []edit{{"pin.c", "queue_work(kmmap_unbound_wq, &pin->work);", "queue_work(system_unbound_wq, &pin->work);"}},
	},
}

// TestRegressionsCaught builds the module with each fix undone and runs
// the guest test written for it on its cell: that test must fail.
func TestRegressionsCaught(t *testing.T) {
	bootsVMs(t)
	// Needs the kernels built from source: after the tests that need
	// none, so that on a cold cache they run while these build.
	t.Parallel()
	root, lock := loadLock(t)
	ran := 0
	for _, reg := range regressions {
		k, err := lock.Kernel(reg.cell)
		if err != nil {
			t.Fatalf("regression %s: %v", reg.name, err)
		}
		if !selected(t, k.ID) {
			continue
		}
		ran++
		t.Run(reg.name+"/"+k.ID, func(t *testing.T) {
			t.Parallel()
			r, _ := bootEdited(t, root, k, "regression "+reg.name, reg.edits, reg.test, reg.count, nil, k.ID+"-regression-"+reg.name)
			reports := reportsDuring(r, reg.test)
			tr := r.res.test(reg.test)
			out := tr.output.String()
			for _, c := range tr.children {
				out += r.res.test(c).output.String()
			}
			if tr.action != "fail" && len(reports) == 0 {
				t.Fatalf("with %q undone (%s), %s did not fail (%q):\n%s", reg.name, reg.why, reg.test, tr.action, out)
			}
			t.Logf("%s failed as it must (%s):\n%s%s", reg.test, reg.why, out, strings.Join(reports, "\n"))
		})
	}
	if ran == 0 {
		t.Skipf("KMMAP_CELLS=%q selects no cell the regressions run on", os.Getenv("KMMAP_CELLS"))
	}
}
