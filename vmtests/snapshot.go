package vmtests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hugelgupf/vmtest/qemu"
	"github.com/kmmap/kmmap/internal/console"
	"github.com/kmmap/kmmap/internal/monitor"
	"github.com/kmmap/kmmap/internal/snapshot"
)

// A snapshot (package snapshot) is a guest saved by QEMU where the agent
// waits for its job. A restore maps the saved RAM file privately
// (share=off): the guest reads the saved pages from the page cache as it
// touches them, its writes stay its own, and the file stays as saved.
// (Migrating the RAM through the stream made QEMU touch every page of the
// destination's 512 MiB, seconds per restore: BENCHMARKS.md, "Why the
// machines are so".) Any change to what made the guest boots cold once
// and saves a new one. What a run does comes after, as its Job.

// machine is what made c's guest, which names its snapshot.
func (c *Cell) machine() snapshot.Machine {
	return snapshot.Machine{ID: c.ID, QEMU: c.Arch.QEMU, Machine: c.Arch.Machine, QEMUArgs: c.QEMUArgs, KernelArgs: c.KernelArgs, Image: c.Image, Initramfs: c.Initramfs}
}

// plan is how one boot of a cell uses snapshots: the mode, the snapshot
// to restore or to save (its key in the cell's store), and for saving a
// way to let go of the lock that makes this run the one that saves (once
// it is published, or given up). A plan does not change once made.
type plan struct {
	mode   BootMode
	key    string
	unlock func()
}

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
	release, ready, took, kill := v.release, v.ready, v.took, v.kill
	note := func(format string, args ...any) {
		v.update(func(r *run) { r.notes = append(r.notes, fmt.Sprintf(format, args...)) })
	}
	times := func(f func(*Timeline)) { v.update(func(r *run) { f(&r.times) }) }
	if p.mode == Cold {
		close(release)
		return func(*qemu.IDAllocator, *qemu.Options) error { return nil }, nil
	}
	store := c.snap.store
	mem, err := c.memory()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(store.Dir(), 0o755); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kmmap-qmp-")
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "qmp")
	var state *os.File
	ram, share := store.RAM(p.key), "off"
	if p.mode == Saved {
		ram, share = store.TempRAM(p.key), "on"
		os.Remove(ram)
	} else if state, err = os.Open(store.State(p.key)); err != nil {
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
			version, _ := store.QEMUVersion(c.Arch.QEMU) // known: it named the snapshot
			var console []string
			v.update(func(r *run) { console = append(console, r.con.Lines...) })
			err = store.Save(ctx, mon, p.key, ram, console, snapshot.Meta{Cell: c.ID, QEMU: version, Kernel: c.Image})
			times(func(t *Timeline) { t.Save = time.Since(begun) })
			if err == nil {
				v.update(func(r *run) { r.saved = true })
				kill() // its job runs in a restored guest
				return nil
			}
			os.Remove(ram) // the guest goes on in it, unlinked
			if ctx.Err() != nil {
				return nil
			}
			note("saving the snapshot failed (the guest goes on, booted cold): %v", err)
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
// and took (see bootVM), a way to kill the VM, and update, the run's one
// way to change it (a note for a person, its times, that it saved its
// snapshot) and read its console so far, under the run's lock.
type vmHooks struct {
	release, ready, took chan struct{}
	kill                 func()
	update               func(func(*run))
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

// replayBoot feeds a restored run's console the boot that saved its
// snapshot, then a line saying where the restored guest begins.
func replayBoot(con *console.Console, s *snapshot.Store, key string) error {
	lines, err := s.Boot(key)
	if err != nil {
		return err
	}
	for _, l := range lines {
		con.Add(l)
	}
	con.Add(fmt.Sprintf("kmmap: ---- the lines above are the boot that saved the snapshot %s; this run restored it here ----", key))
	return nil
}

// restoreWait bounds how long a restored guest may take to take its job
// before the snapshot counts as broken (it takes well under a second).
const restoreWait = 30 * time.Second
