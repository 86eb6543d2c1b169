package vmtests

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/kmmap/kmmap/internal/cache"
)

// resultsClaim is one run's hold on its results directory: the run
// empties it, QEMU reads the initramfs it keeps, and its console goes
// there, so two runs of one directory at once (the same cell in two go
// test processes, or two tests giving one ResultsID) would remove each
// other's files mid-boot ("qemu: error reading initrd"). The hold is an
// flock on a file beside the directory (the directory itself is emptied),
// which the kernel drops when the process ends, however it ends.
type resultsClaim struct {
	once sync.Once
	lock *cache.FileLock
}

// claimResults takes dir for one run, or says which run has it.
func claimResults(dir string) (*resultsClaim, error) {
	lock, err := cache.TryLockFile(filepath.Join(filepath.Dir(dir), "."+filepath.Base(dir)+".lock"))
	if errors.Is(err, cache.ErrLocked) {
		return nil, fmt.Errorf("results directory %s is in use by another run of this cell (in this process or another): "+
			"give one of them a results directory of its own (KMMAP_RESULTS, or CellOptions.ResultsID)", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("results directory %s: %w", dir, err)
	}
	return &resultsClaim{lock: lock}, nil
}

// release lets another run have the directory; the files stay.
func (c *resultsClaim) release() {
	if c == nil {
		return
	}
	c.once.Do(func() { c.lock.Unlock() })
}
