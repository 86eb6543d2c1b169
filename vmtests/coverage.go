package vmtests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kmmap/kmmap/internal/coverage"
	"github.com/kmmap/kmmap/internal/lcov"
	"github.com/kmmap/kmmap/internal/moddir"
)

// wantsCoverage reports whether the cell's kernel profiles the module:
// then its run must bring back counters.
func (c *Cell) wantsCoverage() (bool, error) {
	return c.config.Enabled("CONFIG_GCOV_KERNEL"), nil
}

// keepCoverage writes the module's tracefile of run r into the cell's
// results (coverage.File) when its kernel profiles the module: a run that
// should have brought counters back and did not is an error.
func (c *Cell) keepCoverage(ctx context.Context, r run, cacheDir string) error {
	want, err := c.wantsCoverage()
	if err != nil || !want {
		return err
	}
	switch {
	case r.res.coverageErr != "":
		return fmt.Errorf("the guest could not read its counters: %s", r.res.coverageErr)
	case r.res.coverage == nil:
		return errors.New("the kernel has CONFIG_GCOV_KERNEL but the guest sent no counters (did the agent reach the end of the run?)")
	}
	info, err := c.tracefile(ctx, r.res.coverage, cacheDir)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.Results, coverage.File), info, 0o644)
}

// tracefile turns the counters the guest sent (path under
// /sys/kernel/debug/gcov -> .gcda) into an lcov tracefile of the module's
// own sources, with the gcov of the compiler that built the module (in
// its toolchain root: gcov reads only its own compiler's format), whose
// JSON intermediate format is converted here: Debian's lcov, which would
// run gcov itself, is not in the roots, and the host's gcov cannot read a
// newer gcc's files.
func (c *Cell) tracefile(ctx context.Context, files map[string][]byte, cacheDir string) ([]byte, error) {
	ko, err := c.Module()
	if err != nil {
		return nil, err
	}
	notes := notesDir(ko)
	b, err := os.ReadFile(filepath.Join(notes, builddirFile))
	if err != nil {
		return nil, fmt.Errorf("no gcov notes beside %s (kmod/Kbuild must set GCOV_PROFILE): %w", ko, err)
	}
	builddir := string(b)
	// Inside the root only the cache is visible: work under it (in kmod/,
	// which kmmap kernels prune sweeps of what an interrupted run left).
	work, err := os.MkdirTemp(filepath.Join(cacheDir, "kmod"), ".gcov-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	var gcnos []string
	for p, data := range files {
		rel, ok := strings.CutPrefix(p, builddir+"/")
		if !ok {
			continue // another profiled object of the kernel's
		}
		gcno := strings.TrimSuffix(rel, ".gcda") + ".gcno"
		n, err := os.ReadFile(filepath.Join(notes, gcno))
		if err != nil {
			return nil, fmt.Errorf("counters for %s but no notes: %w", rel, err)
		}
		for name, body := range map[string][]byte{rel: data, gcno: n} {
			if err := moddir.WriteFile(filepath.Join(work, name), body); err != nil {
				return nil, err
			}
		}
		gcnos = append(gcnos, filepath.Join(work, gcno))
	}
	if len(gcnos) == 0 {
		return nil, fmt.Errorf("the guest sent counters for %d objects, none built in %s (the module's build directory)", len(files), builddir)
	}
	slices.Sort(gcnos)
	k := c.Tree.Kernel
	prefix, pkg := c.Arch.Cross(k.Compiler)
	gcov := prefix + strings.Replace(k.Compiler, "gcc", "gcov", 1)
	if k.Compiler == "" {
		gcov = prefix + "gcov"
	}
	// One gcov per object: its -o names where the .gcda is.
	var out bytes.Buffer
	for _, g := range gcnos {
		args := []string{gcov, "--json-format", "--stdout", "--branch-probabilities", "-o", filepath.Dir(g), g}
		cmd := exec.Command(args[0], args[1:]...)
		if c.toolchain != nil {
			cmd = c.toolchain.Command(ctx, work, args...)
		}
		cmd.Dir = work
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("%s (apt-get install %s, or the toolchain root's): %v\n%s", strings.Join(args, " "), pkg, err, stderr.String())
		}
		out.WriteByte('\n')
	}
	return lcov.FromGcov(out.Bytes(), builddir, c.kmodLabel, c.ID)
}
