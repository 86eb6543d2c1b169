package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmmap/kmmap/vmtests"
)

// runCells are the cells the kmmap run tests boot: 6.1-amd64 and
// 6.1-arm64, those of them KMMAP_CELLS chooses when it is set.
func runCells(t *testing.T) []string {
	t.Helper()
	if testing.Short() {
		t.Skip("boots guests: not in -short")
	}
	// Results of their own: go test ./... runs vmtests (the same cells)
	// beside this package.
	t.Setenv("KMMAP_RESULTS", t.TempDir())
	cfg, err := vmtests.ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, id := range []string{"6.1-amd64", "6.1-arm64"} {
		if len(cfg.Cells) == 0 || strings.Contains(","+strings.Join(cfg.Cells, ",")+",", ","+id+",") {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		t.Skipf("KMMAP_CELLS=%s selects neither 6.1 cell to run commands in", strings.Join(cfg.Cells, ","))
	}
	return ids
}

// kmmapRun runs `kmmap run args...` in process and returns its status,
// standard output and standard error.
func kmmapRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut strings.Builder
	status := runCmd(t.Context(), args, &out, &errOut)
	t.Logf("kmmap run %s: %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), status, out.String(), errOut.String())
	return status, out.String(), errOut.String()
}

// A #!/bin/sh script in a temporary directory runs there in the guest
// with the module loaded, writes a file the host then reads, and its exit
// status comes back.
func TestRunScriptSharesDirectory(t *testing.T) {
	id := runCells(t)[0]
	dir := t.TempDir()
	script := "#!/bin/sh\necho \"in $(pwd) on $(uname -r)\"\ntest -c /dev/kmmap && echo device-present\necho from-the-guest > written.txt\nexit 3\n"
	if err := os.WriteFile(filepath.Join(dir, "repro.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	status, out, errOut := kmmapRun(t, id, "--dir", dir, "--", "./repro.sh")
	if status != 3 {
		t.Errorf("status %d, want the script's 3", status)
	}
	if !strings.Contains(out, "in "+dir+" on ") || !strings.Contains(out, "device-present") {
		t.Errorf("stdout %q: want the script to run in %s with /dev/kmmap present", out, dir)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "written.txt")); err != nil || string(b) != "from-the-guest\n" {
		t.Errorf("the file the guest wrote reads %q, %v on the host", b, err)
	}
	for _, want := range []string{"exit 3", "results: ", "rerun: ", "--dir " + dir, "-- ./repro.sh"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
}

// --cells runs the command on each cell and prints a line per cell; exit
// 0 everywhere is status 0, and --no-module boots without kmmap.ko.
func TestRunCells(t *testing.T) {
	ids := runCells(t)
	dir := t.TempDir()
	status, out, _ := kmmapRun(t, "--cells", strings.Join(ids, ","), "--no-module", "--dir", dir, "--",
		"sh", "-c", "test ! -e /dev/kmmap && uname -m > arch-$(uname -m)")
	if status != 0 {
		t.Errorf("status %d, want 0", status)
	}
	for _, id := range ids {
		if !strings.Contains(out, id) || !strings.Contains(out, "exit 0") {
			t.Errorf("no line saying %s exited 0 in:\n%s", id, out)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "arch-*"))
	if len(files) != len(ids) {
		t.Errorf("the guests wrote %q, want one file per cell", files)
	}
	if status, _, _ := kmmapRun(t, "--cells", strings.Join(ids, ","), "--no-module", "--dir", dir, "--", "sh", "-c", "exit 4"); status != 1 {
		t.Errorf("a command failing on every cell: status %d, want 1", status)
	}
}

// Bad usage is status 2, with the usage.
func TestRunUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"6.1-amd64"}, {"6.1-amd64", "--cells", "all", "--", "true"}} {
		if status, _, errOut := kmmapRun(t, args...); status != 2 || !strings.Contains(errOut, "usage: kmmap run") {
			t.Errorf("kmmap run %q: status %d, stderr %q; want 2 with the usage", args, status, errOut)
		}
	}
}

// kmmap's statuses reach a script as documented when it is started the
// way docs/running.md and the rerun line say, `go tool kmmap`: go run
// reports every failure as 1. A usage error is 2 (no guest needed).
func TestStatusThroughGoTool(t *testing.T) {
	cmd := exec.Command("go", "tool", "kmmap", "run")
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "usage: kmmap run") {
		t.Errorf("go tool kmmap run (no cell): %v, want exit status 2 and the usage\n%s", err, out)
	}
}
