package vmtests

import (
	"path/filepath"
	"strings"
	"testing"
)

// A report's frames in the module name the module's own source lines
// (kmmap_release is in kmod/main.c); frames of other modules and of the
// kernel are left alone.
func TestReportFramesInSources(t *testing.T) {
	tree := hostTree(t)
	root, _ := loadLock(t)
	src := filepath.Join(root, "kmod")
	// The module as the matrix builds it for this kernel (cached).
	ko, err := buildForHost(t, tree, kmmapModule(root), kmmapHarness(t).CacheDir())
	if err != nil {
		t.Fatal(err)
	}
	report := "[   19.418361] Call Trace:\n[   19.418400]  kmmap_release+0x21/0x120 [kmmap]\n[   19.418410]  other_fn+0x10/0x20 [other]\n[   19.418420]  __fput+0xff/0x2a0\n"
	lines := sourceLines(ko, src, []string{"kmmap_release+0x21/0x120 [kmmap]"})
	if len(lines) != 1 || !strings.Contains(lines[0], filepath.Join(src, "main.c")+":") || strings.Contains(lines[0], ".build-") {
		t.Errorf("kmmap_release+0x21 in %s: %q, want one line naming %s:<line>", ko, lines, filepath.Join(src, "main.c"))
	}
	c := &Cell{KmodSrc: src, kmod: &moduleBuild{done: closed(), ko: ko, name: "kmmap"}}
	got := c.withSources(report)
	if !strings.HasPrefix(got, report) || !strings.Contains(got, "kmmap_release+0x21/0x120 [kmmap]  "+filepath.Join(src, "main.c")+":") || strings.Contains(got, "other_fn+0x10/0x20 [other]  ") {
		t.Errorf("the report with its sources:\n%s", got)
	}
	t.Logf("the report with its sources:\n%s", got)
	if got := c.withSources("[    1.0] WARNING: no frames of the module\n"); strings.Contains(got, "sources") {
		t.Errorf("a report without the module's frames got sources:\n%s", got)
	}
}

func closed() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}
