package vmtests

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hugelgupf/vmtest/qemu"
	"github.com/kmmap/kmmap/kernels"
	"golang.org/x/sys/unix"
)

// BootMode is how a guest came to run its job.
type BootMode string

const (
	// Cold: the kernel booted, no snapshot involved.
	Cold BootMode = "cold"
	// Saved: the kernel booted, QEMU saved the guest at the agent's
	// ready point into the cache, then the run went on.
	Saved BootMode = "saved"
	// Restored: QEMU restored the guest saved at the ready point.
	Restored BootMode = "restored"
)

// A snapshot is a guest saved by QEMU (its migration stream) where the
// agent waits for its job: booted, its kernel's own modules loaded, the
// module under test not yet. It is keyed by everything that made that
// guest (the QEMU binary's version, its machine and arguments, the kernel
// image, the initramfs and the kernel's command line), so any change
// boots cold once and saves a new one. What a run does (its tests, the
// module under test, a command, the time and fresh entropy) comes after,
// as the run's event.Job.

// snapshots is where a harness keeps its snapshots, and what it has
// already hashed and asked QEMU.
type snapshots struct {
	dir string
	mu  sync.Mutex
	// hashes of files by path, size and modification time; versions of
	// QEMU binaries by name.
	hashes   map[string]string
	versions map[string]string
}

func newSnapshots(dir string) *snapshots {
	return &snapshots{dir: dir, hashes: map[string]string{}, versions: map[string]string{}}
}

// snapshotPolicy is a cell's: the harness's store, or why the cell boots
// cold.
type snapshotPolicy struct {
	store *snapshots
	cold  string
}

// snapshotPolicy says whether a cell with these options restores
// snapshots.
func (h *Harness) snapshotPolicy(gdb bool) snapshotPolicy {
	p := snapshotPolicy{store: h.snaps}
	switch {
	case h.cfg.Cold:
		p.cold = "KMMAP_SNAPSHOT=0"
	case gdb:
		p.cold = "with a gdb stub the guest starts halted before its first instruction, to be debugged from there"
	}
	return p
}

// key names the snapshot of cell c's guest.
func (s *snapshots) key(c *Cell) (string, error) {
	version, err := s.qemuVersion(c.Arch.QEMU)
	if err != nil {
		return "", err
	}
	img, err := s.hash(c.Image)
	if err != nil {
		return "", err
	}
	initrd, err := s.hash(c.Initramfs)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "kmmap-snapshot-v1\n%s\n%s %q\n%q\n%q\n%s\n%s\n", version, c.Arch.QEMU, c.Arch.Machine, c.QEMUArgs, c.KernelArgs, img, initrd)
	return c.ID + "-" + hex.EncodeToString(h.Sum(nil))[:16], nil
}

// hash is a file's SHA-256, remembered by its path, size and time.
func (s *snapshots) hash(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	id := fmt.Sprintf("%s\x00%d\x00%d", path, fi.Size(), fi.ModTime().UnixNano())
	s.mu.Lock()
	sum, ok := s.hashes[id]
	s.mu.Unlock()
	if ok {
		return sum, nil
	}
	if sum, err = kernels.HashFile(path); err != nil {
		return "", err
	}
	s.mu.Lock()
	s.hashes[id] = sum
	s.mu.Unlock()
	return sum, nil
}

// qemuVersion is what `qemu --version` prints first: a snapshot restores
// only into the QEMU that saved it.
func (s *snapshots) qemuVersion(qemu string) (string, error) {
	s.mu.Lock()
	v, ok := s.versions[qemu]
	s.mu.Unlock()
	if ok {
		return v, nil
	}
	out, err := exec.Command(qemu, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", qemu, err)
	}
	v, _, _ = strings.Cut(string(out), "\n")
	s.mu.Lock()
	s.versions[qemu] = v
	s.mu.Unlock()
	return v, nil
}

// snapshotMeta is written beside each snapshot, for a person.
type snapshotMeta struct {
	Cell    string    `json:"cell"`
	QEMU    string    `json:"qemu"`
	Kernel  string    `json:"kernel"`
	Created time.Time `json:"created"`
	Bytes   int64     `json:"bytes"`
	SaveMs  int64     `json:"save_ms"`
}

// plan is how one boot of a cell uses snapshots: the mode, the state to
// restore or to save into, and for saving the lock to let go of once it
// is published.
type plan struct {
	mode  BootMode
	state string
	key   string
	lock  *os.File
}

// state is where the snapshot named key is kept.
func (s *snapshots) state(key string) string { return filepath.Join(s.dir, key+".state") }

// lock takes the lock that makes one run of many create the snapshot
// named key, waiting while another holds it.
func (s *snapshots) lock(ctx context.Context, key string) (*os.File, error) {
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(s.dir, key+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// unlock lets go of a plan's lock, if it holds one.
func (p *plan) unlock() {
	if p.lock != nil {
		p.lock.Close()
		p.lock = nil
	}
}

// publish moves a saved state into place, atomically: a concurrent run
// sees no snapshot or a whole one.
func (s *snapshots) publish(tmp string, p *plan, meta snapshotMeta) error {
	f, err := os.Open(tmp)
	if err != nil {
		return err
	}
	err = f.Sync()
	fi, statErr := f.Stat()
	f.Close()
	if err = errors.Join(err, statErr); err != nil {
		return err
	}
	meta.Bytes = fi.Size()
	b, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.dir, p.key+".json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p.state)
}

// remove deletes a snapshot that did not restore.
func (s *snapshots) remove(key string) {
	os.Remove(s.state(key))
	os.Remove(filepath.Join(s.dir, key+".json"))
}

// boot runs cell's VM to the end: restored from its snapshot when there
// is one, else booted cold and saved at the ready point for the runs
// after it. A snapshot that does not restore (corrupt, cut short, or the
// guest in it does not answer) is removed and the cell boots cold, with
// a note saying so.
func boot(ctx context.Context, cell *Cell) run {
	if cell.snap.cold != "" || cell.snap.store == nil {
		r := bootVM(ctx, cell, &plan{mode: Cold})
		cell.mode = Cold
		return r
	}
	s := cell.snap.store
	key, err := s.key(cell)
	if err != nil {
		r := bootVM(ctx, cell, &plan{mode: Cold})
		r.notes = append(r.notes, fmt.Sprintf("booted cold: naming the snapshot failed: %v", err))
		cell.mode = Cold
		return r
	}
	var notes []string
	restore := func() (run, bool) {
		p := &plan{mode: Restored, state: s.state(key), key: key}
		if _, err := os.Stat(p.state); err != nil {
			return run{}, false
		}
		r := bootVM(ctx, cell, p)
		if r.jobSeen || ctx.Err() != nil {
			now := time.Now()
			os.Chtimes(p.state, now, now) // in use: kernels prune keeps it
			return r, true
		}
		s.remove(key)
		notes = append(notes, fmt.Sprintf("the snapshot %s did not restore (removed; booting cold and saving a new one): %s", p.state, restoreFailure(r)))
		return r, false
	}
	if r, ok := restore(); ok {
		cell.mode = Restored
		r.notes = append(notes, r.notes...)
		return r
	}
	lock, err := s.lock(ctx, key)
	if err != nil {
		r := bootVM(ctx, cell, &plan{mode: Cold})
		r.notes = append(notes, fmt.Sprintf("booted cold: %v", err))
		cell.mode = Cold
		return r
	}
	// Another run may have saved it while this one waited for the lock.
	if r, ok := restore(); ok {
		lock.Close()
		cell.mode = Restored
		r.notes = append(notes, r.notes...)
		return r
	}
	p := &plan{mode: Saved, state: s.state(key), key: key, lock: lock}
	r := bootVM(ctx, cell, p)
	p.unlock()
	cell.mode = p.mode // Cold if saving failed
	r.notes = append(notes, r.notes...)
	return r
}

// restoreFailure says why a restore gave no guest that took its job.
func restoreFailure(r run) string {
	var why []string
	if r.err != nil {
		why = append(why, "QEMU: "+r.err.Error())
	}
	why = append(why, r.notes...)
	if t := strings.TrimSpace(r.con.tail(5)); t != "" {
		why = append(why, "last output: "+t)
	}
	if len(why) == 0 {
		return "the guest never took its job"
	}
	return strings.Join(why, "; ")
}

// restoreWait bounds how long a restored guest may take to take its job
// before the snapshot counts as broken (it takes well under a second).
const restoreWait = 30 * time.Second

// snapshotDevice sets QEMU up for p: for a cold boot it releases the job
// as soon as QEMU runs; to save, it adds a QMP monitor and a task that,
// when the agent is ready, saves the guest, publishes the snapshot and
// releases the job; to restore, it adds the saved state as QEMU's
// incoming migration and a task that releases the job once the guest
// runs, and kills the VM if the guest does not take it.
func (c *Cell) snapshotDevice(p *plan, release, ready, took chan struct{}, kill func(), note func(string, ...any), times func(func(*Timeline))) (qemu.Fn, error) {
	if p.mode == Cold {
		close(release)
		return func(*qemu.IDAllocator, *qemu.Options) error { return nil }, nil
	}
	dir, err := os.MkdirTemp("", "kmmap-qmp-")
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "qmp")
	var state *os.File
	if p.mode == Restored {
		if state, err = os.Open(p.state); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	store := c.snap.store
	return func(_ *qemu.IDAllocator, opts *qemu.Options) error {
		opts.AppendQEMU("-qmp", "unix:"+sock+",server=on,wait=off")
		if state != nil {
			opts.AppendQEMU("-incoming", fmt.Sprintf("fd:%d", opts.AddFile(state)))
		}
		opts.Tasks = append(opts.Tasks, func(ctx context.Context, n *qemu.Notifications) error {
			defer os.RemoveAll(dir)
			select {
			case <-n.VMStarted:
				if state != nil {
					state.Close() // QEMU has it
				}
			case <-ctx.Done():
				return nil
			}
			start := time.Now()
			mon, err := dialMonitor(ctx, sock)
			if err != nil {
				if ctx.Err() == nil {
					note("%v", err)
					kill()
				}
				return nil
			}
			defer mon.close()
			if p.mode == Restored {
				if err := mon.waitRunning(ctx); err != nil {
					if ctx.Err() == nil {
						note("%v", err)
						kill()
					}
					return nil
				}
				times(func(t *Timeline) { t.KernelStart = time.Since(start) })
				if c.cfg != nil && c.cfg.Trace {
					fmt.Fprintf(os.Stderr, "%s: %6.2fs restored (from the monitor's first answer)\n", c.ID, time.Since(start).Seconds())
				}
				close(release)
				select {
				case <-took:
				case <-ctx.Done():
				case <-time.After(restoreWait):
					note("the restored guest did not take its job within %s", restoreWait)
					kill()
				}
				return nil
			}
			select {
			case <-ready:
			case <-ctx.Done():
				return nil
			}
			saved := time.Now()
			if err := c.save(ctx, mon, store, p); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				note("saving the snapshot failed (the guest goes on, booted cold): %v", err)
				p.mode = Cold
			}
			p.unlock()
			times(func(t *Timeline) { t.Save = time.Since(saved) })
			if err := mon.do("cont", nil, nil); err != nil {
				note("the guest did not go on after saving it: %v", err)
				kill()
				return nil
			}
			close(release)
			return nil
		})
		return nil
	}, nil
}

// save writes the stopped guest's state into a temporary file beside the
// snapshot and publishes it.
func (c *Cell) save(ctx context.Context, mon *monitor, s *snapshots, p *plan) error {
	start := time.Now()
	f, err := os.CreateTemp(s.dir, ".tmp-"+p.key+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = mon.save(ctx, f)
	f.Close()
	if err == nil {
		version, _ := s.qemuVersion(c.Arch.QEMU) // known: it named the snapshot
		err = s.publish(tmp, p, snapshotMeta{Cell: c.ID, QEMU: version, Kernel: c.Image, Created: time.Now(), SaveMs: time.Since(start).Milliseconds()})
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// bootedHow says how the cell's last guest started, for a person.
func (c *Cell) bootedHow() string {
	switch {
	case c.mode == Restored:
		return "restored from its snapshot"
	case c.mode == Saved:
		return "booted cold and saved its snapshot"
	case c.snap.cold != "":
		return "booted cold: " + c.snap.cold
	}
	return "booted cold"
}
