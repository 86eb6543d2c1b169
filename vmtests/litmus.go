package vmtests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/kmmap/kmmap/internal/litmus"
	"github.com/kmmap/kmmap/internal/progress"
	"github.com/kmmap/kmmap/internal/toolchain"
	"github.com/kmmap/kmmap/kernels"
)

// LitmusDir is where a module keeps its litmus tests, in its directory:
// each a C litmus test of the LKMM whose comment names the module's code
// its threads stand for (package internal/litmus has the format).
const LitmusDir = "litmus"

// herdSuite and herdPackage give herd7: Debian has it in sid only
// (herdtools7; not in bookworm or trixie), so it lives in a root of its own.
const herdSuite, herdPackage = "sid", "herdtools7"

// LitmusResult is what the memory model says of one litmus test of a
// module, run as the module's C is now.
type LitmusResult struct {
	Test litmus.Test
	// OutOfStep lists where the C accesses a bound variable otherwise than
	// the test's thread: the verdict is then that of the test derived from
	// the C (Derived), or none when it cannot be derived (Err).
	OutOfStep []litmus.Mismatch
	Derived   string
	Verdict   litmus.Verdict
	// Weakened are the test's variants with one barrier relaxed, by what
	// was relaxed: each must fail for the barrier to be needed.
	Weakened map[string]litmus.Verdict
	Err      error
}

// Failed says what is wrong with the module's C by r ("" for nothing).
func (r LitmusResult) Failed() string {
	var why []string
	for _, m := range r.OutOfStep {
		why = append(why, m.String())
	}
	switch {
	case r.Err != nil:
		return r.Err.Error()
	case r.Verdict.Fails(r.Test.Result):
		return fmt.Sprintf("%s: herd7 says %s of it as the C is, want %s%s", r.Test.Name, r.Verdict, r.Test.Result, prefixed(" (the test derived from the C: ", strings.Join(why, "; "), ")"))
	case len(why) > 0:
		return fmt.Sprintf("%s: out of step with the C (%s): herd7 gives the C's version the test's result, so update the litmus test", r.Test.Name, strings.Join(why, "; "))
	}
	return ""
}

func prefixed(p, s, q string) string {
	if s == "" {
		return ""
	}
	return p + s + q
}

// CheckLitmus runs the litmus tests in moduleDir's litmus/ directory with
// herd7 against the memory model of the linux-source the lock pins (the
// one checkpatch comes from), each as the module's C is now, with its
// weakened variants; nil when the module has none. herd7 comes from a
// root of Debian sid made once in the cache.
func (h *Harness) CheckLitmus(ctx context.Context, f *kernels.Fetcher, moduleDir string, logf func(string, ...any)) ([]LitmusResult, error) {
	tests, err := litmus.Load(filepath.Join(moduleDir, LitmusDir))
	if err != nil || len(tests) == 0 {
		return nil, err
	}
	if h.lock.Checkpatch == nil {
		return nil, fmt.Errorf("the litmus tests in %s need the kernel's memory model: the lock (%s) pins no linux-source (\"checkpatch\"; `go tool kmmap kernels update` pins one)", filepath.Join(moduleDir, LitmusDir), h.lockPath)
	}
	lkmm, err := f.Checkpatch(ctx, h.lock.Checkpatch)
	if err != nil {
		return nil, fmt.Errorf("the kernel's memory model, for the litmus tests: %w", err)
	}
	mirror, err := f.Mirror()
	if err != nil {
		return nil, err
	}
	done := progress.Step(logf, "litmus", "herd7 root")
	root, err := toolchain.EnsurePackages(ctx, h.cache, herdSuite, []string{herdPackage}, []string{"herd7"}, mirror, logf)
	done(err)
	if err != nil {
		return nil, fmt.Errorf("herd7, for the litmus tests: %w", err)
	}
	scratch, err := os.MkdirTemp(h.cache, ".litmus-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)

	results := make([]LitmusResult, len(tests))
	texts := map[string]string{}
	for i, t := range tests {
		r := &results[i]
		r.Test, r.Weakened = t, map[string]litmus.Verdict{}
		r.OutOfStep, r.Err = t.Check(moduleDir)
		if r.Err != nil {
			continue
		}
		text := t.Text
		if len(r.OutOfStep) > 0 {
			if text, r.Err = t.Derive(r.OutOfStep); r.Err != nil {
				continue
			}
			r.Derived = text
		}
		texts[t.Name] = text
		for name, w := range t.Weakened() {
			texts[t.Name+"\x00"+name] = w
		}
	}
	if len(texts) == 0 {
		return results, nil
	}
	verdicts, err := litmus.Herd(func(workdir string, args ...string) *exec.Cmd {
		return root.Command(ctx, workdir, args...)
	}, lkmm, scratch, texts)
	if err != nil {
		return nil, err
	}
	for i := range results {
		r := &results[i]
		r.Verdict = verdicts[r.Test.Name]
		for key, v := range verdicts {
			if name, weak, ok := strings.Cut(key, "\x00"); ok && name == r.Test.Name {
				r.Weakened[weak] = v
			}
		}
	}
	return results, nil
}
