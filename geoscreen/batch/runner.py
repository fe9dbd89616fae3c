"""The scan loop: plan scenes, run their chunks on an executor, finish each scene.

At most a few scenes are in flight at once (bounded memory); the client is the
only writer to the store.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoscreen.batch.executors import Executor
from geoscreen.batch.idcache import CACHE_FILE as ID_CACHE_FILE
from geoscreen.batch.idcache import SceneIdCache
from geoscreen.batch.scan import (
    ScanSettings,
    SceneOutcome,
    ScenePlan,
    _profile,
    check_plan,
    completed_runs,
    failure,
    finish_scene,
    plan_scene,
    record_failure,
    score_chunk,
    uncovered_runs,
)
from geoscreen.batch.sources import SceneRef
from geoscreen.review.store import Store
from geoscreen.vision.task import Chunk

Listener = Callable[[SceneOutcome], None]


@dataclass
class ScanSummary:
    """Totals of one scan."""

    outcomes: list[SceneOutcome] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> int:
        return self.count("failed")

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenes": len(self.outcomes),
            "screened": self.count("screened"),
            "skipped": self.count("skipped"),
            "failed": self.failed,
            "tiles": sum(o.tiles for o in self.outcomes),
            "new_sites": sum(o.new_sites for o in self.outcomes),
            "reseen_sites": sum(o.reseen_sites for o in self.outcomes),
            "below_threshold": sum(o.below_threshold for o in self.outcomes),
            "seconds": round(self.seconds, 2),
            "failures": [
                {"scene": o.uri, "error": o.error} for o in self.outcomes if o.status == "failed"
            ],
        }


def run_scan(
    refs: Sequence[SceneRef],
    settings: ScanSettings,
    store: Store,
    executor: Executor,
    *,
    actor: str,
    listener: Listener | None = None,
) -> ScanSummary:
    """Screen every scene of ``refs`` that the store does not hold yet."""
    started = time.perf_counter()
    summary = ScanSummary()
    profile = _profile(settings.profile_path)

    def report(outcome: SceneOutcome) -> None:
        summary.outcomes.append(outcome)
        if outcome.status == "failed":
            record_failure(store, outcome, profile, actor)
        if listener is not None:
            listener(outcome)

    plans: list[tuple[ScenePlan, float]] = []
    with SceneIdCache(Path(settings.work_dir) / ID_CACHE_FILE) as ids:
        for ref in refs:
            t0 = time.perf_counter()
            planned = plan_scene(ref, settings, ids)
            if isinstance(planned, SceneOutcome):
                report(planned)
            else:
                plans.append((planned, t0))
    done = completed_runs(store, [p.run_id for p, _ in plans])
    done -= uncovered_runs([p for p, _ in plans], settings)  # coverage lost: redo
    todo = []
    for plan, t0 in plans:
        if plan.run_id in done:
            report(SceneOutcome(plan.ref.uri, "skipped", plan.scene.id, plan.run_id))
        elif (unfit := check_plan(plan, settings)) is not None:
            report(unfit)
        else:
            todo.append((plan, t0))
    _run_scenes(todo, settings, store, executor, actor, report)
    summary.seconds = time.perf_counter() - started
    return summary


def _run_scenes(
    todo: list[tuple[ScenePlan, float]],
    settings: ScanSettings,
    store: Store,
    executor: Executor,
    actor: str,
    report: Listener,
) -> None:
    """Score every scene's chunks on ``executor``, finish each scene when its last chunk is in.

    At most ``2 x workers`` scenes are in flight; when one scene's chunks are all scored,
    the next scene's chunks are handed out *before* this process finishes the scene
    (sites, evidence, store), so the workers never wait for the single writer.
    """
    waiting = deque(range(len(todo)))
    owner: dict[Any, int] = {}
    pending: dict[int, int] = {}
    results: dict[int, list[Chunk]] = {}
    errors: dict[int, BaseException] = {}

    def start_next() -> list[Any]:
        if not waiting:
            return []
        k = waiting.popleft()
        plan = todo[k][0]
        pending[k], results[k] = len(plan.chunks), []
        futures = [executor.submit(score_chunk, plan, i, settings) for i in range(len(plan.chunks))]
        owner.update(dict.fromkeys(futures, k))
        return futures

    window = max(1, 2 * executor.workers)
    completions = executor.as_completed(
        [future for _ in range(min(window, len(todo))) for future in start_next()]
    )
    for future in completions:
        k = owner.pop(future)
        pending[k] -= 1
        try:
            results[k].append(future.result())
        except Exception as exc:  # a corrupt scene fails alone; the others go on
            errors.setdefault(k, exc)
        if pending[k]:
            continue
        for more in start_next():
            completions.add(more)
        plan, t0 = todo[k]
        chunks = results.pop(k)
        if k in errors:
            report(failure(plan.ref, errors.pop(k), t0))
            continue
        try:
            report(finish_scene(plan, chunks, settings, store, actor, t0))
        except Exception as exc:
            report(failure(plan.ref, exc, t0))
