package console

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConsoleAttributesSplats(t *testing.T) {
	c := kmmapConsole()
	for _, l := range []string{
		"\x1b[0m[    1.0] kmmap: module verification failed: signature and/or required key missing - tainting kernel\r",
		"[    1.1] kmmap-test: start TestA",
		"[    1.2] WARNING: CPU: 0 PID: 1 at kmmap.c:10 kmmap_fault+0x1/0x2 [kmmap]",
		"[    1.2] Modules linked in: kmmap(OE)",
		"[    1.2] Call Trace:",
		"[    1.2]  kmmap_fault+0x1/0x2 [kmmap]",
		"[    1.2] ---[ end trace 0000000000000000 ]---",
		"[    1.25] virtio_console: an ordinary line after the report",
		"[    1.3] kmmap-test: end TestA",
		"[    1.35] kmmap-test: start TestB",
		"[    1.4] kmmap-test: start TestB/sub",
		"[    1.5] BUG: unable to handle page fault for address: 0000",
		"[    1.5] ---[ end trace 0000000000000000 ]---",
		"[    1.6] kmmap-test: end TestB/sub",
		"[    1.65] WARNING: after the subtest, still in TestB",
		"[    1.66] kmmap-test: end TestB",
		"[    1.7] kmmap-test: start TestC",
		"[    1.8] random: crng init done",
		"[    1.9] kmmap-test: end TestC",
		"[    1.91] kmmap-test: start TestD",
		"[    1.92] workqueue: work func kmmap_pin_work [kmmap] enqueued on deprecated workqueue. Use system_{percpu|dfl}_wq instead.",
		"[    1.93] kmmap-test: end TestD",
		"[    1.94] kmmap-test: start TestE",
		"[    1.95] kmmap: nr_pages=0 out of range 1..4096",
		"[    1.96] kmmap-test: end TestE",
		"[    2.0] Kernel panic - not syncing: Fatal exception",
	} {
		c.Add(l)
	}
	c.Finish()
	if got := c.Splats["TestA"]; len(got) != 1 || !strings.Contains(got[0], "WARNING:") ||
		!strings.Contains(got[0], "kmmap_fault+0x1/0x2") || !strings.HasSuffix(got[0], "]---") {
		t.Errorf("TestA splats = %q, want the whole report, from WARNING to its end-of-trace line", got)
	}
	if got := c.Splats["TestB/sub"]; len(got) != 1 || !strings.Contains(got[0], "BUG:") {
		t.Errorf("TestB/sub splats = %q", got)
	}
	if got := c.Splats["TestB"]; len(got) != 1 || !strings.Contains(got[0], "still in TestB") {
		t.Errorf("TestB splats = %q (after its subtest ended)", got)
	}
	if got := c.Splats["TestC"]; len(got) != 0 {
		t.Errorf("TestC splats = %q, want none", got)
	}
	// loglevel=5: a kernel line on the console is a warning or worse, and
	// one naming the module fails its test.
	for test, want := range map[string]string{"TestD": "deprecated workqueue", "TestE": "out of range"} {
		if got := c.Splats[test]; len(got) != 1 || !strings.Contains(got[0], want) || KindOf(got[0]) != "module warning" {
			t.Errorf("%s splats = %q, want the module's warning line", test, got)
		}
	}
	if got := c.Splats[""]; len(got) != 1 || !strings.Contains(got[0], "Kernel panic") {
		t.Errorf("splats outside tests = %q", got)
	}
	if strings.ContainsAny(strings.Join(c.Lines, ""), "\r\x1b") {
		t.Errorf("console lines keep \\r or escapes: %q", c.Lines)
	}
}

// Tests in parallel (testmain.Parallel): a report while two ran is
// charged to both, saying so; one ending does not end the other, and a
// paused test (its end marked before t.Parallel) is not running.
func TestConsoleParallelTests(t *testing.T) {
	c := kmmapConsole()
	for _, l := range []string{
		"[    1.0] kmmap-test: start TestP",
		"[    1.0] kmmap-test: end TestP", // paused: t.Parallel
		"[    1.1] kmmap-test: start TestSeq",
		"[    1.2] WARNING: CPU: 0 PID: 1 at kmmap.c:10 kmmap_fault+0x1/0x2 [kmmap]",
		"[    1.2] ---[ end trace 0000000000000000 ]---",
		"[    1.3] kmmap-test: end TestSeq",
		"[    1.4] kmmap-test: start TestP",
		"[    1.4] kmmap-test: start TestQ",
		"[    1.45] kmmap-test: start TestQ/sub",
		"[    1.5] BUG: unable to handle page fault for address: 0000",
		"[    1.5] ---[ end trace 0000000000000001 ]---",
		"[    1.6] kmmap-test: end TestP",
		"[    1.7] WARNING: CPU: 1 PID: 9 at kmmap.c:20 kmmap_ioctl+0x1/0x2 [kmmap]",
		"[    1.7] ---[ end trace 0000000000000002 ]---",
		"[    1.8] kmmap-test: end TestQ/sub",
		"[    1.9] kmmap-test: end TestQ",
	} {
		c.Add(l)
	}
	c.Finish()
	if got := c.Splats["TestSeq"]; len(got) != 1 || strings.Contains(got[0], "parallel") {
		t.Errorf("TestSeq (alone, TestP paused) splats = %q, want its own report", got)
	}
	for _, name := range []string{"TestP", "TestQ/sub"} {
		if got := c.Splats[name]; len(got) < 1 || !strings.Contains(got[0], "BUG:") || !strings.Contains(got[0], "TestP, TestQ/sub ran in parallel") {
			t.Errorf("%s splats = %q, want the BUG while both ran, saying so", name, got)
		}
	}
	if got := c.Splats["TestQ/sub"]; len(got) != 2 || !strings.Contains(got[1], "kmmap_ioctl") || strings.Contains(got[1], "parallel") {
		t.Errorf("TestQ/sub splats = %q, want the second WARNING, after TestP ended, its own", got)
	}
	if len(c.Splats["TestP"]) != 1 || len(c.Splats[""]) != 0 {
		t.Errorf("TestP: %q, outside tests: %q", c.Splats["TestP"], c.Splats[""])
	}
}

// A report that ends with a line of its own is read whole across the
// markers of tests on other CPUs printed in its middle, and charged to the
// tests running when it began; one with no end line ends at a marker.
func TestConsoleReportAcrossMarkers(t *testing.T) {
	c := kmmapConsole()
	for _, l := range []string{
		"[    1.0] kmmap-test: start TestInfo",
		"[    1.1] kmmap-test: start TestInfo/fault",
		"[    1.2] ==================================================================",
		"[    1.2] BUG: KASAN: slab-use-after-free in kmmap_release+0xef/0x100 [kmmap]",
		"[    1.3] kmmap-test: end TestInfo/fault",
		"[    1.3] kmmap-test: start TestInfo/pfn",
		"[    1.4] Call Trace:",
		"[    1.4]  kmmap_release+0xef/0x100 [kmmap]",
		"[    1.5] ==================================================================",
		"[    1.6] kmmap-test: end TestInfo/pfn",
		"[    1.6] kmmap-test: end TestInfo",
		"[    1.7] kmmap-test: start TestLock",
		"[    1.8] WARNING: possible circular locking dependency detected",
		"[    1.8] kmmap-test: end TestLock",
		"[    1.9] kmmap-test: start TestNext",
		"[    2.0] Call Trace:",
		"[    2.1] kmmap-test: end TestNext",
	} {
		c.Add(l)
	}
	c.Finish()
	got := c.During("TestInfo")
	if len(got) != 1 || KindOf(got[0]) != "KASAN" || !strings.Contains(got[0], "Call Trace:") {
		t.Errorf("reports during TestInfo = %q, want the one KASAN report, whole", got)
	}
	if got := c.Splats["TestInfo/fault"]; len(got) != 1 || len(c.Splats["TestInfo/pfn"]) != 0 {
		t.Errorf("TestInfo/fault: %q, TestInfo/pfn: %q: want the report charged to the subtest running when it began", got, c.Splats["TestInfo/pfn"])
	}
	if got := c.Splats["TestLock"]; len(got) != 1 || KindOf(got[0]) != "lockdep" || strings.Contains(got[0], "TestNext") {
		t.Errorf("TestLock: %q, want the lockdep report ended at the marker", got)
	}
	if got := c.Splats["TestNext"]; len(got) != 1 {
		t.Errorf("TestNext: %q, want its own report", got)
	}
}

// TestSplatFixtures classifies the real reports in testdata/splats (taken
// from the injected bugs on both arches, see TestInjectedBugs) and checks
// that each, printed between a test's markers among ordinary module lines,
// is attributed to that test and to nothing else.
func TestSplatFixtures(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(fixtureDir, "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no fixtures in %s: regenerate them with KMMAP_CAPTURE_SPLATS=1 go test -run TestInjectedBugs ./vmtests", fixtureDir)
	}
	kindsSeen := map[string]map[string]bool{} // kind -> arches
	for _, f := range files {
		base := filepath.Base(f)
		wantSlug, rest, _ := strings.Cut(base, "--")
		arch := "amd64"
		if strings.Contains(rest, "arm64") {
			arch = "arm64"
		}
		t.Run(strings.TrimSuffix(base, ".log"), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			report := strings.TrimRight(string(b), "\n")
			got := KindOf(report)
			if Slug(got) != wantSlug {
				t.Errorf("classified as %q, the fixture is a %s report", got, wantSlug)
			}
			if kindsSeen[wantSlug] == nil {
				kindsSeen[wantSlug] = map[string]bool{}
			}
			kindsSeen[wantSlug][arch] = true
			c := kmmapConsole()
			for _, l := range benignLines {
				c.Add(l)
			}
			c.Add("[   10.000000] kmmap-test: start TestX")
			c.Add("[   10.000001] kmmap: ordinary pr_info from the module")
			for _, l := range strings.Split(report, "\n") {
				c.Add(l)
			}
			c.Add("[   12.000000] kmmap-test: end TestX")
			for _, l := range benignLines {
				c.Add(l)
			}
			c.Finish()
			if len(c.Splats["TestX"]) == 0 || KindOf(c.Splats["TestX"][0]) != got {
				t.Errorf("not attributed to the test it happened in: %v", c.Splats)
			}
			for name, s := range c.Splats {
				if name != "TestX" {
					t.Errorf("report attributed to %q too: %q", name, s)
				}
			}
		})
	}
	// Every kind the issue names, from both arches.
	for _, kind := range []string{"WARN", "BUG", "Oops", "general protection fault", "KFENCE", "KASAN", "KCSAN", "UBSAN", "lockdep", "soft lockup", "hung task", "RCU stall", "panic", "DEBUG_VM"} {
		arches := kindsSeen[Slug(kind)]
		for _, a := range []string{"amd64", "arm64"} {
			if kind == "general protection fault" && a == "arm64" {
				continue // arm64 has no GPF: the same bug is an Oops there
			}
			if !arches[a] {
				t.Errorf("no %s fixture from %s in %s", kind, a, fixtureDir)
			}
		}
	}
}

// fixtureDir holds real kernel reports, one per file named
// <kind>--<bug>--<cell>.log: kmmap's TestInjectedBugs writes them.
const fixtureDir = "testdata/splats"

// benignLines are real console lines of passing runs, module pr_info
// included: none may be read as a report.
var benignLines = []string{
	"[    5.072358] kmmap: loading out-of-tree module taints kernel.",
	"[    1.234567] kmmap: module verification failed: signature and/or required key missing - tainting kernel",
	"[    0.864763] **   NOTICE NOTICE NOTICE NOTICE NOTICE NOTICE NOTICE   **",
	"[    0.864770] ** This system shows unhashed kernel memory addresses   **",
	"[    9.819465] kmmap-test: start TestPartialMunmap/ring",
	"[    9.842545] kmmap-test: end TestPartialMunmap/ring",
	"[   13.616856] reboot: Power down",
	"init: 2026/11/23 00:01:00 Setting console log level to 5...",
	"kmmap-agent: loaded kmmap.ko",
	"kmmap: kmmap.ko is loaded (/dev/kmmap)", // the agent's own output: no printk time
}

// TestKernelsOwnRace: a KCSAN race of unknown origin in the kernel itself
// (a real one, from every boot of 6.12-amd64-kcsan) is kept apart and
// fails nothing; the same report with a frame of the module in it is the
// module's, and fails the test it happened in.
func TestKernelsOwnRace(t *testing.T) {
	files, err := filepath.Glob("testdata/kernel-races/*.log")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures in testdata/kernel-races (%v)", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		report := strings.TrimRight(string(b), "\n")
		ours := strings.Replace(report, "virtqueue_get_buf+0x7/0x10", "kmmap_ring_readable+0x7/0x10 [kmmap]", 1)
		if ours == report {
			t.Fatalf("%s: no frame to replace", f)
		}
		for _, c := range []struct {
			report string
			ours   bool
		}{{report, false}, {ours, true}} {
			con := kmmapConsole()
			con.Add("[   10.000000] kmmap-test: start TestX")
			for _, l := range strings.Split(c.report, "\n") {
				con.Add(l)
			}
			con.Add("[   10.000000] kmmap: a line after the report")
			con.Add("[   12.000000] kmmap-test: end TestX")
			con.Finish()
			got := con.Splats["TestX"]
			switch {
			case c.ours && (len(got) != 2 || KindOf(got[0]) != "KCSAN" || !strings.HasSuffix(got[0], "=====")):
				t.Errorf("%s with a module frame: TestX's reports %q, want the KCSAN report, ended at its rule, then the module's line", f, got)
			case !c.ours && (len(got) != 1 || len(con.KernelRaces) != 1):
				t.Errorf("%s: TestX's reports %q and %d kernel races, want only the module's line and the race kept apart", f, got, len(con.KernelRaces))
			}
		}
	}
}

// kmmapConsole is the console of a run of kmmap.ko.
func kmmapConsole() *Console { return New(func() string { return "kmmap" }, nil) }
