package main

import (
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/kmmap/kmmap/internal/progress"
)

// stepLog is the log of a command that prepares cells: their long steps
// drawn on a progress board on standard error (live on a terminal without
// CI set, else a line per step's start and end), other lines printed
// above it, or dropped when quiet.
type stepLog struct {
	mu     sync.Mutex
	board  *progress.Board
	quiet  bool
	closed bool
}

func newStepLog(quiet bool) *stepLog {
	return &stepLog{board: progress.NewBoard(os.Stderr, progress.Live(os.Stderr, os.Getenv("CI"))), quiet: quiet}
}

// logf is the harness's log function.
func (s *stepLog) logf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	s.mu.Lock()
	defer s.mu.Unlock()
	ev, isStep := progress.Parse(line)
	switch {
	case s.closed:
		if !isStep && !s.quiet {
			fmt.Fprintln(os.Stderr, line)
		}
	case isStep:
		s.board.Add(ev)
	case !s.quiet:
		s.board.Print(strings.TrimRight(line, "\n") + "\n")
	}
}

// close takes the board off the terminal: what follows (a command's
// output, a shell) has it to itself.
func (s *stepLog) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.board.Close()
		s.closed = true
	}
}
