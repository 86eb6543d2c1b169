package vmtests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kmmap/kmmap/internal/lcov"
	"github.com/kmmap/kmmap/internal/moddir"
	"github.com/kmmap/kmmap/kernels"
)

// CoverageFile is the lcov tracefile of the module's sources a cell's
// run leaves in its results directory, when its kernel has gcov
// (CONFIG_GCOV_KERNEL: kmod/Kbuild's GCOV_PROFILE takes effect there).
const CoverageFile = "kmod.info"

// wantsCoverage reports whether the cell's kernel profiles the module:
// then its run must bring back counters.
func (c *Cell) wantsCoverage() (bool, error) {
	return c.config.Enabled("CONFIG_GCOV_KERNEL"), nil
}

// keepCoverage writes the module's tracefile of run r into the cell's
// results (CoverageFile) when its kernel profiles the module: a run that
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
	info, err := c.coverage(ctx, r.res.coverage, cacheDir)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.Results, CoverageFile), info, 0o644)
}

// coverage turns the counters the guest sent (path under
// /sys/kernel/debug/gcov -> .gcda) into an lcov tracefile of the module's
// own sources, with the gcov of the compiler that built the module (in
// its toolchain root: gcov reads only its own compiler's format), whose
// JSON intermediate format is converted here: Debian's lcov, which would
// run gcov itself, is not in the roots, and the host's gcov cannot read a
// newer gcc's files.
func (c *Cell) coverage(ctx context.Context, files map[string][]byte, cacheDir string) ([]byte, error) {
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

// CoverageCells are the cells of the lock whose kernels profile the
// module: built here with CONFIG_GCOV_KERNEL=y in their fragments.
func CoverageCells(lock *kernels.Lock) ([]string, error) {
	var ids []string
	for _, k := range lock.Kernels {
		if !k.FromSource() {
			continue
		}
		text, err := k.ConfigText()
		if err != nil {
			return nil, err
		}
		if kernels.ParseConfig(text).Enabled("CONFIG_GCOV_KERNEL") {
			ids = append(ids, k.ID)
		}
	}
	return ids, nil
}

// CoverageReport is what Coverage made: the tracefiles, by cell and
// merged, and their figures per source file.
type CoverageReport struct {
	Merged lcov.Tracefile
	Cells  map[string]lcov.Tracefile
	Dir    string // the report's directory: kmod.info, <cell>.info, html/
}

// Coverage merges the tracefiles the last runs of cells left in their
// results (CoverageFile) into out/kmod.info, keeps each as
// out/<cell>.info, and renders them as HTML with Debian's lcov (genhtml):
// out/html/index.html merged, out/html/<cell>/ per cell. Paths in the
// tracefiles are relative to the harness's root, where genhtml reads the
// sources.
func (h *Harness) Coverage(out string, cells []string) (*CoverageReport, error) {
	root := h.Root()
	if len(cells) == 0 {
		return nil, errors.New("no cell profiles the module: a cell built from source needs CONFIG_GCOV_KERNEL=y in its fragments")
	}
	for _, tool := range []string{"lcov", "genhtml"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s not found (apt-get install lcov)", tool)
		}
	}
	if err := os.RemoveAll(out); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(out, "html"), 0o755); err != nil {
		return nil, err
	}
	rep := &CoverageReport{Cells: map[string]lcov.Tracefile{}, Dir: out}
	merge := []string{"--quiet", "--rc", "lcov_branch_coverage=1"}
	for _, id := range cells {
		src := filepath.Join(h.ResultsDir(id), CoverageFile)
		b, err := os.ReadFile(src)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("cell %s has no coverage from a run (%s): run `make coverage`, or KMMAP_CELLS=%s go test -run '^TestGuest$' ./vmtests", id, src, id)
		} else if err != nil {
			return nil, err
		}
		t, err := lcov.Parse(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src, err)
		}
		rep.Cells[id] = t
		info := filepath.Join(out, id+".info")
		if err := os.WriteFile(info, b, 0o644); err != nil {
			return nil, err
		}
		if err := genhtml(root, filepath.Join(out, "html", id), "kmmap.ko on "+id, info); err != nil {
			return nil, err
		}
		merge = append(merge, "-a", info)
	}
	merged := filepath.Join(out, CoverageFile)
	cmd := exec.Command("lcov", append(merge, "-o", merged)...)
	cmd.Dir = root
	if o, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("lcov %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, o)
	}
	b, err := os.ReadFile(merged)
	if err != nil {
		return nil, err
	}
	if rep.Merged, err = lcov.Parse(bytes.NewReader(b)); err != nil {
		return nil, fmt.Errorf("%s: %w", merged, err)
	}
	return rep, genhtml(root, filepath.Join(out, "html"), "kmmap.ko on "+strings.Join(cells, ", "), merged)
}

func genhtml(root, dir, title, info string) error {
	cmd := exec.Command("genhtml", "--quiet", "--branch-coverage", "--function-coverage", "--legend",
		"--title", title, "--output-directory", dir, info)
	cmd.Dir = root
	if o, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("genhtml %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, o)
	}
	return nil
}
