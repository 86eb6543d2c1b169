package vmtests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// foreignCells are the cells TestForeignModule runs hello.ko on.
var foreignCells = []string{"6.1-amd64", "6.1-arm64"}

// TestForeignModule proves the harness runs a module that is not kmmap,
// and that kmmap init gives a user a project that works as written: the
// project it writes (a misc device with one ioctl and a read path, its
// guest tests, its host test; docs/your-module.md shows it) is run with
// go test through the public API, outside this repository. As written,
// every guest test passes on both cells; with its ioctl broken, TestAdd
// fails on each and TestRead still passes.
func TestForeignModule(t *testing.T) {
	bootsVMs(t)
	t.Parallel()
	h := kmmapHarness(t)
	var cells []string
	for _, id := range foreignCells {
		if h.Config().selects(id) {
			cells = append(cells, id)
		}
	}
	if len(cells) == 0 {
		t.Skipf("KMMAP_CELLS=%s selects neither of %s, which the foreign module runs on", strings.Join(h.Config().Cells, ","), strings.Join(foreignCells, ", "))
	}
	for _, c := range []struct {
		name   string
		broken bool
	}{{"works", false}, {"broken", true}} {
		t.Run(c.name, func(t *testing.T) {
			dir := foreignCopy(t, h.Root(), c.broken)
			// Through the script the reusable workflow runs for a cell.
			sel := strings.Join(cells, ",")
			cmd := exec.Command(filepath.Join(h.Root(), ".ci", "module"), sel, dir)
			cmd.Env = append(os.Environ(), "KMMAP_RESULTS="+h.ResultsDir("foreign-"+c.name))
			log, err := cmd.CombinedOutput()
			out, readErr := os.ReadFile(filepath.Join(dir, "test-"+sel+".json"))
			if readErr != nil {
				t.Fatalf(".ci/module left no test stream (%v): %v\n%s", readErr, err, log)
			}
			if junit, err := os.ReadFile(filepath.Join(dir, "junit-"+sel+".xml")); err != nil || !bytes.Contains(junit, []byte("<testsuites")) {
				t.Errorf(".ci/module left no JUnit report: %v", err)
			}
			got := testActions(out)
			for _, id := range cells {
				for test, want := range map[string]string{"TestRead": "pass", "TestAdd": "pass"} {
					if c.broken && test == "TestAdd" {
						want = "fail"
					}
					if name := "TestHello/" + id + "/" + test; got[name] != want {
						t.Errorf("%s: %q, want %q", name, got[name], want)
					}
				}
			}
			if (err != nil) != c.broken {
				t.Errorf(".ci/module on the %s module: %v", c.name, err)
			}
			if t.Failed() {
				t.Logf(".ci/module in %s:\n%s\ngo test's output:\n%s", dir, log, outputOf(out))
			}
		})
	}
}

// foreignCopy writes the project kmmap init makes (go run ./cmd/kmmap
// init, which requires this checkout of the harness), with hello's ioctl
// broken if broken.
func foreignCopy(t *testing.T, root string, broken bool) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "hello")
	cmd := exec.Command("go", "run", "./cmd/kmmap", "init", dst)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kmmap init: %v\n%s", err, out)
	}
	if broken {
		p := filepath.Join(dst, "kmod", "hello.c")
		b, err := os.ReadFile(p)
		old, new := "add.sum = add.a + add.b;", "add.sum = add.a - add.b;"
		if err != nil || !bytes.Contains(b, []byte(old)) {
			t.Fatalf("hello.c has no %q (%v)", old, err)
		}
		if err := os.WriteFile(p, bytes.Replace(b, []byte(old), []byte(new), 1), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// testActions is each test's last action in go test -json output.
func testActions(out []byte) map[string]string {
	got := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var e struct{ Action, Test string }
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Test != "" && (e.Action == "pass" || e.Action == "fail" || e.Action == "skip") {
			got[e.Test] = e.Action
		}
	}
	return got
}

// outputOf is the text of go test -json output.
func outputOf(out []byte) string {
	var b strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var e struct{ Action, Output string }
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Action == "output" {
			b.WriteString(e.Output)
		}
	}
	return b.String()
}
