package vm

import (
	"context"
	"testing"
	"time"
)

// A consumer goes on reading and handling what the guest still sends
// after its run's context ended (QEMU exited, timed out) until the reader
// closes the channel: the sender, and with it VM.Wait, never blocks
// (qevent's EventChannelCallback stopped reading at the context's end and
// left its sender blocked for ever), and no event still in the pipe when
// QEMU exited is lost (the last test's result was, once).
func TestDrainAfterCancel(t *testing.T) {
	_, cancel := context.WithCancel(context.Background())
	ch := make(chan int)
	handled := 0
	done := make(chan struct{})
	go func() {
		drain(ch, func(int) { handled++ })
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
	if handled != 1000 {
		t.Errorf("handled %d events, want all 1000, those after the context ended too", handled)
	}
}
