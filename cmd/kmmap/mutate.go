package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kmmap/kmmap/internal/kmmap"
	"github.com/kmmap/kmmap/internal/mutant"
	"github.com/kmmap/kmmap/internal/mutation"
	"github.com/kmmap/kmmap/kernels"
	"golang.org/x/sync/errgroup"
)

// mutate runs each mutant of the module against the guest suite on its
// cells and writes the table of verdicts (make mutants: MUTANTS.md).
func mutate(ctx context.Context, args []string, w io.Writer) error {
	fs := flag.NewFlagSet("mutate", flag.ContinueOnError)
	dir := fs.String("mutants", "", "the directory of mutants, one .patch each (default: "+kmmap.MutantsDir+")")
	outPath := fs.String("o", "", "write the table here too (Markdown)")
	jobs := fs.Int("j", runtime.NumCPU(), "mutants run at once (each boots a VM)")
	only := fs.String("run", "", "only the mutants whose names match this regular expression")
	if err := fs.Parse(args); err != nil {
		return err
	}
	h, err := harness()
	if err != nil {
		return err
	}
	lock, root := h.Lock(), h.Root()
	if *dir == "" {
		*dir = filepath.Join(root, kmmap.MutantsDir)
	}
	mutants, err := mutant.Load(*dir, kmmap.DefaultMutantCell)
	if err != nil {
		return err
	}
	if *only != "" {
		re, err := regexp.Compile(*only)
		if err != nil {
			return fmt.Errorf("-run: %w", err)
		}
		mutants = slices.DeleteFunc(mutants, func(m mutant.Mutant) bool { return !re.MatchString(m.Name) })
		if len(mutants) == 0 {
			return fmt.Errorf("-run %q matches no mutant in %s", *only, *dir)
		}
	}
	if *jobs < 1 {
		return fmt.Errorf("-j %d: want 1 or more", *jobs)
	}
	start := time.Now()
	f, err := h.Fetcher(func(string, ...any) {})
	if err != nil {
		return err
	}
	// Every cell a mutant names: its kernel, and the unmutated suite's
	// verdict there (which must be a pass) and time.
	var cells []string
	for _, m := range mutants {
		for _, c := range m.Cells {
			if !slices.Contains(cells, c) {
				cells = append(cells, c)
			}
		}
	}
	trees := map[string]*kernels.Tree{}
	base := map[string]time.Duration{}
	var mu sync.Mutex
	err = parallel(ctx, *jobs, len(cells), func(i int) error {
		k, err := lock.Kernel(cells[i])
		if err != nil {
			return err
		}
		t, err := f.Fetch(ctx, k)
		if err != nil {
			return err
		}
		d, err := mutation.Baseline(ctx, h, f, t)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		trees[k.ID], base[k.ID] = t, d
		fmt.Fprintf(w, "baseline %-20s passes (%.1f s)\n", k.ID, d.Seconds())
		return nil
	})
	if err != nil {
		return err
	}
	type job struct {
		m    mutant.Mutant
		cell string
	}
	var all []job
	for _, m := range mutants {
		for _, c := range m.Cells {
			all = append(all, job{m, c})
		}
	}
	results := make([]mutation.Result, len(all))
	err = parallel(ctx, *jobs, len(all), func(i int) error {
		j := all[i]
		// A hang kills the mutant: three times the unmutated suite
		// booted cold, at least two minutes, is long enough to know (and
		// the watchdog ends a guest silent for KMMAP_STALL sooner).
		timeout := max(2*time.Minute, 3*base[j.cell])
		r, err := mutation.Run(ctx, h, f, trees[j.cell], j.m, timeout)
		if err == nil && r.Verdict == mutation.Killed && r.OnlyTimedOut {
			// Nothing failed but time, which load alone can run out:
			// once more, with twice the time, before it counts.
			first := r
			r, err = mutation.Run(ctx, h, f, trees[j.cell], j.m, 2*timeout)
			r.Rerun = fmt.Sprintf("re-run: the first run only timed out (%.0f s, limit %.0f s)", first.Elapsed.Seconds(), timeout.Seconds())
		}
		if err != nil {
			return fmt.Errorf("mutant %s on %s: %w", j.m.Name, j.cell, err)
		}
		results[i] = r
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(w, "%-40s %-20s %-14s %5.1f s  %s\n", j.m.Name, j.cell, r.Verdict, r.Elapsed.Seconds(), strings.Join(slices.DeleteFunc(append(first(r.KilledBy, 4), r.Rerun), func(s string) bool { return s == "" }), "; "))
		return nil
	})
	if err != nil {
		return err
	}
	var md bytes.Buffer
	writeMutants(&md, mutants, results, time.Since(start), strings.Join(args, " "), *dir, root)
	fmt.Fprint(w, "\n", md.String())
	if *outPath != "" {
		return os.WriteFile(*outPath, md.Bytes(), 0o644)
	}
	return nil
}

// parallel runs fn(0..n-1), at most jobs at once; after the first error
// no new one starts, and that error is returned.
func parallel(ctx context.Context, jobs, n int, fn func(int) error) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	for i := range n {
		g.Go(func() error {
			if err := ctx.Err(); err != nil {
				return err
			}
			return fn(i)
		})
	}
	return g.Wait()
}

// writeMutants writes the Markdown report: totals, then a row per mutant.
// A mutant is killed when any of its cells killed it.
func writeMutants(w io.Writer, mutants []mutant.Mutant, results []mutation.Result, took time.Duration, args, dir, root string) {
	byName := map[string][]mutation.Result{}
	for _, r := range results {
		byName[r.Mutant.Name] = append(byName[r.Mutant.Name], r)
	}
	verdict := func(rs []mutation.Result) string {
		v := mutation.NotCompiling
		for _, r := range rs {
			switch r.Verdict {
			case mutation.Killed:
				return mutation.Killed
			case mutation.Survived:
				v = mutation.Survived
			}
		}
		return v
	}
	count := map[string]int{}
	for _, m := range mutants {
		count[verdict(byName[m.Name])]++
	}
	rel, err := filepath.Rel(root, dir)
	if err != nil || !filepath.IsLocal(rel) {
		rel = dir
	}
	fmt.Fprintf(w, "# Mutants of kmod/\n\n")
	fmt.Fprintf(w, "Each mutant in `%s` is one realistic change of the module; the guest suite ran on each of its cells up to its first failing test (`-test.failfast`), and a mutant is killed when a guest test failed, a kernel report appeared or the guest did not end cleanly.\n\n", rel)
	fmt.Fprintf(w, "Command: `go run ./cmd/kmmap mutate %s` (`make mutants`), %s, %s; %d runs in %s.\n\n",
		args, time.Now().UTC().Format("2006-01-02 15:04 MST"), machine(), len(results), took.Round(time.Second))
	compiled := len(mutants) - count[mutation.NotCompiling]
	reruns := 0
	for _, r := range results {
		if r.Rerun != "" {
			reruns++
		}
	}
	fmt.Fprintf(w, "**%d of %d mutants killed** (%s of those that compile) · %d survived · %d not compiling · %d runs repeated because they only timed out.\n\n",
		count[mutation.Killed], len(mutants), pct(count[mutation.Killed], compiled), count[mutation.Survived], count[mutation.NotCompiling], reruns)
	fmt.Fprintf(w, "| mutant | what it breaks | cells | verdict | killed by |\n|---|---|---|---|---|\n")
	for _, m := range mutants {
		rs := byName[m.Name]
		var cells, by []string
		for _, r := range rs {
			cells = append(cells, fmt.Sprintf("%s (%.0f s)", r.Cell, r.Elapsed.Seconds()))
			if r.Verdict == mutation.Killed {
				by = append(by, fmt.Sprintf("%s: %s", r.Cell, strings.Join(first(r.KilledBy, 4), ", ")))
			}
			if r.Rerun != "" {
				by = append(by, fmt.Sprintf("%s: %s", r.Cell, r.Rerun))
			}
		}
		v := verdict(rs)
		switch {
		case v == mutation.Survived && m.Survives != "":
			by = append(by, "known gap: "+m.Survives)
		case v == mutation.Killed && m.Survives != "":
			by = append(by, "(its `Survives:` line is stale)")
		}
		why := m.Why
		if why == "" {
			why = "(no `Why:` line)"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", m.Name, cell(why), strings.Join(cells, "<br>"), v, cell(strings.Join(by, "<br>")))
	}
}

// first is the first n of what, and how many more there were.
func first(what []string, n int) []string {
	if len(what) <= n {
		return what
	}
	return append(what[:n:n], fmt.Sprintf("%d more", len(what)-n))
}

func pct(n, of int) string {
	if of == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(n)/float64(of))
}

// cell escapes a Markdown table cell.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
