package vmtests

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmmap/kmmap/internal/kmmap"
	"github.com/kmmap/kmmap/internal/mutant"
)

// TestLitmus: the module's litmus tests (kmod/litmus/: the ring's and the
// pinned fill's) are in step with kmod/ring.c and kmod/pin.c and the
// kernel's memory model gives each its result, with no data race; every
// barrier and lock they bind is needed (the test with it relaxed fails);
// and a change to those barriers and locks that the litmus tests do not
// follow fails the check.
func TestLitmus(t *testing.T) {
	t.Parallel()
	h := kmmapHarness(t)
	f := cellFetcher(t)
	ctx := context.Background()
	kmod := filepath.Join(h.Root(), "kmod")
	results, err := h.CheckLitmus(ctx, f, kmod, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) < 4 {
		t.Fatalf("%d litmus tests in kmod/litmus, want the ring's three (publish, reuse, timer) and the pinned fill's", len(results))
	}
	for _, r := range results {
		if why := r.Failed(); why != "" {
			t.Errorf("%s", why)
			continue
		}
		if len(r.OutOfStep) > 0 {
			t.Errorf("%s: out of step with the C: %v", r.Test.Name, r.OutOfStep)
		}
		if len(r.Weakened) == 0 {
			t.Errorf("%s: binds no barrier or lock of the C: it proves nothing about the module", r.Test.Name)
		}
		for name, v := range r.Weakened {
			if !v.Fails(r.Test.Result) {
				t.Errorf("%s with %s: herd7 still says %s: by the memory model that barrier is not needed, or the test does not model what needs it", r.Test.Name, name, v)
				continue
			}
			t.Logf("%s: %s, as written %s; with %s: %s", r.Test.Name, r.Test.Result, r.Verdict, name, v)
		}
	}

	// Barriers and locks changed in the C alone: the mutants that survive
	// every cell (an x86 host keeps stores in order; KCSAN did not see the
	// unlocked seed), the regression of the unserialised producers, and a
	// period read plainly beside its marked writers.
	ms, err := mutant.Load(filepath.Join(h.Root(), kmmap.MutantsDir), kmmap.DefaultMutantCell)
	if err != nil {
		t.Fatal(err)
	}
	changes := map[string]string{}
	for _, m := range ms {
		if m.Name != "ring-publish-relaxed" && m.Name != "ring-tail-relaxed" && m.Name != "pin-seed-unlocked" {
			continue
		}
		dir := t.TempDir()
		src, err := m.ApplyTo(h.Root(), h.module.Dir, dir)
		if err != nil {
			t.Fatal(err)
		}
		changes["mutant "+m.Name] = src
	}
	if len(changes) != 3 {
		t.Fatalf("want the mutants ring-publish-relaxed, ring-tail-relaxed and pin-seed-unlocked in %s, found %d", kmmap.MutantsDir, len(changes))
	}
	for _, reg := range regressions {
		if reg.name == "ring-producers-unserialised" {
			changes["regression "+reg.name] = editedModule(t, h.Root(), reg.name, reg.edits)
		}
	}
	changes["period read plainly"] = editedModule(t, h.Root(), "period read plainly", []edit{{"ring.c",
		"unsigned int period = READ_ONCE(ring->period_ms);", "unsigned int period = ring->period_ms;"}})
	for name, src := range changes {
		results, err := h.CheckLitmus(ctx, f, src, t.Logf)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var why []string
		for _, r := range results {
			if w := r.Failed(); w != "" {
				why = append(why, w)
			}
		}
		if len(why) == 0 {
			t.Errorf("%s: the litmus tests pass with ring.c changed", name)
			continue
		}
		t.Logf("%s: caught: %s", name, strings.Join(why, "; "))
	}
}
