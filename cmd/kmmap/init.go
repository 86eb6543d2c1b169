package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/kmmap/kmmap/internal/lifeline"
	"github.com/kmmap/kmmap/internal/scaffold"
)

// initModule writes a new out-of-tree module project into a directory
// (kmmap init) and tidies its go.mod, so that go test ./... there runs.
func initModule(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	name := fs.String("name", "", "the module's name: the .ko, /dev/<name>, the Go package (default: the directory's name)")
	module := fs.String("module", "", "the Go module path (default: example.com/<name>)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: kmmap init [-name NAME] [-module PATH] DIR")
	}
	dir := fs.Arg(0)
	p := scaffold.Project{Name: *name, Module: *module, Go: goLine(runtime.Version())}
	if p.Name == "" {
		p.Name = scaffold.NameFor(dir)
	}
	var err error
	if p.Version, p.HarnessDir, err = harnessRef(); err != nil {
		return err
	}
	files, err := scaffold.Write(dir, p)
	if err != nil {
		return err
	}
	// go.sum and the requirements the harness brings; from a checkout,
	// its go.sum first, so that tidy finds what it needs in Go's module
	// cache when that holds the harness's modules.
	if p.HarnessDir != "" {
		if b, err := os.ReadFile(filepath.Join(p.HarnessDir, "go.sum")); err == nil {
			if err := os.WriteFile(filepath.Join(dir, "go.sum"), b, 0o644); err != nil {
				return err
			}
		}
	}
	tidy := lifeline.Tie(exec.CommandContext(ctx, "go", "mod", "tidy"))
	tidy.Dir = dir
	if b, err := tidy.CombinedOutput(); err != nil {
		return fmt.Errorf("the project is written, but go mod tidy in %s failed (%v): run it there once Go's module proxy is reachable\n%s", dir, err, b)
	}
	fmt.Fprintf(out, "wrote %s: %s, go.sum\nnext: cd %s && go test ./...\n", dir, strings.Join(files, ", "), dir)
	return nil
}

// goLine is the go line for go.mod from a Go version ("go1.26.8").
func goLine(v string) string {
	if m := regexp.MustCompile(`go(\d+\.\d+(\.\d+)?)`).FindStringSubmatch(v); m != nil {
		return m[1]
	}
	return "1.26"
}

// harnessRef is the kmmap a new project requires: the checkout this
// program was built from (replace), or the version it was built at (go
// run github.com/kmmap/kmmap/cmd/kmmap@VERSION).
func harnessRef() (version, dir string, err error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		root := filepath.Dir(filepath.Dir(filepath.Dir(file)))
		if b, err := os.ReadFile(filepath.Join(root, "go.mod")); err == nil && strings.HasPrefix(string(b), "module github.com/kmmap/kmmap\n") {
			return "v0.0.0", root, nil
		}
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Path == "github.com/kmmap/kmmap" &&
		bi.Main.Version != "" && bi.Main.Version != "(devel)" && !strings.HasSuffix(bi.Main.Version, "+dirty") {
		return bi.Main.Version, "", nil
	}
	return "", "", errors.New("cannot tell which kmmap the project should require: run it from a checkout (go run ./cmd/kmmap init DIR) or at a version (go run github.com/kmmap/kmmap/cmd/kmmap@VERSION init DIR)")
}
