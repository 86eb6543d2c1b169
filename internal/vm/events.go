package vm

import (
	"context"

	"github.com/hugelgupf/vmtest/qemu"
	"github.com/hugelgupf/vmtest/qemu/qevent"
	"github.com/kmmap/kmmap/initramfs/event"
)

// guestEvents adds the guest's event channel and calls handle with each
// event until the guest is done. Unlike qevent.EventChannelCallback,
// whose consumer stops reading when the run's context ends while the
// reader of the channel still sends to it (its goroutine, and so VM.Wait,
// then block for ever: the stall seen under load), the consumer here
// handles every event until the reader closes the channel, which it does
// on every way out (the guest done, QEMU gone, a read error). That
// includes the events read after QEMU exited: VM.Wait ends the tasks'
// context as soon as QEMU is gone and only then waits for them, while the
// guest's last events (the last test's result, the module loaded again)
// may still be in the pipe. Dropping those lost a passed test and the
// reload in one make test of eight, under load.
func guestEvents(handle func(event.Event)) qemu.Fn {
	ch := make(chan event.Event)
	return func(alloc *qemu.IDAllocator, opts *qemu.Options) error {
		opts.Tasks = append(opts.Tasks, func(context.Context, *qemu.Notifications) error {
			drain(ch, handle)
			return nil
		})
		return qevent.EventChannel(event.Channel, ch)(alloc, opts)
	}
}

// drain calls handle with each event of ch until ch is closed.
func drain[T any](ch <-chan T, handle func(T)) {
	for e := range ch {
		handle(e)
	}
}
