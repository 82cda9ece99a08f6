"""Regressions of the host pool and the DRAM tier's accounting."""

import gc

from ckpt.dram import held_bytes
from ckpt.pool import HostPool


def test_pool_finalizer_inside_a_locked_section_does_not_deadlock():
    """Regression: a collection inside the pool's locked section ran a finalizer that waited
    for the same lock, and the thread hung."""
    pool = HostPool(64 << 20)
    lent = pool.acquire(1 << 20)
    cycle = [lent]
    cycle.append(cycle)  # only the cycle keeps the array alive
    del lent, cycle
    with pool._lock:  # what an automatic collection inside acquire() would see
        gc.collect()
    stats = pool.stats
    assert stats.in_use == 0 and stats.allocated >= 1 << 20
    again = pool.acquire(1 << 20)  # the returned slab is reused, not a new one
    assert pool.stats.hits == 1
    del again


def test_a_pool_slab_is_charged_at_its_real_size():
    """Regression: the DRAM tier counted the checkpoint's bytes, not the larger slab held."""
    pool = HostPool(64 << 20)
    buf = pool.acquire(4_198_400)
    assert held_bytes(buf) >= 4_198_400 and held_bytes(buf) % (2 << 20) == 0
    assert held_bytes(buf[:10]) == held_bytes(buf)
