package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

// TestCIRunFirstVerdict: the bench finds the first cell's verdict in what
// kmmap report prints, not in a line that only looks like one.
func TestCIRunFirstVerdict(t *testing.T) {
	var out bytes.Buffer
	report(nil, strings.NewReader(stream), &out)
	v := readCIRun(strings.NewReader("go vet ./...\nPASS: not a cell\n"+out.String()), time.Now())
	if v.firstCell != "6.1-amd64" || v.first <= 0 {
		t.Errorf("first verdict %q at %s, want 6.1-amd64's, from:\n%s", v.firstCell, v.first, out.String())
	}
	if len(v.tail) == 0 || v.tail[len(v.tail)-1] != strings.TrimSpace(out.String()[strings.LastIndex(strings.TrimSpace(out.String()), "\n")+1:]) {
		t.Errorf("tail ends %q", v.tail)
	}
}

// TestBenchBlocks: a run of one part replaces its block, stamped, and
// keeps the others; a file from before the blocks is replaced whole.
func TestBenchBlocks(t *testing.T) {
	blocks := splitBlocks("# kmmap benchmarks\n\nold, unmarked\n\n## The whole matrix\n\n| a |\n")
	if len(blocks) != 0 {
		t.Fatalf("an unmarked file has blocks: %q", blocks)
	}
	blocks["cold"] = stampBlock("\n## Cold\n\n| cold |\n", "_stamp cold_")
	blocks["decisions"] = "## Why\n\nmeasured by hand\n"
	blocks["edit"] = stampBlock("\n## Edit\n\n| edit |\n", "_stamp edit_")
	md := joinBlocks(blocks)
	again := splitBlocks(md)
	again["edit"] = stampBlock("\n## Edit\n\n| edit 2 |\n", "_stamp edit 2_")
	md = joinBlocks(again)
	for _, want := range []string{"## Cold\n\n_stamp cold_\n\n| cold |", "## Edit\n\n_stamp edit 2_\n\n| edit 2 |", partMark + "decisions -->\n## Why\n\nmeasured by hand\n"} {
		if !strings.Contains(md, want) {
			t.Errorf("BENCHMARKS.md lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "| edit |") || strings.Index(md, "## Cold") > strings.Index(md, "## Edit") || strings.Index(md, "## Edit") > strings.Index(md, "## Why") || !strings.HasPrefix(md, benchHeader) {
		t.Errorf("the old block kept, the parts out of order or no header:\n%s", md)
	}
}

// TestBenchmarksFileBlocks: BENCHMARKS.md as committed is blocks the
// bench keeps: written back from its blocks, it is the same file.
func TestBenchmarksFileBlocks(t *testing.T) {
	b, err := os.ReadFile("../../BENCHMARKS.md")
	if err != nil {
		t.Fatal(err)
	}
	if got := joinBlocks(splitBlocks(string(b))); got != string(b) {
		t.Errorf("BENCHMARKS.md does not survive a bench run of no part:\n%s", got)
	}
}
