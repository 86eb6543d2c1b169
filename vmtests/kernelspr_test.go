package vmtests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestKernelsPRScript runs .ci/kernels-pr, the last job of the kernels
// update workflow, on a copy of the checkout with a local bare repository
// as origin and a gh that records what it is asked: the new lock must be
// pushed to the kernels-update branch, and the pull request's body must
// carry what moved, each cell's results and the cells that have none.
func TestKernelsPRScript(t *testing.T) {
	t.Parallel()
	root, lock := loadLock(t)
	dir := t.TempDir()
	work := filepath.Join(dir, "work")
	copyCheckout(t, root, work)
	origin := filepath.Join(dir, "origin.git")
	git := func(dir string, args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	git(dir, "init", "-q", "--bare", origin)
	git(work, "init", "-q")
	git(work, "add", "-A")
	git(work, "commit", "-q", "-m", "base")
	git(work, "remote", "add", "origin", origin)

	// The artifacts the update and vmtest jobs upload: a lock whose first
	// cell moved, and one cell's test stream.
	arts := filepath.Join(dir, "artifacts")
	b, err := os.ReadFile(filepath.Join(root, "kernels", "kernels.lock"))
	if err != nil {
		t.Fatal(err)
	}
	first := lock.Kernels[0]
	newLock := strings.Replace(string(b), first.Release, first.Release+"-next", 1)
	cell := lock.Kernels[len(lock.Kernels)-1].ID
	stream := `{"Action":"run","Package":"github.com/kmmap/kmmap/vmtests","Test":"TestGuest"}
{"Action":"run","Package":"github.com/kmmap/kmmap/vmtests","Test":"TestGuest/` + cell + `"}
{"Action":"run","Package":"github.com/kmmap/kmmap/vmtests","Test":"TestGuest/` + cell + `/TestSamePages"}
{"Action":"pass","Package":"github.com/kmmap/kmmap/vmtests","Test":"TestGuest/` + cell + `/TestSamePages","Elapsed":0.5}
{"Action":"pass","Package":"github.com/kmmap/kmmap/vmtests","Test":"TestGuest/` + cell + `","Elapsed":20.5}
{"Action":"pass","Package":"github.com/kmmap/kmmap/vmtests","Test":"TestGuest","Elapsed":20.6}
{"Action":"pass","Package":"github.com/kmmap/kmmap/vmtests","Elapsed":21}
`
	for name, content := range map[string]string{
		"kernels-lock/kernels.lock":                   newLock,
		"kernels-lock/kernels-update.txt":             first.ID + ": " + first.Release + " -> " + first.Release + "-next\n",
		"vmtests-" + cell + "/test-" + cell + ".json": stream,
	} {
		p := filepath.Join(arts, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	bin := filepath.Join(dir, "bin")
	ghLog := filepath.Join(dir, "gh.log")
	fakeGH := `#!/bin/sh
echo "gh $*" >> "` + ghLog + `"
[ "$1 $2" = "pr view" ] && exit 1
while [ $# -gt 0 ]; do
	[ "$1" = --body-file ] && { echo "--- body"; cat "$2"; } >> "` + ghLog + `"
	shift
done
exit 0
`
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "gh"), []byte(fakeGH), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(work, ".ci", "kernels-pr"), arts)
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "GH_TOKEN=test")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf(".ci/kernels-pr: %v\n%s", err, out)
	}
	if got := git(origin, "show", "kernels-update:kernels/kernels.lock"); got != newLock {
		t.Errorf("origin's kernels-update branch does not hold the new lock")
	}
	logb, _ := os.ReadFile(ghLog)
	log := string(logb)
	for _, want := range []string{
		"gh pr create --head kernels-update",
		first.ID + ": " + first.Release + " -> " + first.Release + "-next",
		"| " + cell + " | ✅ pass |",
		"**No results**",
		" " + lock.Kernels[0].ID,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the pull request lacks %q; gh was asked:\n%s\nthe script said:\n%s", want, log, out)
		}
	}
}
