package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/kmmap/kmmap/internal/progress"
	"github.com/kmmap/kmmap/vmtests"
)

// testEvent is one line of `go test -json` (cmd/test2json).
type testEvent struct {
	Time       time.Time
	Action     string
	Package    string
	ImportPath string
	Test       string
	Elapsed    float64
	Output     string
	Key, Value string // an "attr" event's (testing.T.Attr)
}

// resultLine matches go test's "--- PASS: name (0.00s)" lines.
var resultLine = regexp.MustCompile(`^(\s*--- (?:PASS|FAIL|SKIP): (\S+)) \(\d+\.\d+s\)`)

// withGuestTime puts the guest's time of a replayed guest test in its
// result line (the host's replay takes no time).
func withGuestTime(line string, guest map[string]string) string {
	m := resultLine.FindStringSubmatchIndex(line)
	if m == nil {
		return line
	}
	d, ok := guest[line[m[4]:m[5]]]
	if !ok {
		return line
	}
	return line[:m[3]] + " (" + d + " in the guest)" + line[m[1]:]
}

// cellRow is one cell of the matrix: TestGuest/<cell>.
type cellRow struct {
	name, pkg               string
	result                  string
	elapsed                 float64
	passed, failed, skipped int
}

// report reads `go test -json` and prints one line per cell of the
// matrix (TestGuest/<cell>) with its result and time, a line per package,
// and the output of what failed (of everything, with -v). With -markdown
// it also writes the cells as a Markdown table (for a CI job summary) to
// the file it names. It returns the exit status: 1 if anything failed.
func report(args []string, in io.Reader, out io.Writer) int {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	verbose := fs.Bool("v", false, "print every test's output, not only the failures'")
	markdown := fs.String("markdown", "", "also append the cells as a Markdown table to this file (e.g. $GITHUB_STEP_SUMMARY)")
	mode := fs.String("progress", "auto", "how to show the cells' long steps: live (a line per cell, redrawn), plain (a line per step's start and end), off; auto: live on a terminal without CI set, else plain")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	board, steps, err := newBoard(*mode, out)
	if err != nil {
		fmt.Fprintf(out, "kmmap report: %v\n", err)
		return 2
	}
	defer board.Close()
	out = boardWriter{board}
	outputs := map[string]*strings.Builder{} // package + test -> output
	failedKids := map[string]bool{}          // package + test -> a subtest failed
	var cells []*cellRow
	byCell := map[string]*cellRow{}
	row := func(name, pkg string) *cellRow {
		c := byCell[name]
		if c == nil {
			c = &cellRow{name: name, pkg: pkg}
			byCell[name] = c
			cells = append(cells, c)
		}
		return c
	}
	guest := map[string]string{} // test -> its time in the guest
	suites := map[string]bool{}  // package + top-level test -> it runs cells (logged CellsLine)
	isSuite := func(pkg, test string) bool { return test == "TestGuest" || suites[pkg+"\x00"+test] }
	status, events := 0, 0
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for sc.Scan() {
		var e testEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			fmt.Fprintln(out, sc.Text()) // go's own messages, e.g. a build error
			continue
		}
		events++
		key := e.Package + "\x00" + e.Test
		switch e.Action {
		case "build-output":
			fmt.Fprint(out, e.Output)
		case "build-fail":
			status = 1
		case "attr":
			if e.Key == vmtests.GuestElapsedAttr {
				guest[e.Test] = e.Value
			}
		case "output":
			e.Output = withGuestTime(e.Output, guest)
			if _, ids, ok := strings.Cut(e.Output, vmtests.CellsLine); ok && e.Test != "" && !strings.Contains(e.Test, "/") {
				suites[key] = true // kmmap's TestGuest, or a module's own vmtests.Run
				for _, id := range strings.Fields(ids) {
					row(id, e.Package)
				}
			}
			if ev, ok := progress.Parse(e.Output); ok && steps {
				board.Add(ev)
			}
			if *verbose {
				fmt.Fprint(out, e.Output)
			}
			b := outputs[key]
			if b == nil {
				b = &strings.Builder{}
				outputs[key] = b
			}
			b.WriteString(e.Output)
		case "run":
			// A cell is a row from its start: one that never ends (the
			// test binary died) is still reported.
			if parts := strings.Split(e.Test, "/"); len(parts) == 2 && isSuite(e.Package, parts[0]) {
				row(parts[1], e.Package)
			}
		case "pass", "fail", "skip":
			if e.Action == "fail" {
				status = 1
				if i := strings.LastIndex(e.Test, "/"); i > 0 {
					failedKids[e.Package+"\x00"+e.Test[:i]] = true
				}
				if !*verbose && !failedKids[key] && outputs[key] != nil {
					fmt.Fprint(out, outputs[key].String())
				}
			}
			delete(outputs, key)
			if e.Test == "" && e.Action == "fail" {
				unfinished(out, e.Package, outputs, cells, *verbose)
			}
			if e.Test == "" {
				fmt.Fprintf(out, "%-4s %s %.1fs\n", map[string]string{"pass": "ok", "fail": "FAIL", "skip": "ok"}[e.Action], e.Package, e.Elapsed)
				continue
			}
			parts := strings.SplitN(e.Test, "/", 3)
			if !isSuite(e.Package, parts[0]) || len(parts) < 2 {
				continue
			}
			c := row(parts[1], e.Package)
			if len(parts) == 2 {
				c.result, c.elapsed = strings.ToUpper(e.Action), e.Elapsed
				fmt.Fprintf(out, "%-4s %-18s %6.1fs  %d passed, %d failed, %d skipped\n", c.result, c.name, c.elapsed, c.passed, c.failed, c.skipped)
				continue
			}
			switch e.Action {
			case "pass":
				c.passed++
			case "fail":
				c.failed++
			case "skip":
				c.skipped++
			}
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(out, "kmmap report: reading the test stream: %v\n", err)
		return 2
	}
	if events == 0 {
		fmt.Fprintln(out, "kmmap report: no test events on stdin (pipe `go test -json ./vmtests` into it)")
		return 2
	}
	if *markdown != "" {
		if err := appendMarkdown(*markdown, cells); err != nil {
			fmt.Fprintf(out, "kmmap report: %v\n", err)
			return 2
		}
	}
	return status
}

// unfinished reports, when package pkg failed as a whole, what never ended
// in it: a test binary that died (timeout, panic, a signal) leaves tests
// without a result, and the reason (the panic, every goroutine's stack) in
// their output and the package's. Without it a hung cell would vanish from
// the report.
func unfinished(out io.Writer, pkg string, outputs map[string]*strings.Builder, cells []*cellRow, verbose bool) {
	var keys []string
	for k := range outputs {
		if strings.HasPrefix(k, pkg+"\x00") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !verbose { // -v printed it as it came
			test := strings.TrimPrefix(k, pkg+"\x00")
			if test == "" {
				test = pkg
			}
			fmt.Fprintf(out, "--- %s did not finish; its output:\n%s", test, outputs[k].String())
		}
		delete(outputs, k)
	}
	for _, c := range cells {
		if c.pkg == pkg && c.result == "" {
			fmt.Fprintf(out, "DNF  %-18s did not finish: the test binary died (timeout, panic or signal; its output is above)\n", c.name)
		}
	}
}

// appendMarkdown appends the cells as a Markdown table to path.
func appendMarkdown(path string, cells []*cellRow) error {
	sort.Slice(cells, func(i, j int) bool { return cells[i].name < cells[j].name })
	var b strings.Builder
	b.WriteString("| cell | result | time | passed | failed | skipped |\n|---|---|---:|---:|---:|---:|\n")
	for _, c := range cells {
		mark := map[string]string{"PASS": "✅ pass", "FAIL": "❌ fail", "SKIP": "⏭ skip", "": "❓ did not finish"}[c.result]
		fmt.Fprintf(&b, "| %s | %s | %.1fs | %d | %d | %d |\n", c.name, mark, c.elapsed, c.passed, c.failed, c.skipped)
	}
	return appendFile(path, b.String())
}

func appendFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// newBoard is where report draws the cells' progress: mode is live,
// plain, off or auto (live on a terminal without CI set, else plain).
func newBoard(mode string, out io.Writer) (b *progress.Board, steps bool, err error) {
	switch mode {
	case "auto":
		f, ok := out.(*os.File)
		return progress.NewBoard(out, ok && progress.Live(f, os.Getenv("CI"))), true, nil
	case "live", "plain", "off":
		return progress.NewBoard(out, mode == "live"), mode != "off", nil
	}
	return nil, false, fmt.Errorf("-progress=%s: want auto, live, plain or off", mode)
}

// boardWriter prints through a board, above its live lines.
type boardWriter struct{ b *progress.Board }

func (w boardWriter) Write(p []byte) (int, error) {
	w.b.Print(string(p))
	return len(p), nil
}
