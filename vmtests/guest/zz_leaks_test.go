//go:build kmmap_guest

package guest

import (
	"errors"
	"io/fs"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kmmap/kmmap/vmtests/testmain"
)

// pageOwnerStacks is page_owner's table of the stacks that allocated the
// pages allocated now, with how many each (6.10+, page_owner=on).
const pageOwnerStacks = "/sys/kernel/debug/page_owner_stacks/show_stacks"

// notTheModulesPages are frames between the module and the page
// allocator on a path that allocated a page that is not the module's to
// free: a slab page other objects share, KASAN's shadow of vmalloc space
// and kernel page tables (both kept until vmalloc's lazy purge, or for
// good), a user page faulted in by a copy to or from userland or by
// pinning (the process's own).
var notTheModulesPages = regexp.MustCompile(`(^|\s)(allocate_slab|new_slab|kasan_\w+|_*p(te|md|ud|4d)_alloc\w*|handle_mm_fault)\+`)

// TestPagesLeaked runs after every other test (Go runs a package's tests
// in file order, and this file sorts last): every file the suite opened is
// closed, so the module must hold no page. page_owner counts the pages
// each allocation stack holds now; a stack through the module that still
// holds pages is a leak the module's own counters (live_buffers) cannot
// see: a page a buffer lost on its way back.
func TestPagesLeaked(t *testing.T) {
	mark(t)
	testmain.AfterParallel(t) // after the tests run in parallel too
	b, err := os.ReadFile(pageOwnerStacks)
	if errors.Is(err, fs.ErrNotExist) {
		t.Skip("SKIP LOUDLY: no " + pageOwnerStacks + " (CONFIG_PAGE_OWNER, page_owner=on, 6.10+: the debug cells)")
	}
	if err != nil {
		t.Fatal(err)
	}
	if n := moduleCounter(t, "live_buffers"); n != 0 {
		t.Fatalf("%d buffers are still allocated after the suite: a file is still open", n)
	}
	held, leaks := moduleStacks(string(b))
	if held > 0 {
		t.Errorf("%d pages allocated through the module are still allocated with no file open (page_owner):\n%s", held, strings.Join(leaks, "\n"))
	}
}

// moduleStacks sums the pages held by the stacks of show_stacks that went
// through the module and allocated a page of its own.
func moduleStacks(table string) (held int, stacks []string) {
	for _, block := range strings.Split(table, "\n\n") {
		path, _, through := strings.Cut(block, "[kmmap]") // the allocator's frames, innermost first
		if !through || notTheModulesPages.MatchString(path) {
			continue
		}
		i := strings.LastIndex(block, "nr_base_pages: ")
		if i < 0 {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(block[i+len("nr_base_pages: "):]))
		if err != nil || n <= 0 {
			continue
		}
		held += n
		stacks = append(stacks, strings.TrimSpace(block))
	}
	return held, stacks
}

// kmemleak is kmemleak's control and report file (CONFIG_DEBUG_KMEMLEAK).
const kmemleak = "/sys/kernel/debug/kmemleak"

// kmemleakMinAge is how old an object must be before kmemleak reports it
// (MSECS_MIN_AGE in mm/kmemleak.c): a younger one may be on its way to
// the pointer that will hold it.
const kmemleakMinAge = 5 * time.Second

// TestSlabLeaked runs after every other test, like TestPagesLeaked:
// kmemleak scans memory for pointers, and no object allocated through the
// module may be left that nothing points to. A slab object an error path
// lost (a kmmap_file after a failed open, say) is invisible to page_owner,
// which sees the slab page it shares with others. The scan waits out
// kmemleak's minimum age first, so that the last test's objects count.
func TestSlabLeaked(t *testing.T) {
	mark(t)
	testmain.AfterParallel(t)
	if _, err := os.Stat(kmemleak); errors.Is(err, fs.ErrNotExist) {
		t.Skip("SKIP LOUDLY: no " + kmemleak + " (CONFIG_DEBUG_KMEMLEAK: the debug cells)")
	}
	time.Sleep(kmemleakMinAge)
	start := time.Now()
	// Not the tasks' kernel stacks: with no file open the module holds
	// nothing a stack should point to, and a stale copy of a pointer in
	// a stack's unused depth can hide a leak. Two scans: kmemleak does not
	// report an object whose contents changed since the scan before
	// (its checksum), and the first scan of a new object is such a
	// change; with one, no run here reported even a file the module
	// never freed.
	for _, cmd := range []string{"stack=off", "scan", "scan"} {
		if err := os.WriteFile(kmemleak, []byte(cmd), 0); err != nil {
			t.Fatalf("kmemleak %s: %v", cmd, err)
		}
	}
	b, err := os.ReadFile(kmemleak)
	if err != nil {
		t.Fatal(err)
	}
	leaks := moduleLeaks(string(b))
	t.Logf("kmemleak scanned in %v: %d unreferenced objects, %d allocated through the module", time.Since(start).Round(time.Millisecond), strings.Count(string(b), "unreferenced object"), len(leaks))
	if len(leaks) > 0 {
		t.Errorf("%d objects allocated through the module are left with nothing pointing to them (kmemleak):\n%s", len(leaks), strings.Join(leaks, "\n"))
	}
}

// moduleLeaks returns kmemleak's reports ("unreferenced object ...", a
// blank line apart or each starting its own) whose allocation backtrace
// goes through the module.
func moduleLeaks(report string) []string {
	var out []string
	for _, r := range strings.Split(report, "unreferenced object ")[1:] {
		if strings.Contains(r, "[kmmap]") {
			out = append(out, "unreferenced object "+strings.TrimSpace(r))
		}
	}
	return out
}
