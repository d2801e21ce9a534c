"""Telling a Lance commit conflict (another writer committed first) from a real failure: the store's
writes and maintenance's steps retry the first on a fresh handle and report the second."""

from __future__ import annotations

_CONFLICT_MARKERS = ("preempted by concurrent", "failed to commit after", "commit conflict", "retryable commit")


def is_commit_conflict(exc: BaseException) -> bool:
    """True for a concurrent-commit conflict, which a later attempt on a fresh handle can get past."""
    from lance.commit import CommitConflictError

    if isinstance(exc, CommitConflictError):
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _CONFLICT_MARKERS)
