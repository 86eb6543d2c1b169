// Package watchdog watches one guest for progress and, when there is none
// for its limit, says what everything was doing: QEMU's state through a
// QMP monitor of its own, every goroutine of this process, the last
// console lines. It knows QEMU and QMP, nothing of cells or jobs: the
// boot tells it of progress and asks it whether the guest stalled.
package watchdog

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync/atomic"
	"time"

	"github.com/hugelgupf/vmtest/qemu"
	"github.com/kmmap/kmmap/internal/monitor"
)

// Watchdog watches one guest for progress: a console line or an agent
// event. When there is none for its limit it says what everything was
// doing - QEMU's own state through a QMP monitor of its own, every
// goroutine of this process, the last console lines - instead of the run
// sitting until the VM's timeout or go test's deadline (a consumer of
// the guest's events that stopped reading kept VM.Wait from ever
// returning, twice, before that was fixed).
type Watchdog struct {
	limit time.Duration
	last  atomic.Int64 // UnixNano of the last progress
	dir   string       // holds the QMP socket
}

// New returns a watchdog with limit d, or nil for none (d == 0); the
// methods of a nil Watchdog do nothing.
func New(d time.Duration) (*Watchdog, error) {
	if d == 0 {
		return nil, nil
	}
	dir, err := os.MkdirTemp("", "kmmap-watchdog-")
	if err != nil {
		return nil, err
	}
	w := &Watchdog{limit: d, dir: dir}
	w.Progress()
	return w, nil
}

func (w *Watchdog) sock() string { return filepath.Join(w.dir, "qmp") }

// Close removes the watchdog's socket directory.
func (w *Watchdog) Close() {
	if w != nil {
		os.RemoveAll(w.dir)
	}
}

// Progress records that the guest did something.
func (w *Watchdog) Progress() {
	if w != nil {
		w.last.Store(time.Now().UnixNano())
	}
}

// Device gives QEMU the watchdog's QMP monitor, waiting for no client.
func (w *Watchdog) Device() qemu.Fn {
	return func(_ *qemu.IDAllocator, opts *qemu.Options) error {
		if w != nil {
			opts.AppendQEMU("-qmp", "unix:"+w.sock()+",server=on,wait=off")
		}
		return nil
	}
}

// Stalled returns a channel that receives, once, what the watchdog saw
// when the guest made no progress for its limit; nothing before ctx is
// done otherwise (nil for no watchdog). tail returns the console's last
// lines.
func (w *Watchdog) Stalled(ctx context.Context, tail func() string) <-chan string {
	if w == nil {
		return nil
	}
	ch := make(chan string, 1)
	go func() {
		tick := time.NewTicker(min(w.limit/4, 5*time.Second))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			idle := time.Since(time.Unix(0, w.last.Load()))
			if idle < w.limit {
				continue
			}
			var dump bytes.Buffer
			pprof.Lookup("goroutine").WriteTo(&dump, 2)
			ch <- fmt.Sprintf("no console output or guest event for %s (KMMAP_STALL=%s; raise it if a guest test is silent that long): the watchdog ended the guest.\nQEMU: %s\nlast console lines:\n%s\nevery goroutine of the test binary:\n%s",
				idle.Round(time.Second), w.limit, w.qemuState(ctx), tail(), dump.String())
			return
		}
	}()
	return ch
}

// qemuState is QMP's query-status of the guest, or why it is unknown.
func (w *Watchdog) qemuState(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m, err := monitor.Dial(ctx, w.sock())
	if err != nil {
		return fmt.Sprintf("query-status: no answer (%v)", err)
	}
	defer m.Close()
	var st json.RawMessage
	if err := m.Do("query-status", nil, &st); err != nil {
		return fmt.Sprintf("query-status: %v", err)
	}
	return "query-status " + string(st)
}
