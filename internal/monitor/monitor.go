// Package monitor is a client of QEMU's QMP monitor for what the harness
// asks of a running VM: run a command, save the guest's state into a file
// (a snapshot), and wait for a restored guest to run. It owns the QMP
// conversation and nothing else: it neither starts QEMU nor knows cells.
package monitor

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
)

// Monitor is QEMU's QMP monitor of one VM, on a Unix socket QEMU listens
// on (go-qemu's client).
type Monitor struct{ mon *qmp.SocketMonitor }

// Dial connects to the QMP socket at path, waiting for QEMU to
// create it.
func Dial(ctx context.Context, path string) (*Monitor, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		mon, err := qmp.NewSocketMonitor("unix", path, 5*time.Second)
		if err == nil {
			if err = mon.Connect(); err == nil {
				return &Monitor{mon}, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("QEMU's monitor %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (m *Monitor) Close() { m.mon.Disconnect() }

// Do runs a QMP command with its arguments (nil for none) and decodes
// what it returns into out (nil to drop it).
func (m *Monitor) Do(cmd string, args, out any) error {
	return m.DoFile(cmd, args, out, nil)
}

// DoFile is Do, passing f to QEMU with the command (getfd).
func (m *Monitor) DoFile(cmd string, args, out any, f *os.File) error {
	b, err := json.Marshal(qmp.Command{Execute: cmd, Args: args})
	if err != nil {
		return err
	}
	var raw []byte
	if f != nil {
		raw, err = m.mon.RunWithFile(b, f)
	} else {
		raw, err = m.mon.Run(b)
	}
	if err != nil {
		return fmt.Errorf("QMP %s: %w", cmd, err)
	}
	if out == nil {
		return nil
	}
	var resp struct{ Return json.RawMessage }
	if err := json.Unmarshal(raw, &resp); err != nil {
		return fmt.Errorf("QMP %s: %w", cmd, err)
	}
	return json.Unmarshal(resp.Return, out)
}

// Save stops the guest and writes its whole state (QEMU's migration
// stream) into f; the guest stays stopped.
func (m *Monitor) Save(ctx context.Context, f *os.File) error {
	if err := m.Do("stop", nil, nil); err != nil {
		return err
	}
	// QEMU's default of 32 MiB/s would make the save take seconds.
	if err := m.Do("migrate-set-parameters", map[string]any{"max-bandwidth": int64(1) << 40}, nil); err != nil {
		return err
	}
	if err := m.DoFile("getfd", map[string]any{"fdname": "kmmap-snapshot"}, nil, f); err != nil {
		return err
	}
	if err := m.Do("migrate", map[string]any{"uri": "fd:kmmap-snapshot"}, nil); err != nil {
		return err
	}
	return poll(ctx, func() (bool, error) {
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := m.Do("query-migrate", nil, &st); err != nil {
			return false, err
		}
		switch st.Status {
		case "completed":
			return true, nil
		case "failed", "cancelled":
			return false, fmt.Errorf("QEMU's migration to the snapshot %s: %s", st.Status, st.ErrorDesc)
		}
		return false, nil
	})
}

// WaitRunning waits until QEMU has loaded the incoming state and starts
// the guest: it was saved stopped, so QEMU leaves it paused.
func (m *Monitor) WaitRunning(ctx context.Context) error {
	return poll(ctx, func() (bool, error) {
		var st struct {
			Status string `json:"status"`
		}
		if err := m.Do("query-status", nil, &st); err != nil {
			return false, err
		}
		switch st.Status {
		case "running":
			return true, nil
		case "paused":
			return false, m.Do("cont", nil, nil)
		case "inmigrate", "prelaunch", "restore-vm":
			return false, nil
		}
		return false, fmt.Errorf("the restored guest is %s, not running", st.Status)
	})
}

// poll calls check every 10 ms until it is done, fails, or ctx ends.
func poll(ctx context.Context, check func() (done bool, err error)) error {
	for {
		done, err := check()
		if done || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
