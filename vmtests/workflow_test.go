package vmtests

import (
	"os"
	"os/exec"
	"path/filepath"
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
				Cell []string `yaml:"cell"`
			} `yaml:"matrix"`
		} `yaml:"strategy"`
		Steps []struct {
			Uses string            `yaml:"uses"`
			With map[string]string `yaml:"with"`
		} `yaml:"steps"`
	} `yaml:"jobs"`
}

// TestWorkflowMatrix keeps one list of kernels: the workflow's matrix is
// the lock's cells, in the lock's order, and its kernel cache is keyed by
// the lock (and the debug cells' config fragments).
func TestWorkflowMatrix(t *testing.T) {
	root, lock := loadLock(t)
	b, err := os.ReadFile(filepath.Join(root, workflowPath))
	if err != nil {
		t.Fatal(err)
	}
	var wf workflow
	if err := yaml.Unmarshal(b, &wf); err != nil {
		t.Fatalf("%s: %v", workflowPath, err)
	}
	job, ok := wf.Jobs["vmtest"]
	if !ok {
		t.Fatalf("%s has no vmtest job", workflowPath)
	}
	if got, want := job.Strategy.Matrix.Cell, lock.IDs(); !slices.Equal(got, want) {
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

// TestActionlint lints every workflow with actionlint (a tool of go.mod).
func TestActionlint(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "tool", "actionlint")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("actionlint: %v\n%s", err, out)
	}
}
