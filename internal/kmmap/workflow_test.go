package kmmap

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const workflowPath = ".github/workflows/vmtests.yml"

// workflow is the part of the GitHub Actions workflow the tests check.
type workflow struct {
	Jobs map[string]struct {
		Strategy struct {
			Matrix struct {
				Cell yaml.Node `yaml:"cell"` // a list, or an expression
			} `yaml:"matrix"`
		} `yaml:"strategy"`
		Env   map[string]string `yaml:"env"`
		Steps []struct {
			Uses string            `yaml:"uses"`
			Run  string            `yaml:"run"`
			With map[string]string `yaml:"with"`
		} `yaml:"steps"`
	} `yaml:"jobs"`
}

// TestWorkflowMatrix keeps one list of kernels: the workflow's matrix is
// the lock's cells, in the lock's order, and its kernel cache is keyed by
// the lock (and the debug cells' config fragments).
func TestWorkflowMatrix(t *testing.T) {
	root, lock := checkout(t)
	wf := readWorkflow(t, filepath.Join(root, workflowPath))
	job, ok := wf.Jobs["vmtest"]
	if !ok {
		t.Fatalf("%s has no vmtest job", workflowPath)
	}
	var got []string
	if err := job.Strategy.Matrix.Cell.Decode(&got); err != nil {
		t.Fatalf("%s: jobs.vmtest.strategy.matrix.cell: %v", workflowPath, err)
	}
	if want := lock.IDs(); !slices.Equal(got, want) {
		t.Errorf("%s: jobs.vmtest.strategy.matrix.cell is\n  %v\nbut kernels/kernels.lock has\n  %v\nmake them the same list (one job per cell, in lock order)", workflowPath, got, want)
	}
	keyed := false
	for _, s := range job.Steps {
		if strings.HasPrefix(s.Uses, "actions/cache@") {
			keyed = strings.Contains(s.With["key"], "hashFiles('kernels/kernels.lock'") && strings.Contains(s.With["key"], "kernels/config/")
		}
	}
	if !keyed {
		t.Errorf("%s: the vmtest job's actions/cache key must hash kernels/kernels.lock and kernels/config/**", workflowPath)
	}
}

func readWorkflow(t *testing.T, path string) workflow {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var wf workflow
	if err := yaml.Unmarshal(b, &wf); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return wf
}

// cellScript is the one command a workflow job runs a cell's tests with,
// the script TestCellJobAsUser runs as a normal user; runnerSetup is the
// action that does, before it, all a job does as root.
const (
	cellScript  = `.ci/cell "$KMMAP_CELLS"`
	runnerSetup = "./.github/actions/runner-setup"
	// The reusable workflow a module's repository calls checks kmmap out
	// in .kmmap and runs a cell through .ci/module (TestForeignModule
	// runs it on the project kmmap init writes).
	moduleWorkflow    = ".github/workflows/module.yml"
	moduleScript      = `.kmmap/.ci/module "$KMMAP_CELLS" "$MODULE_DIR" $PACKAGES`
	moduleRunnerSetup = "./.kmmap/.github/actions/runner-setup"
)

// TestWorkflowJobs: every job of every workflow that tests a cell does it
// through .ci/cell, as the runner's user, after runnerSetup, the one place
// that runs sudo (for `make deps`, KVM's udev rule and the user namespace
// sysctl): what TestCellJobAsUser proves for a normal user is what the
// workflows run.
func TestWorkflowJobs(t *testing.T) {
	root, _ := checkout(t)
	sudoOK := regexp.MustCompile(`^sudo (env PATH="\$PATH" make -C "\$GITHUB_ACTION_PATH/\.\./\.\./\.\." deps|sysctl -w kernel\.apparmor_restrict_unprivileged_userns=0|tee /etc/udev/rules\.d/99-kvm4all\.rules|udevadm control --reload-rules|udevadm trigger --name-match=kvm)$`)
	action, err := os.ReadFile(filepath.Join(root, runnerSetup, "action.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range regexp.MustCompile(`sudo [^;&|\n]*`).FindAllString(string(action), -1) {
		if !sudoOK.MatchString(strings.TrimSpace(cmd)) {
			t.Errorf("%s runs %q: root is for make deps, KVM's udev rule and the user namespace sysctl only", runnerSetup, cmd)
		}
	}
	paths, _ := filepath.Glob(filepath.Join(root, ".github", "workflows", "*.yml"))
	cellJobs := 0
	for _, p := range paths {
		rel, _ := filepath.Rel(root, p)
		for name, job := range readWorkflow(t, p).Jobs {
			setup, cell := -1, -1
			for i, s := range job.Steps {
				if s.Uses == runnerSetup || s.Uses == moduleRunnerSetup {
					setup = i
				}
				if strings.Contains(s.Run, ".ci/cell") || strings.Contains(s.Run, ".ci/module") {
					cell = i
				}
				for _, l := range strings.Split(s.Run, "\n") {
					if strings.Contains(l, "sudo") {
						t.Errorf("%s: job %s runs %q: only %s runs sudo", rel, name, strings.TrimSpace(l), runnerSetup)
					}
					if strings.Contains(l, "gotestsum") || strings.Contains(l, "go test") && strings.Contains(l, "-run") && strings.Contains(l, "TestGuest") {
						t.Errorf("%s: job %s runs the cells' tests itself (%q): run %s, the script TestCellJobAsUser checks", rel, name, strings.TrimSpace(l), cellScript)
					}
				}
			}
			if cell < 0 {
				continue
			}
			cellJobs++
			script := cellScript
			if rel == moduleWorkflow {
				script = moduleScript
			}
			if job.Steps[cell].Run != script || job.Env["KMMAP_CELLS"] != "${{ matrix.cell }}" {
				t.Errorf("%s: job %s must run %q with KMMAP_CELLS: ${{ matrix.cell }}", rel, name, script)
			}
			if setup < 0 || setup > cell {
				t.Errorf("%s: job %s runs %s without %s before it", rel, name, cellScript, runnerSetup)
			}
		}
	}
	if cellJobs < 3 {
		t.Errorf("%d workflow jobs run %s or %s; want the vmtests workflow's, the kernels update's and the module workflow's", cellJobs, cellScript, moduleScript)
	}
	for _, s := range []string{"cell", "module"} {
		script, err := os.ReadFile(filepath.Join(root, ".ci", s))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(script), "sudo") {
			t.Errorf(".ci/%s uses sudo: it runs as the runner's user", s)
		}
	}
}

// TestActionlint lints every workflow with actionlint (a tool of go.mod).
func TestActionlint(t *testing.T) {
	t.Parallel()
	root, _ := checkout(t)
	cmd := exec.Command("go", "tool", "actionlint")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("actionlint: %v\n%s", err, out)
	}
}
