"""Train the trials of several outer searches together: the hook every stacking backend uses for hyperopt.

Hyperopt (Sec. 4) scores each candidate (lambda1, T) by a full fixed-metaparameter run. The searches of S seeds
are independent, but their k-th trials are S runs that share everything but the seed and the values: exactly
what a stacking backend (:mod:`kdlib.train.stacked`, :mod:`kdlib.train.linear`) trains as one. Each search runs
in its own thread and blocks when it asks for a score; once every search still running has posted its candidate,
the caller's ``train`` trains them as ONE group and hands the scores back (lock step). Each search sees exactly
the scores it would have seen alone, so its trials and its result are those of a one-by-one search.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Sequence, TypeVar

from torch import Tensor

R = TypeVar("R")
Score = Callable[[Tensor], float]  # a search's objective: (lambda1, T) -> its score


class LockStep:
    """Lock-step rendezvous of ``n`` search threads: each objective call posts its candidate and waits; the
    serving thread trains all posted candidates as one group and hands back the scores."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.cv = threading.Condition()
        self.requests: dict[int, Tensor] = {}
        self.replies: dict[int, Any] = {}
        self.done: set[int] = set()
        self.errors: list[BaseException] = []

    def ask(self, i: int, lam: Tensor) -> float:
        with self.cv:
            self.requests[i] = lam
            self.cv.notify_all()
            self.cv.wait_for(lambda: i in self.replies)
            reply = self.replies.pop(i)
        if isinstance(reply, BaseException):
            raise RuntimeError("the searches trained together were aborted") from reply
        return reply

    def finish(self, i: int, error: BaseException | None = None) -> None:
        with self.cv:
            self.done.add(i)
            if error is not None:
                self.errors.append(error)
            self.cv.notify_all()

    def serve(self, train: Callable[[dict[int, Tensor]], dict[int, float]]) -> None:
        while True:
            with self.cv:
                self.cv.wait_for(lambda: len(self.requests) + len(self.done) >= self.n)
                if not self.requests:
                    return
                batch = dict(self.requests)
                self.requests.clear()
            try:
                scores: dict[int, Any] = train(batch)
            except BaseException as exc:  # hand the error to every waiting thread, then re-raise
                with self.cv:
                    self.replies.update({i: exc for i in batch})
                    self.cv.notify_all()
                raise
            with self.cv:
                self.replies.update(scores)
                self.cv.notify_all()


def search_together(searches: Sequence[Callable[[Score], R]],
                    train: Callable[[list[int], list[Tensor]], list[float]]) -> list[R]:
    """Run ``searches[i](score)`` for every i in lock step; ``train(indices, candidates)`` trains the candidates
    the searches ``indices`` posted in one round as one group and returns their scores in that order. Returns
    each search's result; an error in a search or in ``train`` is raised here."""
    sync = LockStep(len(searches))
    results: list[Any] = [None] * len(searches)

    def worker(i: int) -> None:
        try:
            results[i] = searches[i](lambda lam: sync.ask(i, lam))
            sync.finish(i)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the serving thread
            sync.finish(i, exc)

    def serve(batch: dict[int, Tensor]) -> dict[int, float]:
        idx = sorted(batch)
        return dict(zip(idx, train(idx, [batch[i] for i in idx])))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True, name=f"kdlib-search-{i}")
               for i in range(len(searches))]
    for t in threads:
        t.start()
    try:
        sync.serve(serve)
    finally:
        for t in threads:
            t.join()
    if sync.errors:
        raise sync.errors[0]
    return results


__all__ = ["LockStep", "search_together"]
