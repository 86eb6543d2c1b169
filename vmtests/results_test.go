package vmtests

import (
	"strings"
	"testing"

	"github.com/kmmap/kmmap/initramfs/event"
	"github.com/kmmap/kmmap/internal/console"
)

func TestResultsReplay(t *testing.T) {
	r := newResults()
	for _, e := range []event.Event{
		{Agent: event.AgentKmod},
		{Agent: event.AgentList, Tests: []string{"TestA", "TestB", "TestC"}},
		{Action: "run", Test: "TestA"},
		{Action: "output", Test: "TestA", Output: "a\n"},
		{Action: "pass", Test: "TestA"},
		{Action: "run", Test: "TestB"},
		{Action: "run", Test: "TestB/x"},
		{Action: "fail", Test: "TestB/x"},
		{Action: "output", Test: "TestB/x", Output: "boom\n"},
		{Action: "fail", Test: "TestB"},
		{Action: "run", Test: "TestC"},
		{Agent: event.AgentExit, Error: "exit status 2"},
		{Agent: event.AgentReload, Error: "loading it again after it was removed: file exists"},
	} {
		r.handle(e)
	}
	if r.tests["TestA"].action != "pass" || r.tests["TestB"].action != "fail" {
		t.Errorf("actions: A=%q B=%q", r.tests["TestA"].action, r.tests["TestB"].action)
	}
	if r.tests["TestC"].action != "" {
		t.Errorf("TestC never finished but has action %q", r.tests["TestC"].action)
	}
	if !strings.Contains(r.tests["TestB/x"].output.String(), "boom") {
		t.Errorf("subtest output not kept with its subtest")
	}
	if b := r.tests["TestB"]; len(b.children) != 1 || b.children[0] != "TestB/x" || !r.childFailed(b) {
		t.Errorf("TestB children = %v", b.children)
	}
	if !r.reloaded || !strings.Contains(r.reloadErr, "file exists") {
		t.Errorf("reload: %v %q", r.reloaded, r.reloadErr)
	}
	if !r.exited || r.exitErr == "" || r.unloaded {
		t.Errorf("agent notes: %+v", r)
	}
}

// kmmapConsole is the console of a run of kmmap.ko.
func kmmapConsole() *console.Console { return console.New(func() string { return "kmmap" }, nil) }
