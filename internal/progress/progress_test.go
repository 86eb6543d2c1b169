package progress

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
)

func TestParseRoundTrip(t *testing.T) {
	for _, e := range []Event{
		{Cell: "6.1-amd64", Step: "kernel", Kind: Start},
		{Cell: "6.12-amd64-debug", Step: "kernel", Kind: Progress, Detail: "building: CC mm/slub.o"},
		{Cell: "7.3-arm64", Step: "guest image", Kind: Done, Detail: "12.3s"},
	} {
		got, ok := Parse("    prepare.go:12: " + e.String() + "\n")
		if !ok || got != e {
			t.Errorf("Parse(%q) = %+v, %v", e.String(), got, ok)
		}
	}
	if _, ok := Parse("6.1-amd64: QEMU accelerator tcg"); ok {
		t.Errorf("an ordinary log line parsed as progress")
	}
}

// Without a terminal (CI): a line per step's start and end, nothing
// redrawn, no progress details.
func TestBoardPlain(t *testing.T) {
	var b bytes.Buffer
	board := NewBoard(&b, false)
	logf := func(format string, args ...any) {
		line := strings.TrimSpace(strings.ReplaceAll(format, "%s", args[0].(Event).String()))
		if e, ok := Parse(line); ok {
			board.Add(e)
		}
	}
	done := Step(logf, "6.1-amd64", "kernel")
	Update(logf, "6.1-amd64", "kernel", "downloading linux-image: 3/70 MB, 5.0 MB/s")
	done(nil)
	board.Print("PASS 6.1-amd64\n")
	board.Close()
	got := b.String()
	if strings.ContainsAny(got, "\r\x1b") || strings.Contains(got, "downloading") {
		t.Errorf("plain board drew a live line:\n%q", got)
	}
	for _, want := range []string{"6.1-amd64: kernel start\n", "6.1-amd64: kernel done: ", "PASS 6.1-amd64\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("plain board output lacks %q:\n%s", want, got)
		}
	}
}

// On a terminal: one line per running cell, with its step's detail and
// time, redrawn in place; other lines print above it; Close takes it
// away. Live says so for a pseudo-terminal and not with CI set or on a
// file.
func TestBoardLiveOnTerminal(t *testing.T) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	defer ptmx.Close()
	defer tty.Close()
	if !Live(tty, "") || Live(tty, "true") {
		t.Errorf("Live(pty) = %v, with CI set %v; want true, false", Live(tty, ""), Live(tty, "true"))
	}
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	if Live(f, "") {
		t.Errorf("Live(a file) = true")
	}
	read := make(chan string)
	go func() {
		b, _ := io.ReadAll(ptmx)
		read <- string(b)
	}()
	board := NewBoard(tty, true)
	board.Add(Event{Cell: "6.1-amd64", Step: "kernel", Kind: Start})
	board.Add(Event{Cell: "7.3-arm64", Step: "module", Kind: Start})
	board.Add(Event{Cell: "6.1-amd64", Step: "kernel", Kind: Progress, Detail: "downloading linux-image: 3/70 MB, 5.0 MB/s"})
	time.Sleep(1100 * time.Millisecond) // one redraw by the clock
	board.Print("PASS 5.10-amd64\n")
	board.Add(Event{Cell: "6.1-amd64", Step: "kernel", Kind: Done, Detail: "2.0s"})
	board.Close()
	tty.Close()
	got := <-read
	for _, want := range []string{"6.1-amd64          kernel: downloading linux-image: 3/70 MB, 5.0 MB/s (", "7.3-arm64          module (", "\x1b[1A\x1b[2K", "PASS 5.10-amd64"} {
		if !strings.Contains(got, want) {
			t.Errorf("the terminal shows no %q in:\n%q", want, got)
		}
	}
}

// Without a terminal, a step that runs on without events still has a line
// every Heartbeat, with its time and latest detail; a finished one has
// none.
func TestBoardPlainHeartbeat(t *testing.T) {
	var b bytes.Buffer
	board := NewBoard(&b, false)
	defer board.Close()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	board.mu.Lock()
	board.now = func() time.Time { return now }
	board.mu.Unlock()
	board.Add(Event{Cell: "6.12-amd64-debug", Step: "kernel", Kind: Start})
	board.Add(Event{Cell: "6.12-amd64-debug", Step: "kernel", Kind: Progress, Detail: "building, 40s: CC mm/slub.o"})
	board.Add(Event{Cell: "6.1-amd64", Step: "toolchain root", Kind: Start})
	beat := func(after time.Duration) string {
		board.mu.Lock()
		defer board.mu.Unlock()
		b.Reset()
		now = now.Add(after)
		board.heartbeat()
		return b.String()
	}
	if got := beat(Heartbeat / 2); got != "" {
		t.Errorf("a line before the heartbeat was due:\n%s", got)
	}
	got := beat(Heartbeat / 2)
	for _, want := range []string{"6.12-amd64-debug: kernel running 30s: building, 40s: CC mm/slub.o\n", "6.1-amd64: toolchain root running 30s\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("heartbeat lacks %q:\n%s", want, got)
		}
	}
	board.Add(Event{Cell: "6.1-amd64", Step: "toolchain root", Kind: Done, Detail: "85.0s"})
	// a late progress event of the ended step brings no line back
	board.Add(Event{Cell: "6.1-amd64", Step: "toolchain root", Kind: Progress, Detail: "unpacking"})
	if got := beat(Heartbeat); strings.Contains(got, "toolchain root") || !strings.Contains(got, "kernel running 1m0s") {
		t.Errorf("after the root was done, heartbeat:\n%s", got)
	}
}
