// SPDX-License-Identifier: GPL-2.0
/*
 * The ring backing: kernel-to-user events in shared pages (a notification
 * channel without a copy per event: what drivers share pages for).
 *
 * Single consumer (userland), producers serialised by a spinlock (the
 * ioctl and the timer's work).  The kernel writes record head, then
 * publishes head + 1 with smp_store_release(); userland reads records
 * before head (smp_load_acquire) and hands them back by storing tail with
 * release semantics, which the kernel reads with smp_load_acquire() before
 * reusing a slot.  A full ring drops the new record and counts it: a record
 * userland may be reading is never overwritten.  The kernel trusts nothing
 * it reads from the shared page but tail, and uses tail only to decide
 * whether the ring is full.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/log2.h>
#include <linux/workqueue.h>

#include "compat.h"
#include "internal.h"

/* Records produced under one hold of ring->lock: its hold time is bounded. */
#define KMMAP_RING_BATCH	64

static void kmmap_ring_produce_locked(struct kmmap_ring *ring, u32 count, u32 source)
{
	u32 i, tail;

	lockdep_assert_held(&ring->lock);
	for (i = 0; i < count; i++) {
		struct kmmap_ring_record *r;

		/* Pairs with userland's release store of tail after reading. */
		tail = smp_load_acquire(&ring->hdr->tail);
		if (ring->head - tail >= ring->nr) {
			ring->dropped++;
			continue;
		}
		r = &ring->rec[ring->head & (ring->nr - 1)];
		r->seq = ring->seq++;
		r->source = source;
		r->len = sizeof(r->data);
		kmmap_fill_pattern(r->data, sizeof(r->data), r->seq, 0);
		ring->head++;
		ring->produced++;
		/* Publish the record before the index that hands it over. */
		smp_store_release(&ring->hdr->head, ring->head);
	}
	WRITE_ONCE(ring->hdr->dropped, ring->dropped);
	WRITE_ONCE(ring->hdr->produced, ring->produced);
}

/*
 * Produce count records, KMMAP_RING_BATCH at a time, rescheduling between
 * batches: the caller may sleep.  Stops early if the ring is detached.
 */
static void kmmap_ring_produce(struct kmmap_ring *ring, u32 count, u32 source)
{
	while (count) {
		u32 n = min_t(u32, count, KMMAP_RING_BATCH);

		spin_lock(&ring->lock);
		if (!ring->hdr) {
			spin_unlock(&ring->lock);
			break;
		}
		kmmap_ring_produce_locked(ring, n, source);
		spin_unlock(&ring->lock);
		wake_up_interruptible(&ring->wq);
		count -= n;
		if (count)
			cond_resched();
	}
}

static void kmmap_ring_tick(struct work_struct *work)
{
	struct kmmap_ring *ring = container_of(to_delayed_work(work), struct kmmap_ring, tick);
	unsigned int period = READ_ONCE(ring->period_ms);

	if (!period)
		return;
	kmmap_ring_produce(ring, READ_ONCE(ring->tick_count), KMMAP_RING_SRC_TIMER);
	queue_delayed_work(kmmap_percpu_wq, &ring->tick, msecs_to_jiffies(period));
}

void kmmap_ring_init(struct kmmap_ring *ring)
{
	spin_lock_init(&ring->lock);
	init_waitqueue_head(&ring->wq);
	INIT_DELAYED_WORK(&ring->tick, kmmap_ring_tick);
}

/* Lay the ring out in a fresh, zeroed buffer of size bytes. */
void kmmap_ring_attach(struct kmmap_ring *ring, void *buf, size_t size)
{
	struct kmmap_ring_header *hdr = buf;
	u32 nr = rounddown_pow_of_two((size - PAGE_SIZE) / sizeof(*ring->rec));

	hdr->nr_records = nr;
	hdr->record_size = sizeof(*ring->rec);
	spin_lock(&ring->lock);
	ring->rec = buf + PAGE_SIZE;
	ring->nr = nr;
	ring->head = 0;
	ring->seq = 0;
	ring->produced = 0;
	ring->dropped = 0;
	ring->hdr = hdr;
	spin_unlock(&ring->lock);
}

/*
 * Stop the timer and forget the buffer, before it is freed: under
 * ring->lock, so that poll() either sees no ring or reads it whole.
 */
void kmmap_ring_stop(struct kmmap_ring *ring)
{
	WRITE_ONCE(ring->period_ms, 0);
	cancel_delayed_work_sync(&ring->tick);
	spin_lock(&ring->lock);
	ring->hdr = NULL;
	ring->rec = NULL;
	spin_unlock(&ring->lock);
}

int kmmap_ring_emit(struct kmmap_ring *ring, u32 count)
{
	if (count > 1u << 20)
		return -EINVAL;
	kmmap_ring_produce(ring, count, KMMAP_RING_SRC_IOCTL);
	return 0;
}

int kmmap_ring_timer(struct kmmap_ring *ring, u32 count, u32 period_ms)
{
	if (period_ms > 10000 || count > 4096 || (period_ms && !count))
		return -EINVAL;
	WRITE_ONCE(ring->tick_count, count);
	WRITE_ONCE(ring->period_ms, period_ms);
	if (!period_ms) {
		cancel_delayed_work_sync(&ring->tick);
		return 0;
	}
	mod_delayed_work(kmmap_percpu_wq, &ring->tick, msecs_to_jiffies(period_ms));
	return 0;
}

bool kmmap_ring_readable(struct kmmap_ring *ring)
{
	bool readable = false;

	spin_lock(&ring->lock);
	if (ring->hdr)
		readable = READ_ONCE(ring->hdr->tail) != ring->head;
	spin_unlock(&ring->lock);
	return readable;
}
