static void produce(struct ring *ring)
{
	lockdep_assert_held(&ring->lock);
	ring->rec[0] = 1;
	smp_store_release(&ring->hdr->head, ring->head);
}

static int consume(struct ring *ring)
{
	int r = 0;

	spin_lock(&ring->lock);
	if (smp_load_acquire(&ring->hdr->head))
		r = READ_ONCE(ring->rec[0]);
	spin_unlock(&ring->lock);
	return r;
}
