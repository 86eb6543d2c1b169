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

// TestForeignModule proves the harness runs a module that is not kmmap:
// testdata/foreign is a Go module of its own (a misc device with one
// ioctl and a read path, its guest tests, its 15-line host test, the
// README's "Your own module"), copied out of this repository and run with
// go test through the public API. As it is, every guest test passes on
// both cells; with its ioctl broken, TestAdd fails on each and TestRead
// still passes.
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
			cmd := exec.Command("go", "test", "-count=1", "-json", "-timeout=30m", "-run=^TestHello$", ".")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "KMMAP_CELLS="+strings.Join(cells, ","), "KMMAP_RESULTS="+h.ResultsDir("foreign-"+c.name))
			out, err := cmd.Output()
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
				t.Errorf("go test of the %s module: %v", c.name, err)
			}
			if t.Failed() {
				t.Logf("go test -json in %s:\n%s", dir, outputOf(out))
			}
		})
	}
}

// foreignCopy copies testdata/foreign out of this repository, pointing its
// go.mod at this checkout of the harness, with hello's ioctl broken if
// broken.
func foreignCopy(t *testing.T, root string, broken bool) string {
	t.Helper()
	src := filepath.Join(root, "vmtests", "testdata", "foreign")
	dst := filepath.Join(t.TempDir(), "hello")
	var files []string
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(src, p)
			files = append(files, rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := copyFiles(dst, src, files); err != nil {
		t.Fatal(err)
	}
	edit := func(file, old, new string) {
		p := filepath.Join(dst, file)
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte(old)) {
			t.Fatalf("%s has no %q (%v)", file, old, err)
		}
		if err := os.WriteFile(p, bytes.Replace(b, []byte(old), []byte(new), 1), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	edit("go.mod", "=> ../../..", "=> "+root)
	if broken {
		edit("kmod/hello.c", "add.sum = add.a + add.b;", "add.sum = add.a - add.b;")
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
