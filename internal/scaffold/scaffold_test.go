package scaffold

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "my-dev")
	p := Project{Name: NameFor(dir), Go: "1.26", HarnessDir: "/src/kmmap"}
	files, err := Write(dir, p)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{".github/workflows/vmtests.yml", ".gitignore", "README.md", "go.mod", "guest/my_dev_test.go", "kmod/Kbuild", "kmod/my_dev.c", "my_dev_test.go"}
	slices.Sort(files)
	if !slices.Equal(files, want) {
		t.Errorf("wrote %q, want %q", files, want)
	}
	for file, wants := range map[string][]string{
		"go.mod":               {"module example.com/my_dev\n", "go 1.26\n", "require github.com/kmmap/kmmap v0.0.0\n", "replace github.com/kmmap/kmmap => /src/kmmap\n"},
		"kmod/Kbuild":          {"obj-m := my_dev.o\n"},
		"kmod/my_dev.c":        {"static int my_dev_open(", "#define MY_DEV_IOC_ADD _IOWR('J', 1, struct my_dev_add)", `.name = "my_dev",`},
		"my_dev_test.go":       {"package my_dev\n", "func TestMy_dev(t *testing.T) {", `Tags: []string{"my_dev_guest"}`},
		"guest/my_dev_test.go": {"//go:build my_dev_guest\n", `"/dev/my_dev"`, "/sys/module/my_dev/parameters/opens"},
		".gitignore":           {"/results/\n"},
	} {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range wants {
			if !strings.Contains(string(b), w) {
				t.Errorf("%s lacks %q:\n%s", file, w, b)
			}
		}
		if strings.Contains(string(b), "[[") {
			t.Errorf("%s has a template action left:\n%s", file, b)
		}
	}
	if _, err := Write(dir, p); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("writing into a project again: %v, want it refused", err)
	}
	if _, err := Write(t.TempDir(), Project{Name: "9lives"}); err == nil || !strings.Contains(err.Error(), "C identifier") {
		t.Errorf("name 9lives: %v, want it refused", err)
	}
}

// TestDocsShowTheScaffold: the code in docs/your-module.md is what kmmap
// init writes, file for file.
func TestDocsShowTheScaffold(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "hello")
	if _, err := Write(dir, Project{Name: "hello"}); err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/your-module.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```go\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	if len(blocks) != 2 {
		t.Fatalf("docs/your-module.md has %d Go blocks, want the host test and the guest test", len(blocks))
	}
	for i, file := range []string{"hello_test.go", "guest/hello_test.go"} {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if blocks[i][1] != string(b) {
			t.Errorf("docs/your-module.md's Go block %d is not the scaffold's %s:\n%s\nwant:\n%s", i+1, file, blocks[i][1], b)
		}
	}
}
