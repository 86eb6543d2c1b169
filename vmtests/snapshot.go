package vmtests

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/kmmap/kmmap/internal/arch"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hugelgupf/vmtest/qemu"
	"github.com/kmmap/kmmap/internal/console"
	"github.com/kmmap/kmmap/internal/monitor"
	"github.com/kmmap/kmmap/kernels"
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

// A snapshot is a guest saved by QEMU where the agent waits for its job:
// booted, its kernel's own modules loaded, the module under test not yet.
// It is two files: the guest's RAM (<key>.ram, sparse), which the booting
// guest ran in (a memory-backend-file shared with QEMU, so saving copies
// nothing), and QEMU's migration stream of everything else (<key>.state,
// a few hundred KB, with x-ignore-shared). A restore maps the RAM file
// privately (share=off): the guest reads the saved pages from the page
// cache as it touches them, its writes stay its own, and the file stays
// as saved. (Migrating the RAM through the stream made QEMU touch every
// page of the destination's 512 MiB, seconds per restore: BENCHMARKS.md,
// "Why the machines are so".) It is keyed by everything that made that
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
func (h *Harness) snapshotPolicy(a arch.Arch, gdb bool) snapshotPolicy {
	p := snapshotPolicy{store: h.snaps}
	switch {
	case h.cfg.Cold:
		p.cold = "KMMAP_SNAPSHOT=0"
	case gdb:
		p.cold = "with a gdb stub the guest starts halted before its first instruction, to be debugged from there"
	case a.NoSnapshot != "":
		p.cold = a.NoSnapshot
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
	fmt.Fprintf(h, "kmmap-snapshot-v2\n%s\n%s %q\n%q\n%q\n%s\n%s\n", version, c.Arch.QEMU, c.Arch.Machine, c.QEMUArgs, c.KernelArgs, img, initrd)
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
// restore or to save into, and for saving a way to let go of the lock
// that makes this run the one that saves (once it is published, or given
// up). A plan does not change once made.
type plan struct {
	mode   BootMode
	state  string
	key    string
	unlock func()
}

// state and ram are where the snapshot named key is kept.
func (s *snapshots) state(key string) string { return filepath.Join(s.dir, key+".state") }
func (s *snapshots) ram(key string) string   { return filepath.Join(s.dir, key+".ram") }

// lock takes the lock that makes one run of many create the snapshot
// named key, waiting while another holds it.
func (s *snapshots) lock(ctx context.Context, key string) (*kernels.FileLock, error) {
	for {
		l, err := kernels.TryLockFile(filepath.Join(s.dir, key+".lock"))
		if !errors.Is(err, kernels.ErrLocked) {
			return l, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// publish moves a saved snapshot into place, the RAM first and the state
// last: a concurrent run sees no snapshot or a whole one.
func (s *snapshots) publish(tmpState, tmpRAM string, p *plan, meta snapshotMeta) error {
	var size int64
	for _, path := range []string{tmpRAM, tmpState} {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		err = f.Sync()
		fi, statErr := f.Stat()
		f.Close()
		if err = errors.Join(err, statErr); err != nil {
			return err
		}
		size += fi.Size()
	}
	meta.Bytes = size
	b, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.dir, p.key+".json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmpRAM, s.ram(p.key)); err != nil {
		return err
	}
	return os.Rename(tmpState, p.state)
}

// remove deletes a snapshot that did not restore.
func (s *snapshots) remove(key string) {
	os.Remove(s.state(key))
	os.Remove(s.ram(key))
	os.Remove(s.bootLog(key))
	os.Remove(filepath.Join(s.dir, key+".json"))
}

// boot runs job on cell's VM to the end: restored from its snapshot when
// there is one, else booted cold and saved at the ready point for the runs
// after it. A snapshot that does not restore (corrupt, cut short, or the
// guest in it does not answer) is removed and the cell boots cold, with
// a note saying so. Every entry point boots through it; the run says how
// the guest started (run.mode), the cell is not changed.
func boot(ctx context.Context, cell *Cell, job Job) run {
	defer cell.claim.release() // the run is over: another may empty Results
	w, err := cell.work(job)
	if err != nil {
		return run{con: console.New(cell.moduleName, cell.allow), res: newResults(), err: err, mode: Cold}
	}
	var notes []string
	// cold boots the cell without a snapshot, after the notes so far and
	// why.
	cold := func(why ...string) run {
		r := bootVM(ctx, cell, &plan{mode: Cold}, w)
		r.notes = append(append(notes, why...), r.notes...)
		r.mode = Cold
		return r
	}
	// A shell boots cold: the terminal is the guest's from QEMU's start,
	// and a boot that saves a snapshot, or a restore that fails, would
	// hand it to a second VM.
	if cell.snap.cold != "" || cell.snap.store == nil || w.shell != nil {
		return cold()
	}
	s := cell.snap.store
	key, err := s.key(cell)
	if err != nil {
		return cold(fmt.Sprintf("booted cold: naming the snapshot failed: %v", err))
	}
	restore := func() (run, bool) {
		p := &plan{mode: Restored, state: s.state(key), key: key}
		for _, f := range []string{p.state, s.ram(key), s.bootLog(key)} {
			if _, err := os.Stat(f); err != nil {
				return run{}, false
			}
		}
		r := bootVM(ctx, cell, p, w)
		if r.jobSeen || ctx.Err() != nil {
			now := time.Now()
			for _, f := range []string{p.state, s.ram(key), s.bootLog(key)} {
				os.Chtimes(f, now, now) // in use: kernels prune keeps it
			}
			r.mode = Restored
			return r, true
		}
		s.remove(key)
		notes = append(notes, fmt.Sprintf("the snapshot %s did not restore (removed; booting cold and saving a new one): %s", p.state, restoreFailure(r)))
		return r, false
	}
	if r, ok := restore(); ok {
		r.notes = append(notes, r.notes...)
		return r
	}
	lock, err := s.lock(ctx, key)
	if err != nil {
		return cold(fmt.Sprintf("booted cold: %v", err))
	}
	// Another run may have saved it while this one waited for the lock.
	if r, ok := restore(); ok {
		lock.Unlock()
		r.notes = append(notes, r.notes...)
		return r
	}
	// Boot, save at the ready point (the guest stops there), then run
	// the job in a guest restored from what was saved, as every later
	// run will.
	unlock := sync.OnceFunc(func() { lock.Unlock() })
	saving := bootVM(ctx, cell, &plan{mode: Saved, state: s.state(key), key: key, unlock: unlock}, w)
	unlock()
	notes = append(notes, saving.notes...)
	if saving.saved {
		if r, ok := restore(); ok {
			r.mode = Saved
			r.times.Save = saving.times.Save
			r.notes = append(notes, r.notes...)
			return r
		}
		return cold()
	}
	// Saving failed, or the run ended before: the guest went on cold.
	saving.mode = Cold
	saving.notes = notes
	return saving
}

// restoreFailure says why a restore gave no guest that took its job.
func restoreFailure(r run) string {
	var why []string
	if r.err != nil {
		why = append(why, "QEMU: "+r.err.Error())
	}
	why = append(why, r.notes...)
	if t := strings.TrimSpace(r.con.Tail(5)); t != "" {
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

// ramID is the memory backend the guest's RAM is in when snapshots are on.
const ramID = "kmmap-ram"

// snapshotDevice sets QEMU up for p. For a cold boot it releases the job
// as soon as QEMU runs. To save, the guest's RAM is a file shared with
// QEMU, and a task, when the agent is ready, stops the guest, saves the
// rest of its state, publishes both and ends the VM (a restored guest
// runs the job: boot). To restore, the RAM is that file mapped privately
// and a task has QEMU load the state, then releases the job once the
// guest runs, and kills the VM if the guest does not take it.
func (c *Cell) snapshotDevice(p *plan, v vmHooks) (qemu.Fn, error) {
	release, ready, took, kill, note, times := v.release, v.ready, v.took, v.kill, v.note, v.times
	if p.mode == Cold {
		close(release)
		return func(*qemu.IDAllocator, *qemu.Options) error { return nil }, nil
	}
	store := c.snap.store
	mem, err := c.memory()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(store.dir, 0o755); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kmmap-qmp-")
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "qmp")
	var state *os.File
	ram, share := store.ram(p.key), "off"
	if p.mode == Saved {
		ram, share = filepath.Join(store.dir, fmt.Sprintf(".tmp-%s-%d.ram", p.key, os.Getpid())), "on"
		os.Remove(ram)
	} else if state, err = os.Open(p.state); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return func(_ *qemu.IDAllocator, opts *qemu.Options) error {
		opts.AppendQEMU("-object", fmt.Sprintf("memory-backend-file,id=%s,size=%s,mem-path=%s,share=%s", ramID, mem, ram, share),
			"-machine", "memory-backend="+ramID, "-qmp", "unix:"+sock+",server=on,wait=off")
		fd := 0
		if state != nil {
			fd = opts.AddFile(state)
			opts.AppendQEMU("-incoming", "defer")
		}
		opts.Tasks = append(opts.Tasks, func(ctx context.Context, n *qemu.Notifications) error {
			defer os.RemoveAll(dir)
			select {
			case <-n.VMStarted:
				if state != nil {
					defer state.Close() // QEMU has it
				}
			case <-ctx.Done():
				return nil
			}
			start := time.Now()
			fail := func(err error) error {
				if ctx.Err() == nil {
					note("%v", err)
					kill()
				}
				return nil
			}
			mon, err := monitor.Dial(ctx, sock)
			if err != nil {
				return fail(err)
			}
			defer mon.Close()
			// The RAM is not in the stream: it is the file.
			if err := mon.Do("migrate-set-capabilities", map[string]any{"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}}}, nil); err != nil {
				return fail(err)
			}
			if p.mode == Restored {
				if err := mon.Do("migrate-incoming", map[string]any{"uri": fmt.Sprintf("fd:%d", fd)}, nil); err != nil {
					return fail(err)
				}
				if err := mon.WaitRunning(ctx); err != nil {
					return fail(err)
				}
				times(func(t *Timeline) { t.KernelStart = time.Since(start) })
				if c.cfg != nil && c.cfg.Trace {
					fmt.Fprintf(os.Stderr, "%s: %6.2fs restored\n", c.ID, time.Since(start).Seconds())
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
			begun := time.Now()
			err = c.save(ctx, mon, store, p, ram, v.console())
			times(func(t *Timeline) { t.Save = time.Since(begun) })
			if err == nil {
				*v.saved = true
				kill() // its job runs in a restored guest
				return nil
			}
			os.Remove(ram) // the guest goes on in it, unlinked
			if ctx.Err() != nil {
				return nil
			}
			note("saving the snapshot failed (the guest goes on, booted cold): %v", err)
			times(func(t *Timeline) { t.Mode = Cold })
			p.unlock()
			if err := mon.Do("cont", nil, nil); err != nil {
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

// vmHooks are what snapshotDevice needs of the VM's run: release, ready
// and took (see bootVM), a way to kill the VM, to note something for a
// person, to set the run's times and say it saved its snapshot, and the
// console so far.
type vmHooks struct {
	release, ready, took chan struct{}
	kill                 func()
	note                 func(string, ...any)
	times                func(func(*Timeline))
	saved                *bool
	console              func() []string
}

// memory is the guest's memory size: QEMU's last -m.
func (c *Cell) memory() (string, error) {
	mem := ""
	args := append(append([]string(nil), c.Arch.Machine...), c.QEMUArgs...)
	for i, a := range args {
		if a == "-m" && i+1 < len(args) {
			mem = args[i+1]
		}
	}
	if mem == "" {
		return "", fmt.Errorf("%s: no -m in QEMU's arguments: the snapshot's RAM file needs the guest's memory size", c.ID)
	}
	return mem, nil
}

// save writes the stopped guest's state (all but its RAM, which is in
// ram) into a temporary file beside the snapshot, and publishes both.
// The boot's console is kept with the snapshot (<key>.boot.log): every
// restored run's console starts with it, so that its results show the
// boot and a kernel report during the boot fails every run, as it would
// have failed each cold boot.
func (c *Cell) save(ctx context.Context, mon *monitor.Monitor, s *snapshots, p *plan, ram string, console []string) error {
	start := time.Now()
	f, err := os.CreateTemp(s.dir, ".tmp-"+p.key+"-*.state")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = mon.Save(ctx, f)
	f.Close()
	if err == nil {
		err = kernels.WriteFileAtomic(s.bootLog(p.key), []byte(strings.Join(console, "\n")+"\n"), 0o644)
	}
	if err == nil {
		version, _ := s.qemuVersion(c.Arch.QEMU) // known: it named the snapshot
		err = s.publish(tmp, ram, p, snapshotMeta{Cell: c.ID, QEMU: version, Kernel: c.Image, Created: time.Now(), SaveMs: time.Since(start).Milliseconds()})
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// bootLog is where the console of the boot that saved snapshot key is.
func (s *snapshots) bootLog(key string) string { return filepath.Join(s.dir, key+".boot.log") }

// replayBoot feeds a restored run's console the boot that saved its
// snapshot, then a line saying where the restored guest begins.
func replayBoot(con *console.Console, s *snapshots, key string) error {
	b, err := os.ReadFile(s.bootLog(key))
	if err != nil {
		return err
	}
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		con.Add(l)
	}
	con.Add(fmt.Sprintf("kmmap: ---- the lines above are the boot that saved the snapshot %s; this run restored it here ----", key))
	return nil
}

// bootedHow says how run r's guest started, for a person.
func (c *Cell) bootedHow(r run) string {
	switch {
	case r.mode == Restored:
		return "restored from its snapshot"
	case r.mode == Saved:
		return "booted cold and saved its snapshot"
	case c.snap.cold != "":
		return "booted cold: " + c.snap.cold
	}
	return "booted cold"
}
