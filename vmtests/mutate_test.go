package vmtests

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmmap/kmmap/internal/kmmap"
	"github.com/kmmap/kmmap/internal/mutant"
)

// TestMutantsApply: every committed mutant names what it breaks, applies
// to today's kmod/ and changes it, so `make mutants` cannot rot unseen.
func TestMutantsApply(t *testing.T) {
	root, lock := loadLock(t)
	mutants, err := mutant.Load(filepath.Join(root, kmmap.MutantsDir), kmmap.DefaultMutantCell)
	if err != nil {
		t.Fatal(err)
	}
	if len(mutants) < 20 {
		t.Errorf("%d mutants: the list must keep at least 20", len(mutants))
	}
	orig, err := hashTree(filepath.Join(root, "kmod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mutants {
		t.Run(m.Name, func(t *testing.T) {
			if m.Why == "" {
				t.Errorf("no `Why:` line saying what the change breaks")
			}
			for _, c := range m.Cells {
				if _, err := lock.Kernel(c); err != nil {
					t.Errorf("Cells: %v", err)
				}
			}
			src, err := m.ApplyTo(root, filepath.Join(root, kmmap.ModuleDir), t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if h, err := hashTree(src); err != nil || h == orig {
				t.Errorf("the mutated copy is the same as kmod/ (%v)", err)
			}
		})
	}
}

func TestMutantRefused(t *testing.T) {
	root, _ := loadLock(t)
	diff := "--- a/kmod/main.c\n+++ b/kmod/main.c\n@@ -1 +1 @@\n-// SPDX-License-Identifier: GPL-2.0\n+// SPDX-License-Identifier: GPL-2.0 \n"
	for _, c := range []struct{ name, patch, want string }{
		{"no-diff", "Why: nothing\n", "no diff"},
		{"outside", "Why: x\n\n" + strings.ReplaceAll(diff, "kmod/main.c", "vmtests/run.go"), "only kmod/"},
	} {
		if _, err := mutant.Parse(c.name, []byte(c.patch), kmmap.DefaultMutantCell); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want one saying %q", c.name, err, c.want)
		}
	}
	// A patch that no longer applies names the mutant and what to do.
	m, err := mutant.Parse("stale", []byte("Why: x\n\n"+strings.ReplaceAll(diff, "SPDX", "XDPS")), kmmap.DefaultMutantCell)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.ApplyTo(root, filepath.Join(root, kmmap.ModuleDir), t.TempDir()); err == nil || !strings.Contains(err.Error(), "no longer applies") {
		t.Errorf("a stale patch: err %v", err)
	}
	// A bare diff (no header, diff -u's paths without a/ b/) is a mutant
	// too: lists written elsewhere need not know this one's headers.
	committed, err := mutant.Load(filepath.Join(root, kmmap.MutantsDir), kmmap.DefaultMutantCell)
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := strings.Cut(string(committed[0].Patch), "\n--- ")
	bare := strings.NewReplacer("a/kmod/", "kmod/", "b/kmod/", "kmod/").Replace("--- " + body)
	m, err = mutant.Parse("bare", []byte(bare), kmmap.DefaultMutantCell)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.ApplyTo(root, filepath.Join(root, kmmap.ModuleDir), t.TempDir()); err != nil {
		t.Errorf("a bare diff -u: %v", err)
	}
	m, err = mutant.Parse("default-cell", []byte("Why: x\n\n"+diff), kmmap.DefaultMutantCell)
	if err != nil || len(m.Cells) != 1 || m.Cells[0] != kmmap.DefaultMutantCell {
		t.Errorf("no Cells: line: cells %v (%v), want [%s]", m.Cells, err, kmmap.DefaultMutantCell)
	}
	if _, err := mutant.Load(t.TempDir(), kmmap.DefaultMutantCell); err == nil {
		t.Error("an empty directory of mutants was accepted")
	}
}
