//go:build linux

package main

import (
	"slices"
	"testing"
)

// The tests listed at boot are filtered as -test.list would have: by the
// top level of -test.run, as a regexp.
func TestSelectTests(t *testing.T) {
	all := []string{"TestSamePages", "TestSamePagesLarge", "TestFork", "TestRing"}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{nil, all},
		{[]string{"-test.run=^TestSamePages$"}, []string{"TestSamePages"}},
		{[]string{"-kmmap.seed=1", "-test.run=TestSamePages/fault"}, []string{"TestSamePages", "TestSamePagesLarge"}},
		{[]string{"-test.run=Fork|Ring"}, []string{"TestFork", "TestRing"}},
	} {
		got, err := selectTests(all, listPattern(c.args))
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%q: %q, %v; want %q", c.args, got, err, c.want)
		}
	}
	if _, err := selectTests(all, listPattern([]string{"-test.run=^TestNone$"})); err == nil {
		t.Errorf("a pattern that matches no test: no error")
	}
	if _, err := selectTests(all, "(["); err == nil {
		t.Errorf("a bad pattern: no error")
	}
}
