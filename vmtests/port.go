package vmtests

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hugelgupf/vmtest/qemu"
	"github.com/kmmap/kmmap/initramfs/event"
	"github.com/kmmap/kmmap/kernels"
)

// Module waits for the cell's module under test and returns its path.
func (c *Cell) Module() (string, error) {
	if c.kmod == nil {
		return "", errors.New("this cell has no module under test")
	}
	<-c.kmod.done
	return c.kmod.ko, c.kmod.err
}

// moduleName is the module's name once it is built, "" before.
func (c *Cell) moduleName() string {
	if c.kmod == nil {
		return ""
	}
	select {
	case <-c.kmod.done:
		return c.kmod.name
	default:
		return ""
	}
}

// jobReadLimit is how long a guest that took its job may take to read the
// rest of it: the host's time and entropy and the suite's files, a few MB.
// A guest that stops reading there has hung (a restored guest did:
// BENCHMARKS.md, "Why the machines are so").
var jobReadLimit = time.Minute

// errJobUnread: the guest stopped reading its job (jobReadLimit).
var errJobUnread = errors.New("the guest took its job and stopped reading it")

// modulePort adds the virtio-serial port the run's job and the module
// under test go to the guest through, and a task that sends them once
// release is closed (the guest runs: booted, saved or restored): the job;
// when the agent took it (took), the host's time and fresh entropy, and
// the guest suite's files; then the module once it is built, or why there
// is none, in which case the agent gives up at once. unread is called
// when the guest stops reading its job.
func (c *Cell) modulePort(job event.Job, release, took <-chan struct{}, unread func(error)) (qemu.Fn, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	return func(alloc *qemu.IDAllocator, opts *qemu.Options) error {
		id := alloc.ID("kmod")
		fd := opts.AddFile(pr)
		opts.AppendQEMU(
			"-device", fmt.Sprintf("virtserialport,chardev=%s,name=%s", id, event.ModulePort),
			"-chardev", fmt.Sprintf("pipe,id=%s,path=/proc/self/fd/%d", id, fd))
		opts.Tasks = append(opts.Tasks, func(ctx context.Context, n *qemu.Notifications) error {
			defer pw.Close()
			select {
			case <-n.VMStarted:
				pr.Close() // QEMU has it: a write fails once QEMU is gone
			case <-ctx.Done():
				pr.Close()
				return nil
			}
			select {
			case <-release:
			case <-ctx.Done():
				return nil
			}
			sent := make(chan error, 1)
			go func() { sent <- c.sendJob(ctx, pw, job, took) }()
			select {
			case err := <-sent:
				if errors.Is(err, errJobUnread) {
					unread(err)
				}
				return err
			case <-ctx.Done():
				return nil
			}
		})
		return nil
	}, nil
}

// sendJob writes the run's job; once the agent took it, the host's time
// and fresh entropy, the guest test binary and the suite's files (within
// jobReadLimit, when w has deadlines: else errJobUnread); then (unless
// the run has none) the module under test.
func (c *Cell) sendJob(ctx context.Context, w io.Writer, job event.Job, took <-chan struct{}) error {
	if err := event.WriteJob(w, job); err != nil {
		return fmt.Errorf("sending the job to the guest: %w", err)
	}
	select {
	case <-took:
	case <-ctx.Done():
		return nil
	}
	fresh := event.Fresh{Entropy: make([]byte, 64)}
	if _, err := rand.Read(fresh.Entropy); err != nil {
		return err
	}
	fresh.Time = time.Now().UnixNano()
	// Within jobReadLimit; not the module, which may still be building.
	d, _ := w.(interface{ SetWriteDeadline(time.Time) error })
	if d != nil {
		d.SetWriteDeadline(time.Now().Add(jobReadLimit))
	}
	what, err := "the time and entropy", event.WriteFresh(w, fresh)
	if err == nil {
		what, err = "the guest suite's files", event.WriteFiles(w, c.files)
	}
	if d != nil {
		d.SetWriteDeadline(time.Time{})
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w: %s not read in %s", errJobUnread, what, jobReadLimit)
	} else if err != nil {
		return fmt.Errorf("sending %s to the guest: %w", what, err)
	}
	if job.NoModule {
		return nil
	}
	return c.sendModule(w)
}

func (c *Cell) sendModule(w io.Writer) error {
	ko, err := c.Module()
	if err != nil {
		return event.WriteModuleError(w, firstLine(err.Error()))
	}
	name, err := kernels.ModInfo(ko, "name")
	if err != nil || name == "" {
		return event.WriteModuleError(w, fmt.Sprintf("module under test %s: no module name in .modinfo (%v)", ko, err))
	}
	b, err := os.ReadFile(ko)
	if err != nil {
		return event.WriteModuleError(w, err.Error())
	}
	if err := event.WriteModule(w, name, b); err != nil {
		return fmt.Errorf("sending %s to the guest: %w", filepath.Base(ko), err)
	}
	return nil
}
