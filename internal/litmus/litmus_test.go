package litmus

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func load(t *testing.T) Test {
	t.Helper()
	ts, err := Load("testdata")
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 1 {
		t.Fatalf("%d tests in testdata, want 1", len(ts))
	}
	return ts[0]
}

// TestCheckInStep: the fixture's threads access what they bind as its C
// does; an address passed to lockdep is not an access.
func TestCheckInStep(t *testing.T) {
	lt := load(t)
	if lt.Result != "Never" || len(lt.Source) != 2 || lt.Binds["head"] != "ring->hdr->head" {
		t.Fatalf("parsed %+v", lt)
	}
	ms, err := lt.Check("testdata")
	if err != nil || len(ms) != 0 {
		t.Fatalf("Check = %v, %v; want in step", ms, err)
	}
}

// TestDerive: a barrier relaxed or a lock dropped in the C gives the
// litmus test of the C as it is; what cannot be rewritten says so.
func TestDerive(t *testing.T) {
	lt := load(t)
	c, err := os.ReadFile("testdata/mp.c")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, old, new string
		want, gone     []string
		mismatches     int
	}{
		{"release relaxed", "smp_store_release(&ring->hdr->head, ring->head)", "WRITE_ONCE(ring->hdr->head, ring->head)",
			[]string{"WRITE_ONCE(*head, 1);"}, []string{"smp_store_release"}, 1},
		{"plain store", "smp_store_release(&ring->hdr->head, ring->head)", "ring->hdr->head = ring->head",
			[]string{"\t*head = 1;"}, []string{"smp_store_release"}, 1},
		// The lock, and head's load no longer under it.
		{"lock dropped", "\tspin_lock(&ring->lock);\n", "",
			nil, []string{"spin_lock(l)", "spin_unlock(l)"}, 2},
	} {
		dir := t.TempDir()
		mut := strings.Replace(string(c), tc.old, tc.new, 1)
		if tc.name == "lock dropped" {
			mut = strings.Replace(mut, "\tspin_unlock(&ring->lock);\n", "", 1)
		}
		if err := os.WriteFile(filepath.Join(dir, "mp.c"), []byte(mut), 0o644); err != nil {
			t.Fatal(err)
		}
		ms, err := lt.Check(dir)
		if err != nil || len(ms) != tc.mismatches {
			t.Fatalf("%s: Check = %v, %v; want %d mismatches", tc.name, ms, err, tc.mismatches)
		}
		text, err := lt.Derive(ms)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(text, w) {
				t.Errorf("%s: derived test lacks %q:\n%s", tc.name, w, text)
			}
		}
		for _, g := range tc.gone {
			if strings.Contains(text[strings.Index(text, "{}"):], g) {
				t.Errorf("%s: derived test still has %q:\n%s", tc.name, g, text)
			}
		}
	}
	// The acquire moved out of the lock: the same kinds, another lock
	// held; no rewriting.
	moved := strings.Replace(strings.Replace(string(c), "\tspin_lock(&ring->lock);\n\tif (smp_load_acquire(&ring->hdr->head))", "\tif (smp_load_acquire(&ring->hdr->head))", 1),
		"\t\tr = READ_ONCE(ring->rec[0]);\n", "\t\tr = READ_ONCE(ring->rec[0]);\n\tspin_lock(&ring->lock);\n", 1)
	dir0 := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir0, "mp.c"), []byte(moved), 0o644); err != nil {
		t.Fatal(err)
	}
	if ms, err := lt.Check(dir0); err != nil || len(ms) != 1 || !ms[0].Held {
		t.Fatalf("acquire moved out of the lock: Check = %v, %v; want one mismatch of the locks held", ms, err)
	} else if _, err := lt.Derive(ms); err == nil || !strings.Contains(err.Error(), "rewrite the litmus test") {
		t.Errorf("Derive of an access moved out of its lock: err = %v, want one saying to rewrite the test", err)
	}
	// Two kinds where the test has one: no rewriting.
	dir := t.TempDir()
	mut := strings.Replace(string(c), "\tring->rec[0] = 1;\n", "\tring->rec[0] = READ_ONCE(ring->hdr->head);\n", 1)
	if err := os.WriteFile(filepath.Join(dir, "mp.c"), []byte(mut), 0o644); err != nil {
		t.Fatal(err)
	}
	ms, err := lt.Check(dir)
	if err != nil || len(ms) != 1 {
		t.Fatalf("Check = %v, %v", ms, err)
	}
	if _, err := lt.Derive(ms); err == nil || !strings.Contains(err.Error(), "rewrite the litmus test") {
		t.Errorf("Derive of a thread the C accesses two ways: err = %v, want one saying to rewrite the test", err)
	}
}

// TestWeakened: one variant per bound barrier or lock, each one step
// weaker.
func TestWeakened(t *testing.T) {
	lt := load(t)
	w := lt.Weakened()
	if len(w) != 3 {
		t.Fatalf("%d variants, want 3 (P0's release, P1's acquire and lock): %v", len(w), w)
	}
	if v := w["P0 head with WRITE_ONCE"]; !strings.Contains(v, "WRITE_ONCE(*head, 1)") {
		t.Errorf("release relaxed:\n%s", v)
	}
	if v := w["P1 without spin_lock/spin_unlock"]; strings.Contains(v, "spin_lock(l)") || !strings.Contains(v, "smp_load_acquire(head)") {
		t.Errorf("lock dropped:\n%s", v)
	}
	if v := w["P1 head with READ_ONCE"]; !strings.Contains(v, "r0 = READ_ONCE(*head);") {
		t.Errorf("acquire relaxed:\n%s", v)
	}
}

// TestParseErrors: a header that cannot be used says what is missing.
func TestParseErrors(t *testing.T) {
	for text, want := range map[string]string{
		"C x\n\n{}\n\nP0(int *a)\n{\n}\n":                                                     "Result",
		"C x\n(*\n * Result: Never\n * Binds: a = b *)\n{}\nP0(int *a)\n{\n}\n":               "no thread names its source",
		"C x\n(*\n * Result: Never\n * P0: a.c f\n *)\n{}\nP0(int *a)\n{\n}\n":                "no Binds line",
		"C x\n(*\n * Result: Never\n * P1: a.c f\n * Binds: a = b *)\n{}\nP0(int *a)\n{\n}\n": "no thread P1",
		"C x\n(*\n * Result: Never\n * P0: a.c f\n * Binds: a *)\n{}\nP0(int *a)\n{\n}\n":     "variable = C expression",
	} {
		if _, err := Parse("x.litmus", text); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error with %q", text, err, want)
		}
	}
}
