package vmtests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Two runs of one results directory at once removed each other's
// initramfs mid-boot (TestGDBStub and TestGuest in one user's job: "qemu:
// error reading initrd"); now the second is refused, saying what to do,
// until the first is over.
func TestResultsClaimedByOneRun(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "results", "6.1-amd64")
	first, err := claimResults(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := claimResults(dir); err == nil || !strings.Contains(err.Error(), "in use by another run") || !strings.Contains(err.Error(), "KMMAP_RESULTS") {
		t.Errorf("a second claim of %s while the first holds it: %v, want refused naming KMMAP_RESULTS", dir, err)
	}
	other, err := claimResults(dir + "-gdb")
	if err != nil {
		t.Errorf("a claim of another directory: %v", err)
	}
	other.release()
	first.release()
	first.release() // twice is fine
	again, err := claimResults(dir)
	if err != nil {
		t.Fatalf("a claim after the first run released it: %v", err)
	}
	again.release()
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), ".6.1-amd64.lock")); err != nil {
		t.Errorf("the lock file beside the directory: %v", err)
	}
}
