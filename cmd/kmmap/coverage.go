package main

import (
	"flag"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kmmap/kmmap/internal/coverage"
	"github.com/kmmap/kmmap/internal/lcov"
)

// coverageCmd is `kmmap coverage cells|report`: which cells profile the
// module, and the report of their last runs (make coverage runs both).
func coverageCmd(args []string, w io.Writer) error {
	h, err := harness()
	if err != nil {
		return err
	}
	lock, root := h.Lock(), h.Root()
	cells, err := coverage.Cells(lock)
	if err != nil {
		return err
	}
	if len(args) == 0 {
		return fmt.Errorf("usage: kmmap coverage cells|report [-o DIR] [-cells A,B] [-markdown]")
	}
	switch args[0] {
	case "cells":
		fmt.Fprintln(w, strings.Join(cells, ","))
		return nil
	case "report":
	default:
		return fmt.Errorf("unknown verb %q: want cells or report", args[0])
	}
	fs := flag.NewFlagSet("coverage report", flag.ContinueOnError)
	out := fs.String("o", filepath.Join(root, "coverage"), "the report's directory")
	markdown := fs.Bool("markdown", false, "the figures as a Markdown table (a CI job summary)")
	only := fs.String("cells", "", "comma-separated cells to report (default: every cell that profiles the module)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *only != "" {
		want := strings.Split(*only, ",")
		for _, c := range want {
			if !slices.Contains(cells, c) {
				return fmt.Errorf("-cells: %s does not profile the module (those that do: %s)", c, strings.Join(cells, ", "))
			}
		}
		cells = want
	}
	rep, err := coverage.Merge(root, *out, h.ResultsDir, cells)
	if err != nil {
		return err
	}
	writeFigures(w, rep, cells, *markdown)
	if !*markdown {
		fmt.Fprintf(w, "\ntracefile %s, HTML %s\n", filepath.Join(rep.Dir, coverage.File), filepath.Join(rep.Dir, "html", "index.html"))
	}
	return nil
}

// writeFigures prints lines, functions and branches hit per file of the
// merged tracefile, then each cell's totals.
func writeFigures(w io.Writer, rep *coverage.Report, cells []string, markdown bool) {
	row := func(name string, f lcov.Figures) {
		cols := []string{name,
			fmt.Sprintf("%s (%d/%d)", lcov.Percent(f.LinesHit, f.Lines), f.LinesHit, f.Lines),
			fmt.Sprintf("%s (%d/%d)", lcov.Percent(f.FuncsHit, f.Funcs), f.FuncsHit, f.Funcs),
			fmt.Sprintf("%s (%d/%d)", lcov.Percent(f.BranchesHit, f.Branches), f.BranchesHit, f.Branches)}
		if markdown {
			fmt.Fprintf(w, "| %s |\n", strings.Join(cols, " | "))
		} else {
			fmt.Fprintf(w, "%-34s %-20s %-20s %s\n", cols[0], cols[1], cols[2], cols[3])
		}
	}
	head := func(title string) {
		if markdown {
			fmt.Fprintf(w, "\n%s\n\n| file | lines | functions | branches |\n|---|---|---|---|\n", title)
		} else {
			fmt.Fprintf(w, "\n%s\n%-34s %-20s %-20s %s\n", title, "file", "lines", "functions", "branches")
		}
	}
	head(fmt.Sprintf("Coverage of the module by the guest suite, merged over %s:", strings.Join(cells, ", ")))
	for _, name := range slices.Sorted(maps.Keys(rep.Merged)) {
		row(name, rep.Merged[name].Figures())
	}
	row("total", rep.Merged.Figures())
	head("Per cell:")
	for _, id := range cells {
		row(id, rep.Cells[id].Figures())
	}
}
