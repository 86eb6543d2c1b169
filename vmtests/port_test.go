package vmtests

import (
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/kmmap/kmmap/initramfs/event"
)

// A guest that took its job and stops reading the rest of it (a restored
// guest that hung) is given up on after jobReadLimit, with errJobUnread
// (boot then boots the cell cold); one that reads gets all of it.
func TestSendJobUnread(t *testing.T) {
	defer func(d time.Duration) { jobReadLimit = d }(jobReadLimit)
	jobReadLimit = 200 * time.Millisecond
	c := &Cell{files: []event.File{{Path: "/guest.test", Mode: 0o755, Data: make([]byte, 4<<20)}}}
	send := func(read bool) error {
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer pr.Close()
		defer pw.Close()
		if read {
			go io.Copy(io.Discard, pr)
		}
		took := make(chan struct{})
		close(took)
		return c.sendJob(t.Context(), pw, event.Job{NoModule: true}, took)
	}
	start := time.Now()
	err := send(false)
	if !errors.Is(err, errJobUnread) {
		t.Fatalf("a guest that reads nothing: %v, want errJobUnread", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("given up on after %s, want about %s", d, jobReadLimit)
	}
	t.Logf("%v", err)
	if err := send(true); err != nil {
		t.Errorf("a guest that reads: %v", err)
	}
}
