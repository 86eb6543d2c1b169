// Package progress reports the long steps of preparing a cell (a kernel
// downloaded or built, a toolchain root, the guest image, the module) as
// log lines, and draws them: on a terminal as one live line per cell, in
// CI (no terminal, or CI set) as one line per step's start and end.
//
// The lines go through the harness's ordinary log (a test's t.Logf, which
// go test -json streams as it comes), so kmmap report can draw a run's
// progress from the test stream alone. It draws and reports; it does none
// of the steps it reports.
package progress

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// prefix starts every progress line.
const prefix = "kmmap-step:"

// Kinds of event.
const (
	Start    = "start"
	Done     = "done"
	Failed   = "failed"
	Progress = "progress" // a long step's detail: bytes downloaded, a build's stage
)

// Event is one progress line: step of cell started, ended, or moved on.
type Event struct {
	Cell, Step, Kind string
	// Detail is the time a step took (Done, Failed) or how far it is
	// (Progress).
	Detail string
}

// String is the line an event is logged as.
func (e Event) String() string {
	s := fmt.Sprintf("%s %s %q %s", prefix, e.Cell, e.Step, e.Kind)
	if e.Detail != "" {
		s += " " + e.Detail
	}
	return s
}

var lineRe = regexp.MustCompile(prefix + ` (\S+) "([^"]*)" (start|done|failed|progress) ?(.*)$`)

// Parse finds a progress event in a log line.
func Parse(line string) (Event, bool) {
	m := lineRe.FindStringSubmatch(strings.TrimRight(line, "\n"))
	if m == nil {
		return Event{}, false
	}
	return Event{Cell: m[1], Step: m[2], Kind: m[3], Detail: m[4]}, true
}

// Step logs the start of step of cell and returns what logs its end, with
// its time and whether it failed.
func Step(logf func(string, ...any), cell, step string) func(err error) {
	start := time.Now()
	logf("%s", Event{Cell: cell, Step: step, Kind: Start})
	return func(err error) {
		e := Event{Cell: cell, Step: step, Kind: Done, Detail: fmt.Sprintf("%.1fs", time.Since(start).Seconds())}
		if err != nil {
			e.Kind = Failed
		}
		logf("%s", e)
	}
}

// Update logs how far step of cell is.
func Update(logf func(string, ...any), cell, step, detail string) {
	logf("%s", Event{Cell: cell, Step: step, Kind: Progress, Detail: detail})
}

// Live reports whether progress on f is drawn live: f is a terminal and
// CI is not set.
func Live(f *os.File, ci string) bool { return ci == "" && term.IsTerminal(int(f.Fd())) }

// Board draws events on w: live, a line per cell with a step running,
// redrawn in place as events come; else (plain) a line per step's start
// and end, and for a step still running a line at least every Heartbeat
// with its time and latest detail, so that a log never sits silent
// through a download or a build. Print writes other lines above it.
type Board struct {
	mu      sync.Mutex
	w       io.Writer
	live    bool
	order   []string             // cells with a line, in order of arrival
	current map[string]*cellLine // cell -> its line
	drawn   int                  // lines of the board on the terminal
	now     func() time.Time
	stop    chan struct{}
	// plain: the steps running, and when each last had a line; the
	// steps ended (a late progress event does not bring one back)
	running map[[2]string]*plainStep
	ended   map[[2]string]bool
}

type cellLine struct {
	step, detail string
	since        time.Time
}

type plainStep struct {
	detail             string
	since, lastPrinted time.Time
}

// Heartbeat is the longest a plain board stays silent about a step that
// is still running.
const Heartbeat = 30 * time.Second

// NewBoard returns a board drawing on w; a live one redraws every second,
// so that a step's time runs on, and a plain one writes its heartbeat
// lines, until Close.
func NewBoard(w io.Writer, live bool) *Board {
	b := &Board{w: w, live: live, current: map[string]*cellLine{}, now: time.Now, stop: make(chan struct{}),
		running: map[[2]string]*plainStep{}, ended: map[[2]string]bool{}}
	tick := time.Second
	if !live {
		tick = Heartbeat / 6
	}
	stop := b.stop
	go func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				b.mu.Lock()
				if b.live && b.drawn > 0 {
					b.redraw()
				} else if !b.live {
					b.heartbeat()
				}
				b.mu.Unlock()
			case <-stop:
				return
			}
		}
	}()
	return b
}

// heartbeat writes a line for each running step that has had none for
// Heartbeat.
func (b *Board) heartbeat() {
	now := b.now()
	for _, cell := range b.order {
		for key, st := range b.running {
			if key[0] != cell || now.Sub(st.lastPrinted) < Heartbeat {
				continue
			}
			fmt.Fprintf(b.w, "%s: %s running %s%s\n", cell, key[1], now.Sub(st.since).Round(time.Second), suffix(st.detail))
			st.lastPrinted = now
		}
	}
}

// Add draws event e.
func (b *Board) Add(e Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.live {
		b.addPlain(e)
		return
	}
	l := b.current[e.Cell]
	if l == nil {
		l = &cellLine{}
		b.current[e.Cell] = l
		b.order = append(b.order, e.Cell)
	}
	switch e.Kind {
	case Start:
		l.step, l.detail, l.since = e.Step, "", b.now()
	case Progress:
		if l.step != e.Step {
			l.step, l.since = e.Step, b.now()
		}
		l.detail = e.Detail
	case Done, Failed:
		l.step, l.detail = "", ""
	}
	b.redraw()
}

func (b *Board) addPlain(e Event) {
	now, key := b.now(), [2]string{e.Cell, e.Step}
	if b.current[e.Cell] == nil {
		b.current[e.Cell] = &cellLine{}
		b.order = append(b.order, e.Cell)
	}
	st := b.running[key]
	switch e.Kind {
	case Start:
		b.running[key] = &plainStep{since: now, lastPrinted: now}
		delete(b.ended, key)
	case Progress:
		if st == nil && b.ended[key] {
			return // a build's last word, after its step ended
		}
		if st == nil { // a step whose start this board did not see
			st = &plainStep{since: now, lastPrinted: now}
			b.running[key] = st
		}
		st.detail = e.Detail
		return
	case Done, Failed:
		delete(b.running, key)
		b.ended[key] = true
	}
	fmt.Fprintf(b.w, "%s: %s %s%s\n", e.Cell, e.Step, e.Kind, suffix(e.Detail))
}

// Print writes a line that is not progress, above a live board.
func (b *Board) Print(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.clear()
	fmt.Fprint(b.w, s)
	if b.live {
		b.draw()
	}
}

// Close removes a live board from the terminal.
func (b *Board) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stop != nil {
		close(b.stop)
		b.stop = nil
	}
	b.clear()
}

func (b *Board) redraw() {
	b.clear()
	b.draw()
}

// clear erases the board's lines (cursor up, erase line).
func (b *Board) clear() {
	for ; b.drawn > 0; b.drawn-- {
		fmt.Fprint(b.w, "\x1b[1A\x1b[2K")
	}
}

func (b *Board) draw() {
	for _, cell := range b.order {
		l := b.current[cell]
		if l.step == "" {
			continue
		}
		fmt.Fprintf(b.w, "%-18s %s%s (%ds)\n", cell, l.step, suffix(l.detail), int(b.now().Sub(l.since).Seconds()))
		b.drawn++
	}
}

func suffix(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}
