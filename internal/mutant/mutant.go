// Package mutant reads mutants of a kernel module: each one realistic
// single-point change of its sources, as a patch headed by where it runs
// and what it breaks, and applies one to a copy of the module. It owns
// the format; running a mutant against a suite is the harness's.
package mutant

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/kmmap/kmmap/internal/moddir"
)

// Mutant is one realistic single-point change of the module: a patch
// against the repository (git diff of kmod/), headed by lines
//
//	Cells: 6.12-amd64-debug     where it runs (default: Load's)
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

// Load reads every *.patch in dir, sorted by name; a mutant whose patch
// names no cell runs on cell.
func Load(dir, cell string) ([]Mutant, error) {
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
		m, err := Parse(strings.TrimSuffix(filepath.Base(p), ".patch"), b, cell)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// Parse reads the mutant name from its patch b; cell is where it runs
// when the patch names no cell.
func Parse(name string, b []byte, cell string) (Mutant, error) {
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
		return m, errors.New("no diff in it (make one with: git diff kmod/ > internal/kmmap/mutants/NAME.patch)")
	}
	if len(m.Cells) == 0 {
		m.Cells = []string{cell}
	}
	return m, nil
}

// ApplyTo copies module (a directory in root) to the same place under
// dir and applies the mutant, whose paths are relative to root, to the
// copy; it returns the mutated module's directory.
func (m Mutant) ApplyTo(root, module, dir string) (string, error) {
	rel, err := filepath.Rel(root, module)
	if err != nil || !filepath.IsLocal(rel) {
		return "", fmt.Errorf("mutant %s: the module %s is not in %s, which the mutants' paths are relative to", m.Name, module, root)
	}
	src := filepath.Join(dir, rel)
	if err := moddir.Copy(src, module); err != nil {
		return "", err
	}
	return src, m.Apply(dir)
}

// Apply applies the mutant with git apply in dir, which holds the
// module's copy where the patch's paths say (kmod/ for kmmap's).
func (m Mutant) Apply(dir string) error {
	cmd := exec.Command("git", "apply", "--whitespace=nowarn", fmt.Sprintf("-p%d", m.strip), "-")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(m.Patch)
	// dir is outside any repository: git apply works as patch(1) there.
	cmd.Env = append(os.Environ(), "GIT_CEILING_DIRECTORIES="+filepath.Dir(dir))
	if o, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mutant %s no longer applies to kmod/ (update its patch): %v\n%s", m.Name, err, o)
	}
	return nil
}
