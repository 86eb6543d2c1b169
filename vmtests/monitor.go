package vmtests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
)

// monitor is QEMU's QMP monitor of one VM, on a Unix socket QEMU listens
// on (go-qemu's client).
type monitor struct{ mon *qmp.SocketMonitor }

// dialMonitor connects to the QMP socket at path, waiting for QEMU to
// create it.
func dialMonitor(ctx context.Context, path string) (*monitor, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		mon, err := qmp.NewSocketMonitor("unix", path, 5*time.Second)
		if err == nil {
			if err = mon.Connect(); err == nil {
				return &monitor{mon}, nil
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

func (m *monitor) close() { m.mon.Disconnect() }

// do runs a QMP command with its arguments (nil for none) and decodes
// what it returns into out (nil to drop it).
func (m *monitor) do(cmd string, args, out any) error {
	return m.doFile(cmd, args, out, nil)
}

// doFile is do, passing f to QEMU with the command (getfd).
func (m *monitor) doFile(cmd string, args, out any, f *os.File) error {
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

// save stops the guest and writes its whole state (QEMU's migration
// stream) into f; the guest stays stopped.
func (m *monitor) save(ctx context.Context, f *os.File) error {
	if err := m.do("stop", nil, nil); err != nil {
		return err
	}
	// QEMU's default of 32 MiB/s would make the save take seconds.
	if err := m.do("migrate-set-parameters", map[string]any{"max-bandwidth": int64(1) << 40}, nil); err != nil {
		return err
	}
	if err := m.doFile("getfd", map[string]any{"fdname": "kmmap-snapshot"}, nil, f); err != nil {
		return err
	}
	if err := m.do("migrate", map[string]any{"uri": "fd:kmmap-snapshot"}, nil); err != nil {
		return err
	}
	return poll(ctx, func() (bool, error) {
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := m.do("query-migrate", nil, &st); err != nil {
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

// waitRunning waits until QEMU has loaded the incoming state and starts
// the guest: it was saved stopped, so QEMU leaves it paused.
func (m *monitor) waitRunning(ctx context.Context) error {
	return poll(ctx, func() (bool, error) {
		var st struct {
			Status string `json:"status"`
		}
		if err := m.do("query-status", nil, &st); err != nil {
			return false, err
		}
		switch st.Status {
		case "running":
			return true, nil
		case "paused":
			return false, m.do("cont", nil, nil)
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
