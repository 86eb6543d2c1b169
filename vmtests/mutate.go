package vmtests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/kmmap/kmmap/internal/console"
	"github.com/kmmap/kmmap/kernels"
)

// MutantsDir holds the committed mutants of kmod/, one patch each.
const MutantsDir = "vmtests/mutants"

// DefaultMutantCell is where a mutant runs when its patch names no cell:
// a distribution kernel with two CPUs booted with init_on_alloc=0
// (kernels.lock), where a missing zeroing and a race can show.
const DefaultMutantCell = "6.12-amd64"

// Mutant is one realistic single-point change of the module: a patch
// against the repository (git diff of kmod/), headed by lines
//
//	Cells: 6.12-amd64-debug     where it runs (default DefaultMutantCell)
//	Why: what the change breaks (required of the committed list)
//	Survives: why no test on these cells can kill it (a known gap)
//
// before the diff; `git apply` ignores them.
type Mutant struct {
	Name     string // the file's name without .patch
	Patch    []byte
	Cells    []string
	Why      string // optional in a list of your own
	Survives string
	strip    int // git apply -p: 1 for git diff's a/ b/, 0 for bare paths
}

// LoadMutants reads every *.patch in dir, sorted by name.
func LoadMutants(dir string) ([]Mutant, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.patch"))
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no mutant (*.patch) in %s", dir)
	}
	sort.Strings(paths)
	var out []Mutant
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		m, err := parseMutant(strings.TrimSuffix(filepath.Base(p), ".patch"), b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func parseMutant(name string, b []byte) (Mutant, error) {
	m := Mutant{Name: name, Patch: b, strip: 1}
	files := 0
	inHeader := true
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "diff ") || strings.HasPrefix(l, "--- ") {
			inHeader = false
		}
		if inHeader {
			key, val, ok := strings.Cut(l, ":")
			val = strings.TrimSpace(val)
			switch {
			case !ok:
			case key == "Cells":
				m.Cells = strings.FieldsFunc(val, func(r rune) bool { return r == ',' || r == ' ' })
			case key == "Why":
				m.Why = val
			case key == "Survives":
				m.Survives = val
			}
			continue
		}
		if f, ok := strings.CutPrefix(l, "+++ "); ok {
			f = strings.Fields(f)[0]
			// git diff's b/kmod/..., or diff -u's kmod/... as it is.
			if rest, ok := strings.CutPrefix(f, "b/"); ok {
				f = rest
			} else {
				m.strip = 0
			}
			if !strings.HasPrefix(f, "kmod/") {
				return m, fmt.Errorf("the patch changes %s: a mutant changes only kmod/", f)
			}
			files++
		}
	}
	if files == 0 {
		return m, errors.New("no diff in it (make one with: git diff kmod/ > vmtests/mutants/NAME.patch)")
	}
	if len(m.Cells) == 0 {
		m.Cells = []string{DefaultMutantCell}
	}
	return m, nil
}

// Apply copies root's kmod/ under dir and applies the mutant to the copy
// with git apply; it returns the mutated module's directory.
func (m Mutant) Apply(root, dir string) (string, error) {
	src := filepath.Join(dir, "kmod")
	if err := copySources(src, filepath.Join(root, "kmod")); err != nil {
		return "", err
	}
	cmd := exec.Command("git", "apply", "--whitespace=nowarn", fmt.Sprintf("-p%d", m.strip), "-")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(m.Patch)
	// dir is outside any repository: git apply works as patch(1) there.
	cmd.Env = append(os.Environ(), "GIT_CEILING_DIRECTORIES="+filepath.Dir(dir))
	if o, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("mutant %s no longer applies to kmod/ (update its patch): %v\n%s", m.Name, err, o)
	}
	return src, nil
}

// Verdicts of a mutant on a cell.
const (
	Killed       = "killed"
	Survived     = "survived"
	NotCompiling = "not compiling"
)

// MutantResult is a mutant's run on one cell.
type MutantResult struct {
	Mutant  Mutant
	Cell    string
	Verdict string
	// KilledBy names what failed: guest tests, kernel reports, or what
	// went wrong with the boot (a hang, a module that would not unload).
	KilledBy []string
	Detail   string // the first failure's text
	Elapsed  time.Duration
	// OnlyTimedOut: the run was ended by its time limit or the watchdog,
	// with no kernel report and no guest test failed - a verdict that
	// load alone can give (kmmap mutate runs such a mutant once more).
	OnlyTimedOut bool
	// Rerun says why the verdict is that of a second run ("" for none).
	Rerun string
}

// RunMutant builds the mutant for tree's kernel and runs the whole guest
// suite on it, timeout at most. err is the harness failing, not the
// module.
func RunMutant(ctx context.Context, h *Harness, f *kernels.Fetcher, tree *kernels.Tree, m Mutant, timeout time.Duration) (res MutantResult, err error) {
	res = MutantResult{Mutant: m, Cell: tree.Kernel.ID}
	start := time.Now()
	defer func() { res.Elapsed = time.Since(start) }()
	dir, err := os.MkdirTemp("", "kmmap-mutant-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	src, err := m.Apply(h.Root(), dir)
	if err != nil {
		return res, err
	}
	// The guest boots while the mutant builds; one that does not build
	// makes the agent give up at once.
	cell, err := h.Prepare(ctx, f, tree, CellOptions{ModuleDir: src, ResultsID: "mutants/" + m.Name + "/" + tree.Kernel.ID,
		BootWhileBuilding: true, GuestFailFast: true})
	if err != nil {
		return res, err
	}
	cell.Timeout = timeout
	r := boot(ctx, cell)
	var be *BuildError
	if _, err := cell.Module(); errors.As(err, &be) {
		res.Verdict, res.Detail = NotCompiling, be.Error()
		return res, nil
	} else if err != nil {
		return res, err
	}
	if err := cell.writeResults(r); err != nil {
		return res, err
	}
	res.KilledBy, res.Detail = cell.failures(r)
	res.OnlyTimedOut = cell.onlyTimedOut(r)
	res.Verdict = Survived
	if len(res.KilledBy) > 0 {
		res.Verdict = Killed
	}
	return res, nil
}

// onlyTimedOut reports whether run r ended by its time limit or the
// watchdog with nothing else wrong: no kernel report, no guest test that
// finished failing.
func (c *Cell) onlyTimedOut(r run) bool {
	if r.stalled == "" && (c.Timeout == 0 || r.elapsed < c.Timeout) {
		return false
	}
	if len(r.con.Splats) > 0 {
		return false
	}
	for _, tr := range r.res.tests {
		if tr.action == "fail" {
			return false
		}
	}
	return true
}

// Baseline runs the unmutated module's suite on tree's cell: it must
// pass before a mutant's failure means anything. It returns how long the
// run took booted cold - the most a mutant's run takes when it is not
// broken (a snapshot that does not restore boots cold), the base of its
// time limit.
func Baseline(ctx context.Context, h *Harness, f *kernels.Fetcher, tree *kernels.Tree) (time.Duration, error) {
	cell, err := h.Prepare(ctx, f, tree, CellOptions{ResultsID: "mutants/baseline/" + tree.Kernel.ID})
	if err != nil {
		return 0, err
	}
	cell.snap.cold = "the mutants' time limit is measured on a cold boot"
	r := boot(ctx, cell)
	if err := cell.writeResults(r); err != nil {
		return 0, err
	}
	if what, detail := cell.failures(r); len(what) > 0 {
		return 0, fmt.Errorf("%s: the unmutated module fails the suite (%s), so no mutant can be judged:\n%s", tree.Kernel.ID, strings.Join(what, ", "), detail)
	}
	return r.elapsed, nil
}

// failures lists what of run r did not pass: kernel reports (by kind and
// test), guest tests that failed or never finished, the boot's problems;
// detail is the text of the first.
func (c *Cell) failures(r run) (what []string, detail string) {
	add := func(w, d string) {
		if !slices.Contains(what, w) {
			what = append(what, w)
		}
		if detail == "" {
			detail = d
		}
	}
	for _, name := range slices.Sorted(maps.Keys(r.con.Splats)) {
		s := r.con.Splats[name]
		if name == "" {
			continue // problems() has it
		}
		add(fmt.Sprintf("%s (%s)", topLevel(name), console.KindsOf(s)), strings.Join(s, "\n"))
	}
	var unrun []string
	for _, name := range r.res.list {
		tr := r.res.tests[name]
		switch {
		case tr == nil:
			unrun = append(unrun, name) // after a crash, or -test.failfast
		case tr.action == "":
			add(name+" (did not finish)", tr.output.String())
		case tr.action == "fail":
			out := tr.output.String()
			for _, ch := range tr.children {
				if r.res.tests[ch].action == "fail" {
					out += r.res.tests[ch].output.String()
				}
			}
			add(name, out)
		}
	}
	// What the boot as a whole says (a panic, a hang) after the reports
	// and tests that name the cause.
	for _, p := range c.problems(r) {
		first, _, _ := strings.Cut(p, ";")
		add("boot: "+firstLine(first), p)
	}
	if len(what) == 0 {
		for _, name := range unrun {
			add(name+" (never ran)", "")
		}
	}
	if r.res.reloadErr != "" {
		add("load again after unload", r.res.reloadErr)
	}
	if r.res.unloadErr != "" {
		add("unload (a leaked reference?)", r.res.unloadErr)
	}
	if len(what) == 0 && r.res.exitErr != "" {
		add("guest test binary: "+r.res.exitErr, "")
	}
	return what, detail
}

func topLevel(test string) string {
	top, _, _ := strings.Cut(test, "/")
	return top
}
