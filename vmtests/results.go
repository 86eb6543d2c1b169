package vmtests

import (
	"strings"

	"github.com/kmmap/kmmap/initramfs/event"
)

// testResult is one guest test's outcome as test2json reported it.
type testResult struct {
	action   string // pass, fail, skip, or "" (started but never finished, or never started)
	output   strings.Builder
	children []string // full names of its subtests, in the order they ran
	// elapsed is how long it ran in the guest, in seconds (summed over
	// -test.count runs).
	elapsed float64
}

// results gathers the events of one guest run.
type results struct {
	tests     map[string]*testResult // by full test name (Test/sub)
	list      []string               // every test the suite has, from the agent
	agentErrs []string               // what the agent said went wrong
	kmodErr   string
	sections  map[string]string // the module's section addresses in the guest
	exitErr   string
	unloadErr string
	unloaded  bool
	// reloaded: the module loaded and unloaded again after the tests
	// (reloadErr: or why not).
	reloaded  bool
	reloadErr string
	exited    bool
	// coverage is the gcov counters the guest sent (path -> .gcda);
	// coverageErr why it could not.
	coverage    map[string][]byte
	coverageErr string
	// ran is whether a command (a CommandJob) ended; runStatus its
	// exit status, runErr why it could not start or how it was killed.
	ran       bool
	runStatus int
	runErr    string
}

func newResults() *results { return &results{tests: map[string]*testResult{}} }

func (r *results) handle(e event.Event) {
	switch e.Agent {
	case "":
	case event.AgentList:
		r.list = e.Tests
		return
	case event.AgentKmod:
		r.kmodErr = e.Error
		return
	case event.AgentModule:
		r.sections = e.Sections
		return
	case event.AgentFresh:
		if e.Error != "" {
			r.agentErrs = append(r.agentErrs, "making the guest fresh (clock, random pool): "+e.Error)
		}
	case event.AgentError:
		r.agentErrs = append(r.agentErrs, e.Error)
		return
	case event.AgentExit:
		r.exited, r.exitErr = true, e.Error
		return
	case event.AgentUnload:
		r.unloaded, r.unloadErr = true, e.Error
		return
	case event.AgentReload:
		r.reloaded, r.reloadErr = true, e.Error
		return
	case event.AgentCoverage:
		r.coverage, r.coverageErr = e.Files, e.Error
		return
	case event.AgentRun:
		r.ran, r.runStatus, r.runErr = true, e.Status, e.Error
		return
	default:
		return
	}
	if e.Test == "" {
		return
	}
	tr := r.test(e.Test)
	switch e.Action {
	case "output":
		tr.output.WriteString(e.Output)
	case "pass", "fail", "skip":
		if tr.action != "fail" { // run several times (-test.count), one failure fails it
			tr.action = e.Action
		}
		tr.elapsed += e.Elapsed
	}
}

// test returns the result of the test named full, creating it (and its
// parents) in the order first seen.
func (r *results) test(full string) *testResult {
	if tr, ok := r.tests[full]; ok {
		return tr
	}
	tr := &testResult{}
	r.tests[full] = tr
	if i := strings.LastIndex(full, "/"); i > 0 {
		parent := r.test(full[:i])
		parent.children = append(parent.children, full)
	}
	return tr
}

// childFailed reports whether any subtest of tr failed.
func (r *results) childFailed(tr *testResult) bool {
	for _, c := range tr.children {
		if r.tests[c].action == "fail" {
			return true
		}
	}
	return false
}
