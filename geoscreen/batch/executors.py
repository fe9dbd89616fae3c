"""Where chunk tasks run: in this process (default) or on a Dask distributed cluster.

Both expose ``submit(fn, *args) -> future`` and ``as_completed(futures)``; the
scan code is the same for both. On Dask each worker runs one thread (torch gets
one core per worker) and keeps its loaded model between tasks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, Protocol

from geoscreen.errors import ConfigError


class Completions(Protocol):
    """Futures in the order they complete; more may be added while iterating."""

    def add(self, future: Any) -> None: ...

    def __iter__(self) -> Iterator[Any]: ...


class Executor(Protocol):
    """The little the scan needs from an executor."""

    workers: int

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    def as_completed(self, futures: Iterable[Any]) -> Completions: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Runs each task at once, in this process (no parallelism, no pickling)."""

    workers = 1

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # reported through the future, like a remote task
            future.set_exception(exc)
        return future

    def as_completed(self, futures: Iterable[Any]) -> Completions:
        return _InOrder(futures)

    def close(self) -> None:
        return None


class _InOrder:
    """Local futures are done when submitted: they complete in submission order."""

    def __init__(self, futures: Iterable[Any]) -> None:
        self._queue = deque(futures)

    def add(self, future: Any) -> None:
        self._queue.append(future)

    def __iter__(self) -> Iterator[Any]:
        while self._queue:
            yield self._queue.popleft()


class DaskExecutor:
    """Tasks on Dask workers: a local cluster of ``workers`` processes, or ``address``."""

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover - dask is a dependency
            raise ConfigError(
                "Dask distributed is not installed", fix="pip install 'dask[distributed]'"
            ) from exc
        self._cluster: Any = None
        if address:
            try:
                self.client = Client(address, timeout=10)
            except OSError as exc:
                raise ConfigError(
                    f"cannot reach the Dask scheduler at {address} ({exc})",
                    fix="Check the address and that the scheduler runs.",
                ) from exc
        else:
            self._cluster = LocalCluster(
                n_workers=workers or 2,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=40,
            )
            self.client = Client(self._cluster)
        self.workers = max(1, len(self.client.scheduler_info().get("workers", {})))

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False)

    def as_completed(self, futures: Iterable[Any]) -> Completions:
        from distributed import as_completed

        completions: Completions = as_completed(list(futures))
        return completions

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def make_executor(workers: int | None = None, cluster: str | None = None) -> Executor:
    """Local unless ``workers`` > 0 or a ``cluster`` address is given."""
    if cluster:
        return DaskExecutor(address=cluster)
    if workers:
        return DaskExecutor(workers=workers)
    return LocalExecutor()
