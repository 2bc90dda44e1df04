"""`ByteLRU`: a cache bounded by bytes, and the engine's Gram-target cache built on it."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from stylecore.cache import ByteLRU, nbytes_of
from stylecore.params import Params
from stylecore.transfer import StyleTransfer, TransferJob


def test_sizes_of_tensors_arrays_bytes_and_containers():
    t = torch.zeros(10, 10)  # float32
    assert nbytes_of(t) == 400
    assert nbytes_of(torch.zeros(3, dtype=torch.float64)) == 24
    assert nbytes_of(np.zeros(5, dtype=np.uint8)) == 5
    assert nbytes_of(b"abcd") == 4 and nbytes_of(bytearray(3)) == 3 and nbytes_of(memoryview(b"xy")) == 2
    assert nbytes_of({"a": t, "b": [t, b"12"]}) == 802
    with pytest.raises(TypeError, match="size_fn"):
        nbytes_of(object())


def test_evicts_least_recently_used_until_the_bytes_fit():
    c: ByteLRU[str, torch.Tensor] = ByteLRU(1000)
    a, b, d = torch.zeros(100), torch.zeros(100), torch.zeros(100)  # 400 bytes each
    assert c.put("a", a) and c.put("b", b)
    assert (len(c), c.nbytes) == (2, 800)
    assert c.get("a") is a  # a is now the most recently used
    c.put("d", d)  # 1200 > 1000: evicts b, the least recently used
    assert "b" not in c and c.get("b") is None and c.get("a") is a and c.get("d") is d
    assert (len(c), c.nbytes, c.evictions) == (2, 800, 1)
    assert list(c.keys()) == ["a", "d"]


def test_replacing_a_key_updates_the_total_and_oversized_items_are_not_stored():
    c = ByteLRU(1000)
    c.put("a", torch.zeros(100))
    c.put("a", torch.zeros(50))
    assert (len(c), c.nbytes) == (1, 200)
    c.put("b", torch.zeros(10))
    assert c.put("huge", torch.zeros(1000)) is False  # 4000 bytes alone: refused, nothing evicted
    assert (len(c), c.nbytes, "huge" in c) == (2, 240, False)
    assert c.put("a", torch.zeros(1000)) is False and "a" not in c and c.nbytes == 40  # old value dropped
    assert c.pop("b") is not None and (len(c), c.nbytes) == (0, 0)
    assert c.pop("b", "gone") == "gone"


def test_size_fn_zero_budget_and_bad_arguments():
    c = ByteLRU(10, size_fn=len)
    c.put("x", "12345")
    c.put("y", "123456")  # 11 > 10: x goes
    assert "x" not in c and c.nbytes == 6
    c.clear()
    assert (len(c), c.nbytes) == (0, 0)
    off = ByteLRU(0)
    assert off.put("k", b"1") is False and len(off) == 0
    assert off.put("empty", b"") is True  # zero bytes fit in zero bytes
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError):
            ByteLRU(bad)
    with pytest.raises(ValueError):
        ByteLRU(10, size_fn=lambda v: -1).put("k", 1)


def test_threads_keep_the_byte_count_exact():
    c = ByteLRU(4000, size_fn=len)

    def work(k: int) -> None:
        for i in range(300):
            c.put((k, i % 40), b"x" * (1 + i % 97))
            c.get((k, (i * 7) % 40))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.nbytes == sum(len(c.get(k)) for k in list(c.keys())) <= 4000


def _grams_job(key: str, style: torch.Tensor) -> TransferJob:
    p = Params(size=20, iterations=0, weights="random", style_layers=("relu1_1", "relu2_1"), content_layers=("relu1_2",))
    return TransferJob(torch.rand(1, 3, 20, 20), (style,), p, style_keys=(key,))


def test_engine_gram_cache_is_bounded_by_bytes():
    # relu1_1 + relu2_1 Grams: (64^2 + 128^2) float32 = 81,920 bytes per style.
    per_style = (64 * 64 + 128 * 128) * 4
    eng = StyleTransfer("cpu", style_cache_bytes=2 * per_style + 100)
    styles = [torch.rand(1, 3, 20, 20) for _ in range(3)]
    for k, s in enumerate(styles):
        eng.run([_grams_job(f"s{k}.jpg", s)])
    cache = eng._gram_cache
    assert isinstance(cache, ByteLRU)
    assert len(cache) == 2 and cache.nbytes == 2 * per_style  # the oldest style was evicted by bytes
    assert {k[0] for k in cache.keys()} == {"s1.jpg", "s2.jpg"}
    off = StyleTransfer("cpu", style_cache_bytes=0)
    off.run([_grams_job("s0.jpg", styles[0])])
    assert len(off._gram_cache) == 0  # a zero budget caches nothing and still runs
