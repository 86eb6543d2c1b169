// Package coverage is the report of a module's coverage across cells: which
// cells of a lock profile the module, and the tracefiles their runs left
// (File, in each cell's results) merged, kept per cell and rendered with
// Debian's lcov (genhtml). Collecting a run's counters from the guest is
// the harness's; this package reads what it kept.
package coverage

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/kmmap/kmmap/internal/lcov"
	"github.com/kmmap/kmmap/kernels"
)

// Cells are the cells of the lock whose kernels profile the
// module: built here with CONFIG_GCOV_KERNEL=y in their fragments.
func Cells(lock *kernels.Lock) ([]string, error) {
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

// Report is what Merge made: the tracefiles, by cell and
// merged, and their figures per source file.
type Report struct {
	Merged lcov.Tracefile
	Cells  map[string]lcov.Tracefile
	Dir    string // the report's directory: kmod.info, <cell>.info, html/
}

// Merge merges the tracefiles the last runs of cells left in their
// results (File in results(cell)) into out/kmod.info, keeps each as
// out/<cell>.info, and renders them as HTML with Debian's lcov (genhtml):
// out/html/index.html merged, out/html/<cell>/ per cell. Paths in the
// tracefiles are relative to root, where genhtml reads the sources.
func Merge(root, out string, results func(cell string) string, cells []string) (*Report, error) {
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
	rep := &Report{Cells: map[string]lcov.Tracefile{}, Dir: out}
	merge := []string{"--quiet", "--rc", "lcov_branch_coverage=1"}
	for _, id := range cells {
		src := filepath.Join(results(id), File)
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
	merged := filepath.Join(out, File)
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

// File is the lcov tracefile of the module's sources a cell's run leaves
// in its results directory, when its kernel has gcov
// (CONFIG_GCOV_KERNEL: the module's Kbuild's GCOV_PROFILE takes effect
// there).
const File = "kmod.info"
