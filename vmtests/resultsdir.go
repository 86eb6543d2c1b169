package vmtests

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
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
	f    *os.File
}

// claimResults takes dir for one run, or says which run has it.
func claimResults(dir string) (*resultsClaim, error) {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, err
	}
	lock := filepath.Join(filepath.Dir(dir), "."+filepath.Base(dir)+".lock")
	f, err := os.OpenFile(lock, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("results directory %s is in use by another run of this cell (in this process or another): "+
				"give one of them a results directory of its own (KMMAP_RESULTS, or CellOptions.ResultsID)", dir)
		}
		return nil, fmt.Errorf("locking results directory %s: %w", dir, err)
	}
	return &resultsClaim{f: f}, nil
}

// release lets another run have the directory; the files stay.
func (c *resultsClaim) release() {
	if c == nil {
		return
	}
	c.once.Do(func() { c.f.Close() })
}
