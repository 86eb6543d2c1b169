package vmtests

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kmmap/kmmap/internal/console"
	"github.com/kmmap/kmmap/internal/mutant"
	"github.com/kmmap/kmmap/kernels"
)

// applyMutant copies module (a directory in root) to the same place under
// dir and applies m, whose paths are relative to root, to the copy; it
// returns the mutated module's directory.
func applyMutant(m mutant.Mutant, root, module, dir string) (string, error) {
	rel, err := filepath.Rel(root, module)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("mutant %s: the module %s is not in %s, which the mutants' paths are relative to", m.Name, module, root)
	}
	src := filepath.Join(dir, rel)
	if err := copySources(src, module); err != nil {
		return "", err
	}
	return src, m.Apply(dir)
}

// Verdicts of a mutant on a cell.
const (
	Killed       = "killed"
	Survived     = "survived"
	NotCompiling = "not compiling"
)

// MutantResult is a mutant's run on one cell.
type MutantResult struct {
	Mutant  mutant.Mutant
	Cell    string
	Verdict string
	// KilledBy names what failed: guest tests, kernel reports, or what
	// went wrong with the boot (a hang, a module that would not unload).
	KilledBy []string
	Detail   string // the first failure's text
	Elapsed  time.Duration
	// OnlyTimedOut: the run was ended by its time limit or the watchdog,
	// with no kernel report and no guest test failed - a verdict that
	// load alone can give (kmmap mutate runs such a mutant once more).
	OnlyTimedOut bool
	// Rerun says why the verdict is that of a second run ("" for none).
	Rerun string
}

// RunMutant builds the mutant for tree's kernel and runs the whole guest
// suite on it, timeout at most. err is the harness failing, not the
// module.
func RunMutant(ctx context.Context, h *Harness, f *kernels.Fetcher, tree *kernels.Tree, m mutant.Mutant, timeout time.Duration) (res MutantResult, err error) {
	res = MutantResult{Mutant: m, Cell: tree.Kernel.ID}
	start := time.Now()
	defer func() { res.Elapsed = time.Since(start) }()
	dir, err := os.MkdirTemp("", "kmmap-mutant-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	src, err := applyMutant(m, h.Root(), h.module.Dir, dir)
	if err != nil {
		return res, err
	}
	// What the memory model proves needs no boot: a barrier no CPU here
	// reorders around (an x86 host keeps stores in order) is still wrong.
	if what, detail, err := litmusFailures(ctx, h, f, src); err != nil {
		return res, err
	} else if len(what) > 0 {
		res.Verdict, res.KilledBy, res.Detail = Killed, what, detail
		return res, nil
	}
	// The guest boots while the mutant builds; one that does not build
	// makes the agent give up at once.
	cell, err := h.Prepare(ctx, f, tree, CellOptions{ModuleDir: src, ResultsID: "mutants/" + m.Name + "/" + tree.Kernel.ID,
		BootWhileBuilding: true})
	if err != nil {
		return res, err
	}
	r := boot(ctx, cell, SuiteJob{FailFast: true, Timeout: timeout})
	var be *BuildError
	if _, err := cell.Module(); errors.As(err, &be) {
		res.Verdict, res.Detail = NotCompiling, be.Error()
		return res, nil
	} else if err != nil {
		return res, err
	}
	if err := cell.writeResults(r); err != nil {
		return res, err
	}
	res.KilledBy, res.Detail = cell.failures(r)
	res.OnlyTimedOut = cell.onlyTimedOut(r)
	res.Verdict = Survived
	if len(res.KilledBy) > 0 {
		res.Verdict = Killed
	}
	return res, nil
}

// litmusFailures lists the module's litmus tests (LitmusDir) that the
// memory model fails as its C is in src, with the text of every failure.
func litmusFailures(ctx context.Context, h *Harness, f *kernels.Fetcher, src string) (what []string, detail string, err error) {
	results, err := h.CheckLitmus(ctx, f, src, func(string, ...any) {})
	if err != nil {
		return nil, "", err
	}
	var details []string
	for _, r := range results {
		if why := r.Failed(); why != "" {
			what = append(what, "memory model: "+r.Test.Name+".litmus")
			details = append(details, why)
		}
	}
	return what, strings.Join(details, "\n"), nil
}

// onlyTimedOut reports whether run r ended by its time limit or the
// watchdog with nothing else wrong: no kernel report, no guest test that
// finished failing.
func (c *Cell) onlyTimedOut(r run) bool {
	if r.stalled == "" && !r.timedOut() {
		return false
	}
	if len(r.con.Splats) > 0 {
		return false
	}
	for _, tr := range r.res.tests {
		if tr.action == "fail" {
			return false
		}
	}
	return true
}

// Baseline runs the unmutated module's suite on tree's cell: it must
// pass before a mutant's failure means anything. It returns how long the
// run took booted cold - the most a mutant's run takes when it is not
// broken (a snapshot that does not restore boots cold), the base of its
// time limit.
func Baseline(ctx context.Context, h *Harness, f *kernels.Fetcher, tree *kernels.Tree) (time.Duration, error) {
	if what, detail, err := litmusFailures(ctx, h, f, h.module.Dir); err != nil {
		return 0, err
	} else if len(what) > 0 {
		return 0, fmt.Errorf("the unmutated module fails its litmus tests, so no mutant can be judged:\n%s", detail)
	}
	cell, err := h.Prepare(ctx, f, tree, CellOptions{ResultsID: "mutants/baseline/" + tree.Kernel.ID,
		Cold: "the mutants' time limit is measured on a cold boot"})
	if err != nil {
		return 0, err
	}
	r := boot(ctx, cell, SuiteJob{})
	if err := cell.writeResults(r); err != nil {
		return 0, err
	}
	if what, detail := cell.failures(r); len(what) > 0 {
		return 0, fmt.Errorf("%s: the unmutated module fails the suite (%s), so no mutant can be judged:\n%s", tree.Kernel.ID, strings.Join(what, ", "), detail)
	}
	return r.elapsed, nil
}

// failures lists what of run r did not pass: kernel reports (by kind and
// test), guest tests that failed or never finished, the boot's problems;
// detail is the text of the first.
func (c *Cell) failures(r run) (what []string, detail string) {
	add := func(w, d string) {
		if !slices.Contains(what, w) {
			what = append(what, w)
		}
		if detail == "" {
			detail = d
		}
	}
	for _, name := range slices.Sorted(maps.Keys(r.con.Splats)) {
		s := r.con.Splats[name]
		if name == "" {
			continue // problems() has it
		}
		add(fmt.Sprintf("%s (%s)", topLevel(name), console.KindsOf(s)), strings.Join(s, "\n"))
	}
	var unrun []string
	for _, name := range r.res.list {
		tr := r.res.tests[name]
		switch {
		case tr == nil:
			unrun = append(unrun, name) // after a crash, or -test.failfast
		case tr.action == "":
			add(name+" (did not finish)", tr.output.String())
		case tr.action == "fail":
			out := tr.output.String()
			for _, ch := range tr.children {
				if r.res.tests[ch].action == "fail" {
					out += r.res.tests[ch].output.String()
				}
			}
			add(name, out)
		}
	}
	// What the boot as a whole says (a panic, a hang) after the reports
	// and tests that name the cause.
	for _, p := range c.problems(r) {
		first, _, _ := strings.Cut(p, ";")
		add("boot: "+firstLine(first), p)
	}
	if len(what) == 0 {
		for _, name := range unrun {
			add(name+" (never ran)", "")
		}
	}
	if r.res.reloadErr != "" {
		add("load again after unload", r.res.reloadErr)
	}
	if r.res.unloadErr != "" {
		add("unload (a leaked reference?)", r.res.unloadErr)
	}
	if len(what) == 0 && r.res.exitErr != "" {
		add("guest test binary: "+r.res.exitErr, "")
	}
	return what, detail
}

func topLevel(test string) string {
	top, _, _ := strings.Cut(test, "/")
	return top
}
