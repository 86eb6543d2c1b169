package vmtests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// commandCell prepares cell id of harness h with options o, its results
// in o.ResultsID (default: named after the test).
func commandCell(t *testing.T, h *Harness, id string, o CellOptions) *Cell {
	t.Helper()
	f, err := h.Fetcher(t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := h.Tree(t.Context(), id, f)
	if err != nil {
		t.Fatal(err)
	}
	o.Logf = t.Logf
	if o.ResultsID == "" {
		o.ResultsID = id + "-command-" + strings.ReplaceAll(t.Name(), "/", "-")
	}
	c, err := h.Prepare(t.Context(), f, tree, o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// commandCellID is the cell the command tests boot: 6.1-amd64 unless the
// configuration chooses others, then the first amd64 one it chooses.
func commandCellID(t *testing.T, h *Harness) string {
	t.Helper()
	for _, k := range h.Lock().Kernels {
		if k.Arch == "amd64" && !k.FromSource() && h.Config().selects(k.ID) && (len(h.Config().Cells) > 0 || k.ID == "6.1-amd64") {
			return k.ID
		}
	}
	t.Skipf("KMMAP_CELLS=%s selects no amd64 distribution cell to run commands in", strings.Join(h.Config().Cells, ","))
	return ""
}

// A command that makes the kernel warn fails its run with the report and
// ExitSplat, although the command itself exits 0; the report is
// attributed to the command.
func TestCommandKernelWarning(t *testing.T) {
	bootsVMs(t)
	t.Parallel()
	h := kmmapHarness(t)
	id := commandCellID(t, h)
	w, err := New(Module{Dir: "testdata/warn"}, kmmapGuest(h.Root()), WithConfig(h.Config()))
	if err != nil {
		t.Fatal(err)
	}
	c := commandCell(t, w, id, CellOptions{})
	var out strings.Builder
	r := RunCommand(t.Context(), c, CommandJob{Argv: []string{"sh", "-c", "echo 1 > /sys/module/warnme/parameters/warn; echo done"}, Stdout: &out})
	if r.Status != 0 || !strings.Contains(out.String(), "done") {
		t.Errorf("the command: status %d, output %q; want 0 and done", r.Status, out.String())
	}
	if r.ExitCode() != ExitSplat || !strings.Contains(r.Kinds, "WARN") || !strings.Contains(strings.Join(r.Reports, "\n"), "asked for from userland") {
		t.Errorf("exit %d, kinds %q, reports:\n%s\nwant %d with the WARNING", r.ExitCode(), r.Kinds, strings.Join(r.Reports, "\n"), ExitSplat)
	}
}

// A command that panics the kernel ends the run at once with ExitPanic.
func TestCommandPanic(t *testing.T) {
	bootsVMs(t)
	t.Parallel()
	h := kmmapHarness(t)
	c := commandCell(t, h, commandCellID(t, h), CellOptions{NoModule: true})
	r := RunCommand(t.Context(), c, CommandJob{Argv: []string{"sh", "-c", "echo c > /proc/sysrq-trigger"}})
	if r.ExitCode() != ExitPanic || r.Elapsed > 2*time.Minute || !strings.Contains(r.Tail, "Kernel panic") {
		t.Errorf("exit %d after %s, tail:\n%s\nwant %d at once, with the panic", r.ExitCode(), r.Elapsed, r.Tail, ExitPanic)
	}
}

// A command that outlives its timeout is stopped there, with ExitTimeout
// and the console's last lines.
func TestCommandTimeout(t *testing.T) {
	bootsVMs(t)
	t.Parallel() // waits for its timeout: it runs beside the matrix
	h := kmmapHarness(t)
	c := commandCell(t, h, commandCellID(t, h), CellOptions{NoModule: true})
	r := RunCommand(t.Context(), c, CommandJob{Argv: []string{"sleep", "600"}, Timeout: 15 * time.Second})
	if r.ExitCode() != ExitTimeout || r.Elapsed > time.Minute || r.Tail == "" {
		t.Errorf("exit %d after %s, tail %q; want %d at the 15 s timeout", r.ExitCode(), r.Elapsed, r.Tail, ExitTimeout)
	}
}

// hungCell is the command cell with the guest suite whose TestHangs never
// ends (testdata/hang), configured by set.
func hungCell(t *testing.T, set func(*Config)) *Cell {
	t.Helper()
	h := kmmapHarness(t)
	cfg := h.Config()
	set(&cfg)
	hung, err := New(Module{Dir: "testdata/warn"}, Guest{Dir: h.Root(), Package: "./vmtests/testdata/hang", Tags: []string{"hang_guest"}}, WithConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	return commandCell(t, hung, commandCellID(t, h), CellOptions{})
}

// A guest that makes no progress - here a guest test that hangs, silent -
// is ended by the watchdog after KMMAP_STALL, long before the VM's
// timeout, with QEMU's state, the last console lines and every goroutine.
func TestStalledGuestWatchdog(t *testing.T) {
	bootsVMs(t)
	t.Parallel() // waits for its watchdog: it runs beside the matrix
	c := hungCell(t, func(cfg *Config) { cfg.VMTimeout, cfg.Stall = 2*time.Minute, 6*time.Second })
	r := boot(t.Context(), c, SuiteJob{})
	if r.elapsed > time.Minute {
		t.Errorf("the stalled guest ran %s: the watchdog (6 s) did not end it", r.elapsed)
	}
	wantProblem(t, c.problems(r), "no console output or guest event for", "KMMAP_STALL=6s", `"status": "running"`, "kmmap-test: start TestHangs", "goroutine ", "vmtests.bootVM")
}

// A guest test that hangs ends with Go's own timeout panic, which names it
// and dumps every goroutine, a little before the VM's timeout: the guest
// suite gets -test.timeout under it.
func TestHungGuestTestNamed(t *testing.T) {
	bootsVMs(t)
	t.Parallel() // waits for its timeout: it runs beside the matrix
	// The guest suite's timeout is 22.5 s of the guest's 45.
	c := hungCell(t, func(cfg *Config) { cfg.VMTimeout = 45 * time.Second })
	r := boot(t.Context(), c, SuiteJob{})
	dump := r.con.From("panic: test timed out")
	if dump == "" || !strings.Contains(dump, "TestHangs") || r.elapsed >= c.Timeout {
		t.Errorf("after %s (VM timeout %s), the console has no Go timeout panic naming TestHangs:\n%s", r.elapsed, c.Timeout, r.con.Tail(30))
	}
	if tr := r.res.tests["TestHangs"]; tr == nil || tr.action != "" {
		t.Errorf("TestHangs ended as %+v, want started and never finished", tr)
	}
	if tr := r.res.tests["TestFine"]; tr == nil || tr.action != "pass" {
		t.Errorf("TestFine: %+v, want pass", tr)
	}
}

// terminal is a shell's stdout as a test sees it: everything written.
type terminal struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *terminal) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *terminal) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// await waits until the terminal shows want, the shell ends (done) or ctx
// is done, failing the test in the last two cases.
func (w *terminal) await(ctx context.Context, t *testing.T, want string, done <-chan error) {
	t.Helper()
	for !strings.Contains(w.String(), want) {
		select {
		case err := <-done:
			t.Fatalf("the shell ended (%v) before it showed %q:\n%s", err, want, w.String())
		case <-ctx.Done():
			t.Fatalf("the shell did not show %q in time:\n%s", want, w.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// The shell (make shell, kmmap shell) boots through the same boot as every
// job: a command typed on its terminal runs in the guest with the module
// loaded, its output comes back, and leaving the shell powers the guest
// off, ending Shell without an error, its console kept with the results.
func TestShell(t *testing.T) {
	bootsVMs(t)
	t.Parallel()
	h := kmmapHarness(t)
	c := commandCell(t, h, commandCellID(t, h), CellOptions{})
	stdin, typed, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	defer typed.Close()
	term := &terminal{}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Shell(ctx, c, ShellJob{Stdin: stdin, Stdout: term, Dir: "/kmmap"}) }()
	term.await(ctx, t, "leave the shell", done)
	// The sum is the guest shell's: the terminal's echo has the sum's
	// text. One line at a time, as a person types: the shell's line
	// editor drops what came in before it showed its prompt again.
	fmt.Fprintf(typed, "echo shell-$((6*7)) in $(pwd) with $(cat /sys/module/kmmap/initstate)\r")
	term.await(ctx, t, "shell-42", done)
	fmt.Fprintf(typed, "exit\r")
	if err := <-done; err != nil {
		t.Errorf("Shell: %v\n%s", err, term.String())
	}
	out := term.String()
	if !strings.Contains(out, "shell-42 in /kmmap with live") {
		t.Errorf("the command typed did not run in the guest's shell in /kmmap with the module loaded; the terminal:\n%s", out)
	}
	if b, err := os.ReadFile(filepath.Join(c.Results, "console.log")); err != nil || !strings.Contains(string(b), "shell-42") {
		t.Errorf("the shell's console is not kept in %s (%v)", c.Results, err)
	}
}
