package vmtests

import (
	"strings"

	"github.com/kmmap/kmmap/initramfs/event"
)

// testResult is one guest test's outcome as test2json reported it.
type testResult struct {
	action string // pass, fail, skip, or "" (started but never finished, or never started)
	output strings.Builder
}

// results gathers the events of one guest run.
type results struct {
	tests     map[string]*testResult // by top-level test name
	list      []string               // every test the suite has, from the agent
	agentErrs []string               // what the agent said went wrong
	kmodErr   string
	exitErr   string
	unloadErr string
	unloaded  bool
	exited    bool
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
	case event.AgentError:
		r.agentErrs = append(r.agentErrs, e.Error)
		return
	case event.AgentExit:
		r.exited, r.exitErr = true, e.Error
		return
	case event.AgentUnload:
		r.unloaded, r.unloadErr = true, e.Error
		return
	default:
		return
	}
	if e.Test == "" {
		return
	}
	top, sub, _ := strings.Cut(e.Test, "/")
	tr := r.tests[top]
	if tr == nil {
		tr = &testResult{}
		r.tests[top] = tr
	}
	switch e.Action {
	case "output":
		tr.output.WriteString(e.Output)
	case "pass", "fail", "skip":
		if sub == "" {
			tr.action = e.Action
		}
	}
}
