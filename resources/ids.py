"""Identifiers: time-ordered unique ids (ULID) and stable ids derived from content or position."""

from __future__ import annotations

import os
import threading
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_lock = threading.Lock()
_last = 0


def _forget_after_fork() -> None:
    # A forked child shares the parent's last ULID; incrementing from it in the same millisecond
    # would give both processes the same ids. Start the child from fresh randomness instead.
    global _last, _lock
    _last = 0
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def new_ulid() -> str:
    """A 26-character ULID: 48-bit millisecond time + 80 random bits.

    Monotonic within a process: a ULID made in the same millisecond as the previous one is the
    previous one plus one, so names built from them sort in creation order.
    """
    global _last
    candidate = (time.time_ns() // 1_000_000) << _RANDOM_BITS | int.from_bytes(os.urandom(10), "big")
    with _lock:
        if candidate >> _RANDOM_BITS <= _last >> _RANDOM_BITS:
            candidate = _last + 1
        _last = candidate
    chars = []
    for _ in range(26):
        candidate, digit = divmod(candidate, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))


def stable_id(*parts: object) -> str:
    """A 32-hex-digit id that depends only on ``parts``: the same inputs always give the same id."""
    import hashlib  # here, not at the top: `sessionlake capture` imports this module on every prompt

    joined = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:32]
