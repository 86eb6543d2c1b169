// Package mutation runs a module's mutants (package mutant) against its
// guest suite through the harness (package vmtests): each mutant built
// for a cell's kernel, its litmus tests checked, the suite run on it, and
// a verdict. It owns the verdicts and the time limit's base (Baseline);
// the boot and the judging of a run are the harness's (vmtests.Judge).
package mutation

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/kmmap/kmmap/internal/mutant"
	"github.com/kmmap/kmmap/kernels"
	"github.com/kmmap/kmmap/vmtests"
)

// Verdicts of a mutant on a cell.
const (
	Killed       = "killed"
	Survived     = "survived"
	NotCompiling = "not compiling"
)

// Result is a mutant's run on one cell.
type Result struct {
	Mutant  mutant.Mutant
	Cell    string
	Verdict string
	// KilledBy names what failed: guest tests, kernel reports, the memory
	// model, or what went wrong with the boot (a hang, a module that
	// would not unload).
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

// Run builds mutant m for tree's kernel and runs the whole guest suite
// of h on it, timeout at most. err is the harness failing, not the
// module.
func Run(ctx context.Context, h *vmtests.Harness, f *kernels.Fetcher, tree *kernels.Tree, m mutant.Mutant, timeout time.Duration) (res Result, err error) {
	res = Result{Mutant: m, Cell: tree.Kernel.ID}
	start := time.Now()
	defer func() { res.Elapsed = time.Since(start) }()
	dir, err := os.MkdirTemp("", "kmmap-mutant-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	src, err := m.ApplyTo(h.Root(), h.Module().Dir, dir)
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
	cell, err := h.Prepare(ctx, f, tree, vmtests.CellOptions{ModuleDir: src, ResultsID: "mutants/" + m.Name + "/" + tree.Kernel.ID,
		BootWhileBuilding: true})
	if err != nil {
		return res, err
	}
	o, err := vmtests.Judge(ctx, cell, vmtests.SuiteJob{FailFast: true, Timeout: timeout})
	var be *vmtests.BuildError
	if errors.As(err, &be) {
		res.Verdict, res.Detail = NotCompiling, be.Error()
		return res, nil
	} else if err != nil {
		return res, err
	}
	res.KilledBy, res.Detail, res.OnlyTimedOut = o.Failures, o.Detail, o.OnlyTimedOut
	res.Verdict = Survived
	if len(res.KilledBy) > 0 {
		res.Verdict = Killed
	}
	return res, nil
}

// litmusFailures lists the module's litmus tests (vmtests.LitmusDir) that
// the memory model fails as its C is in src, with the text of every
// failure.
func litmusFailures(ctx context.Context, h *vmtests.Harness, f *kernels.Fetcher, src string) (what []string, detail string, err error) {
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

// Baseline runs the unmutated module's suite on tree's cell: it must
// pass before a mutant's failure means anything. It returns how long the
// run took booted cold - the most a mutant's run takes when it is not
// broken (a snapshot that does not restore boots cold), the base of its
// time limit.
func Baseline(ctx context.Context, h *vmtests.Harness, f *kernels.Fetcher, tree *kernels.Tree) (time.Duration, error) {
	if what, detail, err := litmusFailures(ctx, h, f, h.Module().Dir); err != nil {
		return 0, err
	} else if len(what) > 0 {
		return 0, fmt.Errorf("the unmutated module fails its litmus tests, so no mutant can be judged:\n%s", detail)
	}
	cell, err := h.Prepare(ctx, f, tree, vmtests.CellOptions{ResultsID: "mutants/baseline/" + tree.Kernel.ID,
		Cold: "the mutants' time limit is measured on a cold boot"})
	if err != nil {
		return 0, err
	}
	o, err := vmtests.Judge(ctx, cell, vmtests.SuiteJob{})
	if err != nil {
		return 0, err
	}
	if len(o.Failures) > 0 {
		return 0, fmt.Errorf("%s: the unmutated module fails the suite (%s), so no mutant can be judged:\n%s", tree.Kernel.ID, strings.Join(o.Failures, ", "), o.Detail)
	}
	return o.Elapsed, nil
}
