package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const stream = `{"Action":"start","Package":"p"}
{"Action":"run","Package":"p","Test":"TestGuest"}
{"Action":"output","Package":"p","Test":"TestGuest","Output":"    suite.go:60: kmmap-cells: 6.1-amd64 5.10-arm64\n"}
{"Action":"output","Package":"p","Test":"TestGuest/6.1-amd64/TestA","Output":"all fine\n"}
{"Action":"attr","Package":"p","Test":"TestGuest/6.1-amd64/TestA","Key":"guest_elapsed","Value":"1.25s"}
{"Action":"output","Package":"p","Test":"TestGuest/6.1-amd64/TestA","Output":"    --- PASS: TestGuest/6.1-amd64/TestA (0.00s)\n"}
{"Action":"pass","Package":"p","Test":"TestGuest/6.1-amd64/TestA","Elapsed":0.1}
{"Action":"pass","Package":"p","Test":"TestGuest/6.1-amd64","Elapsed":4.5}
{"Action":"output","Package":"p","Test":"TestGuest/5.10-arm64/TestB/fault","Output":"    kernel splat during TestB/fault\n"}
{"Action":"output","Package":"p","Test":"TestGuest/5.10-arm64/TestB/fault","Output":"    rerun: go test ./vmtests -count=1 -v -run '^TestGuest$/^5\\.10-arm64$/^TestB$/^fault$'\n"}
{"Action":"fail","Package":"p","Test":"TestGuest/5.10-arm64/TestB/fault","Elapsed":0.2}
{"Action":"output","Package":"p","Test":"TestGuest/5.10-arm64/TestB","Output":"--- FAIL: TestB\n"}
{"Action":"fail","Package":"p","Test":"TestGuest/5.10-arm64/TestB","Elapsed":0.2}
{"Action":"skip","Package":"p","Test":"TestGuest/5.10-arm64/TestC","Elapsed":0}
{"Action":"fail","Package":"p","Test":"TestGuest/5.10-arm64","Elapsed":7.25}
{"Action":"fail","Package":"p","Test":"TestGuest","Elapsed":8}
{"Action":"fail","Package":"p","Elapsed":9}
`

func TestReport(t *testing.T) {
	md := filepath.Join(t.TempDir(), "summary.md")
	var out bytes.Buffer
	if st := report([]string{"-markdown", md}, strings.NewReader(stream), &out); st != 1 {
		t.Errorf("status %d, want 1 (a test failed)", st)
	}
	got := out.String()
	for _, want := range []string{
		"PASS 6.1-amd64             4.5s  1 passed, 0 failed, 0 skipped",
		"FAIL 5.10-arm64            7.2s  0 passed, 2 failed, 1 skipped",
		"rerun: go test ./vmtests", // the failing leaf's output, with its reproducer
		"FAIL p 9.0s",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "all fine") || strings.Contains(got, "--- FAIL: TestB") {
		t.Errorf("output shows what passed, or a parent whose subtest already said why:\n%s", got)
	}
	b, _ := os.ReadFile(md)
	if !strings.Contains(string(b), "| 5.10-arm64 | ❌ fail | 7.2s | 0 | 2 | 1 |") || !strings.Contains(string(b), "| 6.1-amd64 | ✅ pass | 4.5s | 1 | 0 | 0 |") {
		t.Errorf("markdown table:\n%s", b)
	}
	// -v shows everything.
	out.Reset()
	report([]string{"-v"}, strings.NewReader(stream), &out)
	if !strings.Contains(out.String(), "all fine") {
		t.Errorf("-v hides passing output:\n%s", out.String())
	}
	// A replayed guest test's --- line has the guest's time, not the
	// replay's.
	if !strings.Contains(out.String(), "--- PASS: TestGuest/6.1-amd64/TestA (1.25s in the guest)\n") {
		t.Errorf("-v: the guest test's line lacks its time in the guest:\n%s", out.String())
	}
}

func TestReportNoEvents(t *testing.T) {
	var out bytes.Buffer
	if st := report(nil, strings.NewReader("FAIL\tgithub.com/x [setup failed]\n"), &out); st != 2 || !strings.Contains(out.String(), "no test events") {
		t.Errorf("status %d, output %q", st, out.String())
	}
}

// TestReportUnfinished: a test binary that dies (here -timeout's panic)
// leaves a cell with no result; the report must still name it and show
// the panic and the goroutines, not only "FAIL <package>".
func TestReportUnfinished(t *testing.T) {
	const died = `{"Action":"run","Package":"p","Test":"TestGuest"}
{"Action":"output","Package":"p","Test":"TestGuest","Output":"    suite.go:60: kmmap-cells: 6.1-amd64 5.10-amd64 6.12-amd64-kcsan\n"}
{"Action":"run","Package":"p","Test":"TestGuest/6.1-amd64"}
{"Action":"pass","Package":"p","Test":"TestGuest/6.1-amd64","Elapsed":4.5}
{"Action":"run","Package":"p","Test":"TestGuest/5.10-amd64"}
{"Action":"output","Package":"p","Test":"TestGuest/5.10-amd64","Output":"    prepared in 3s\n"}
{"Action":"output","Package":"p","Output":"panic: test timed out after 30m0s\n"}
{"Action":"output","Package":"p","Output":"goroutine 7 [chan receive]:\nvmtests.boot(...)\n"}
{"Action":"fail","Package":"p","Elapsed":1800}
`
	md := filepath.Join(t.TempDir(), "summary.md")
	var out bytes.Buffer
	if st := report([]string{"-markdown", md}, strings.NewReader(died), &out); st != 1 {
		t.Errorf("status %d, want 1", st)
	}
	for _, want := range []string{"panic: test timed out", "goroutine 7 [chan receive]", "prepared in 3s", "DNF  5.10-amd64", "PASS 6.1-amd64", "FAIL p 1800.0s",
		"DNF  6.12-amd64-kcsan"} { // never started: its kernel was still building
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if b, _ := os.ReadFile(md); !strings.Contains(string(b), "| 5.10-amd64 | ❓ did not finish |") {
		t.Errorf("markdown table lacks the unfinished cell:\n%s", b)
	}
}

// The cells' long steps come through the test stream as log lines: report
// prints a line per step's start and end without a terminal, none with
// -progress=off, and never the details of a step in progress.
func TestReportProgress(t *testing.T) {
	steps := `{"Action":"run","Package":"p","Test":"TestGuest/6.1-amd64"}
{"Action":"output","Package":"p","Test":"TestGuest/6.1-amd64","Output":"    suite.go:90: kmmap-step: 6.1-amd64 \"kernel\" start\n"}
{"Action":"output","Package":"p","Test":"TestGuest/6.1-amd64","Output":"    fetch.go:9: kmmap-step: 6.1-amd64 \"kernel\" progress downloading linux-image: 3/70 MB, 5.0 MB/s\n"}
{"Action":"output","Package":"p","Test":"TestGuest/6.1-amd64","Output":"    suite.go:93: kmmap-step: 6.1-amd64 \"kernel\" done 61.2s\n"}
{"Action":"pass","Package":"p","Test":"TestGuest/6.1-amd64","Elapsed":70}
{"Action":"pass","Package":"p","Elapsed":71}
`
	var out bytes.Buffer
	if st := report(nil, strings.NewReader(steps), &out); st != 0 {
		t.Errorf("status %d", st)
	}
	got := out.String()
	for _, want := range []string{"6.1-amd64: kernel start\n", "6.1-amd64: kernel done: 61.2s\n", "PASS 6.1-amd64"} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "downloading") || strings.Contains(got, "\x1b") {
		t.Errorf("report without a terminal drew a step's progress:\n%q", got)
	}
	out.Reset()
	report([]string{"-progress=off"}, strings.NewReader(steps), &out)
	if strings.Contains(out.String(), "kernel start") || !strings.Contains(out.String(), "PASS 6.1-amd64") {
		t.Errorf("-progress=off:\n%s", out.String())
	}
}

// A module's own host test (vmtests.Run in TestHello) gets its line per
// cell, as kmmap's TestGuest does: the reusable workflow's summary.
func TestReportOwnModule(t *testing.T) {
	s := strings.NewReplacer("TestGuest", "TestHello").Replace(stream)
	var out bytes.Buffer
	report(nil, strings.NewReader(s), &out)
	for _, want := range []string{"PASS 6.1-amd64             4.5s  1 passed", "FAIL 5.10-arm64            7.2s  0 passed, 2 failed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
