package coverage

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kmmap/kmmap/kernels"
)

// The cells that profile the module are the ones built here with gcov:
// in kmmap's lock, the two debug cells; a distribution kernel never.
func TestCells(t *testing.T) {
	lock, err := kernels.LoadLock(filepath.Join("..", "..", "kernels", "kernels.lock"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Cells(lock)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"6.12-amd64-debug", "6.12-arm64-debug"}; !slices.Equal(got, want) {
		t.Errorf("Cells = %v, want %v", got, want)
	}
}

// A cell whose run left no tracefile is an error that says how to make
// one; no cell at all says what a cell needs; nothing is half written.
func TestMergeWithoutRuns(t *testing.T) {
	results := t.TempDir()
	out := filepath.Join(t.TempDir(), "report")
	_, err := Merge(t.TempDir(), out, func(id string) string { return filepath.Join(results, id) }, []string{"6.12-amd64-debug"})
	if err == nil || !strings.Contains(err.Error(), "make coverage") {
		t.Errorf("Merge of a cell with no run: %v, want an error naming make coverage", err)
	}
	if _, err := Merge(t.TempDir(), out, nil, nil); err == nil || !strings.Contains(err.Error(), "CONFIG_GCOV_KERNEL") {
		t.Errorf("Merge of no cells: %v, want an error saying what a cell needs", err)
	}
}
