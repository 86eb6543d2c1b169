package vmtests

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
// drains every event until the reader closes the channel, which it does
// on every way out (the guest done, QEMU gone, a read error); events that
// come after the context ended are dropped.
func guestEvents(handle func(event.Event)) qemu.Fn {
	ch := make(chan event.Event)
	return func(alloc *qemu.IDAllocator, opts *qemu.Options) error {
		opts.Tasks = append(opts.Tasks, func(ctx context.Context, _ *qemu.Notifications) error {
			drain(ctx, ch, handle)
			return nil
		})
		return qevent.EventChannel(event.Channel, ch)(alloc, opts)
	}
}

// drain calls handle with each event of ch until ch is closed, and only
// reads once ctx is done.
func drain[T any](ctx context.Context, ch <-chan T, handle func(T)) {
	for e := range ch {
		if ctx.Err() == nil {
			handle(e)
		}
	}
}
