package vmtests

import (
	"strings"
	"testing"
	"time"
)

// A mutant's run is judged by what failed in it: the kernel's reports
// and failed tests first, a test that never ran only when nothing else
// explains the failure.
func TestMutantVerdict(t *testing.T) {
	cell := &Cell{ID: "6.12-amd64"}
	r := run{con: kmmapConsole(), res: newResults()}
	r.res.list = []string{"TestA", "TestB", "TestC"}
	r.res.test("TestA").action = "pass"
	r.res.unloaded, r.res.exited = true, true
	if what, _ := cell.failures(r); len(what) != 2 || what[0] != "TestB (never ran)" || what[1] != "TestC (never ran)" {
		t.Errorf("TestB and TestC never ran: failures %q, want both", what)
	}
	r.res.test("TestB").action = "fail"
	r.res.test("TestB").output.WriteString("want 1, got 2")
	r.con.Splats["TestB/sub"] = []string{"BUG: KASAN: use-after-free in kmmap_fault"}
	what, detail := cell.failures(r)
	if len(what) != 2 || what[0] != "TestB (KASAN)" || what[1] != "TestB" || !strings.Contains(detail, "KASAN") {
		t.Errorf("failures %q (detail %q), want the KASAN report during TestB, then TestB", what, detail)
	}
	if cell.onlyTimedOut(r) {
		t.Error("a run with a failed test and a KASAN report counts as only timed out")
	}
	// Ended by the time limit or the watchdog with nothing else wrong:
	// only timed out (kmmap mutate runs it again); a report or a failed
	// test beside the timeout is a verdict of its own.
	hung := run{con: kmmapConsole(), res: newResults(), elapsed: time.Minute, timeout: time.Minute}
	hung.res.list = []string{"TestA", "TestB"}
	hung.res.test("TestA").action = "pass"
	hung.res.test("TestB")
	limited := &Cell{ID: "6.12-amd64"}
	if !limited.onlyTimedOut(hung) {
		t.Error("a run that hit its time limit with TestB unfinished does not count as only timed out")
	}
	if hung.elapsed, hung.stalled = time.Second, "no console output"; !limited.onlyTimedOut(hung) {
		t.Error("a run the watchdog ended does not count as only timed out")
	}
	hung.con.Splats["TestB"] = []string{"INFO: task guest.test blocked for more than 2 seconds"}
	if limited.onlyTimedOut(hung) {
		t.Error("a run that hung with a hung-task report counts as only timed out")
	}
	hung.con.Splats, hung.stalled = map[string][]string{}, ""
	if limited.onlyTimedOut(hung) {
		t.Error("a run that ended within its limit counts as timed out")
	}
	passed := run{con: kmmapConsole(), res: newResults()}
	passed.res.list = []string{"TestA"}
	passed.res.test("TestA").action = "pass"
	passed.res.unloaded, passed.res.exited = true, true
	if what, _ := cell.failures(passed); len(what) != 0 {
		t.Errorf("a clean run: failures %q", what)
	}
}
