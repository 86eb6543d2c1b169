package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/kmmap/kmmap/internal/progress"
	"github.com/kmmap/kmmap/vmtests"
	"golang.org/x/sync/errgroup"
)

// runUsage is kmmap run's usage.
const runUsage = `usage: kmmap run CELL [flags] -- COMMAND [ARG...]
       kmmap run --cells CELL,CELL|all [flags] -- COMMAND [ARG...]

Boots CELL (a cell of the lock, or "custom") with the module under test
loaded, shares the working directory with the guest at the same path
(read-write, virtio 9p), runs COMMAND there as root and exits with its
status, or:
  100  the kernel reported a problem (WARNING, BUG, KASAN, ...) during the
       run, even if the command exited 0 (the report is printed)
  101  the kernel panicked
  102  the run did not end within --timeout
  103  the command never ran (the module did not build, the guest did not
       boot, the command could not start)
With --cells, runs it on each cell in parallel and prints a line per cell;
exits 0 when every cell's command exited 0 cleanly, else 1.
`

// runCmd is `kmmap run`.
func runCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, runUsage); fs.PrintDefaults() }
	cells := fs.String("cells", "", "run on these cells (comma-separated, or all) in parallel")
	noModule := fs.Bool("no-module", false, "boot without loading the module under test")
	timeout := fs.Duration("timeout", 0, "stop the run after this long (default: KMMAP_VM_TIMEOUT, 5m)")
	dir := fs.String("dir", "", "the directory to share and run in (default: the working directory)")
	var cell string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cell, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	command := fs.Args()
	if len(command) == 0 || (cell == "") == (*cells == "") {
		fs.Usage()
		return 2
	}
	h, err := harness()
	if err != nil {
		fmt.Fprintf(stderr, "kmmap run: %v\n", err)
		return vmtests.ExitHarness
	}
	ids := []string{cell}
	if *cells != "" {
		ids = strings.Split(*cells, ",")
		if *cells == "all" {
			ids = h.Lock().IDs()
		}
	}
	wd := *dir
	if wd == "" {
		wd, err = os.Getwd()
	}
	if err == nil {
		wd, err = filepath.Abs(wd)
	}
	if err != nil {
		fmt.Fprintf(stderr, "kmmap run: %v\n", err)
		return vmtests.ExitHarness
	}
	opts := vmtests.CellOptions{Share: wd, NoModule: *noModule, BootWhileBuilding: true}
	job := vmtests.CommandJob{Argv: command, Dir: wd, Timeout: *timeout}
	if env := os.Getenv("TERM"); env != "" {
		job.Env = append(job.Env, "TERM="+env)
	}
	if len(ids) == 1 {
		steps := newStepLog(false)
		opts.Logf = steps.logf
		r := runOne(ctx, h, ids[0], opts, job, stdout, stderr, steps.close)
		tellRun(stderr, r)
		return r.ExitCode()
	}
	// Several cells: each one's output goes to its results directory, a
	// line per cell here as each ends.
	var mu sync.Mutex
	steps := newStepLog(true)
	defer steps.close()
	results := make([]vmtests.CommandResult, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.NumCPU())
	for i, id := range ids {
		g.Go(func() error {
			var out, errOut strings.Builder
			o := opts
			o.Logf = steps.logf
			r := runOne(gctx, h, id, o, job, &out, &errOut, func() {})
			if r.Results != "" {
				_ = os.WriteFile(filepath.Join(r.Results, "stdout"), []byte(out.String()), 0o644)
				_ = os.WriteFile(filepath.Join(r.Results, "stderr"), []byte(errOut.String()), 0o644)
			}
			mu.Lock()
			defer mu.Unlock()
			results[i] = r
			if f, ok := stdout.(*os.File); ok && progress.Live(f, os.Getenv("CI")) {
				steps.board.Print(r.Verdict() + "\n") // above the live lines on the same terminal
			} else {
				fmt.Fprintln(stdout, r.Verdict())
			}
			return nil
		})
	}
	_ = g.Wait()
	status := 0
	for _, r := range results {
		if r.ExitCode() != 0 {
			status = 1
			fmt.Fprintf(stderr, "\n%s:\n", r.Cell)
			tellRun(stderr, r)
		}
	}
	return status
}

// runOne prepares cell id and runs command j in it, its output to stdout
// and stderr.
func runOne(ctx context.Context, h *vmtests.Harness, id string, o vmtests.CellOptions, j vmtests.CommandJob, stdout, stderr io.Writer, prepared func()) vmtests.CommandResult {
	start := time.Now()
	fail := func(err error) vmtests.CommandResult {
		return vmtests.CommandResult{Cell: id, Status: -1, Problems: []string{err.Error()}, Elapsed: time.Since(start)}
	}
	f, err := h.Fetcher(o.Logf)
	if err != nil {
		return fail(err)
	}
	tree, err := h.Tree(ctx, id, f)
	if err != nil {
		return fail(err)
	}
	// Its own results directory, results/run/<cell>: a command run beside
	// a go test of the same cell (another terminal) leaves the suite's
	// results/<cell> alone.
	o.ResultsID = "run/" + id
	c, err := h.Prepare(ctx, f, tree, o)
	prepared()
	if err != nil {
		return fail(err)
	}
	j.Stdout, j.Stderr = stdout, stderr
	r := vmtests.RunCommand(ctx, c, j)
	if _, err := c.Module(); err != nil && !o.NoModule && !errors.Is(err, context.Canceled) && r.Status < 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("the module under test: %v", err))
	}
	return r
}

// tellRun says how a run ended, with every kernel report, where its results
// are and how to run it again.
func tellRun(w io.Writer, r vmtests.CommandResult) {
	fmt.Fprintf(w, "kmmap run: %s\n", strings.TrimSpace(r.Verdict()))
	if r.Booted != "" {
		fmt.Fprintf(w, "guest: %s\n", r.Booted)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	for _, rep := range r.Reports {
		fmt.Fprintf(w, "kernel report:\n%s\n", rep)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "%s\n", p)
	}
	if r.TimedOut || r.Panicked {
		fmt.Fprintf(w, "last console lines:\n%s\n", r.Tail)
	}
	if r.Results != "" {
		fmt.Fprintf(w, "results: %s (console.log, cmdline, qemu, the module)\nrerun: %s\n", r.Results, r.Rerun)
	}
}
