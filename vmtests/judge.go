package vmtests

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/kmmap/kmmap/internal/console"
)

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

// Outcome is a suite job's run on a cell, judged whole.
type Outcome struct {
	// Failures names what did not pass: kernel reports (by kind and
	// test), guest tests that failed or never finished, what went wrong
	// with the boot (a hang, a module that would not unload); none for a
	// clean pass.
	Failures []string
	Detail   string // the first failure's text
	// OnlyTimedOut: the run was ended by its time limit or the watchdog,
	// with no kernel report and no guest test failed - a verdict that
	// load alone can give.
	OnlyTimedOut bool
	Elapsed      time.Duration
	Mode         BootMode
}

// Judge boots c with suite job j, keeps the run's results in c.Results
// and judges it. err is the harness failing (the module's build
// included: Cell.Module says), not the module failing its suite.
func Judge(ctx context.Context, c *Cell, j SuiteJob) (Outcome, error) {
	r := boot(ctx, c, j)
	if _, err := c.Module(); err != nil && c.kmod != nil {
		return Outcome{Elapsed: r.elapsed, Mode: r.mode}, err
	}
	if err := c.writeResults(r); err != nil {
		return Outcome{Elapsed: r.elapsed, Mode: r.mode}, err
	}
	o := Outcome{OnlyTimedOut: c.onlyTimedOut(r), Elapsed: r.elapsed, Mode: r.mode}
	o.Failures, o.Detail = c.failures(r)
	return o, nil
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
