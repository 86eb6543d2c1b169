package vmtests

import (
	"context"
	"testing"
	"time"
)

// A consumer whose run ended (the VM timed out, a test failed early) goes
// on reading what the guest still sends until the reader closes the
// channel: the sender, and with it VM.Wait, never blocks. (qevent's
// EventChannelCallback stopped reading at the context's end and left its
// sender blocked for ever.)
func TestDrainAfterCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan int)
	handled := 0
	done := make(chan struct{})
	go func() {
		drain(ctx, ch, func(int) { handled++ })
		close(done)
	}()
	sent := make(chan struct{})
	go func() { // a producer that keeps sending, then closes (QEMU gone)
		for i := range 1000 {
			if i == 10 {
				cancel()
			}
			ch <- i
		}
		close(ch)
		close(sent)
	}()
	for _, c := range []chan struct{}{sent, done} {
		select {
		case <-c:
		case <-time.After(10 * time.Second):
			t.Fatal("the producer blocked: the consumer stopped reading when its context ended")
		}
	}
	if handled < 9 || handled > 10 { // the 10th may be read as the context ends
		t.Errorf("handled %d events, want the 9 or 10 before the context ended", handled)
	}
}
