"""Data flows one way: imagery -> vision -> sites -> review -> web.

An AST read of every module under ``geoscreen/`` (no import is executed, so a cycle
or a slow import cannot hide an edge). Every ``import`` counts: module level, inside
functions, and under ``TYPE_CHECKING`` (a type-only import still couples the stages).

Who may import whom (a module's *group* is its package under ``geoscreen``, or the
top-level module's name):

- **neutral** (``errors``, ``fileio``, ``lazy``, ``matching``, ``offline_map``, ``ranking`` and
  the package root): import only each other. Matching and ranking primitives live here
  because sites, evaluate and training all use them; offline maps because the review
  map and the evaluation report both draw them.
- **imagery**: neutral only.
- **shared** (``profiles``, ``labels``, ``samples``): describe inputs every stage reads; they
  may import imagery (scenes, presets) and are importable by everything after imagery.
- **vision, sites, review, web**: neutral, shared and any earlier stage.
- **evaluate** measures: neutral, shared, imagery, vision, sites.
- **batch** orchestrates: everything but web and the entry points.
- **cli**, ``demo``, ``__main__`` (entry points): everything.

Inside vision, inference never imports training (:data:`VISION_TRAINING`): screening
must not load, or depend on, the code that fits models.
"""

from __future__ import annotations

import ast
from pathlib import Path

import geoscreen

ROOT = Path(geoscreen.__file__).parent
STAGES = ("imagery", "vision", "sites", "review", "web")
NEUTRAL = frozenset({"", "errors", "fileio", "lazy", "matching", "offline_map", "ranking"})
SHARED = frozenset({"profiles", "labels", "samples"})
ENTRY = frozenset({"cli", "demo", "__main__"})
ALL = NEUTRAL | SHARED | ENTRY | set(STAGES) | {"batch", "evaluate"}

# Modules that fit models (and their data), and those that load and apply them.
VISION_TRAINING = frozenset(
    {
        "train",
        "select_train",
        "finetune",
        "detect_train",
        "detect_scenes",
        "detect_data",
        "detect_baselines",
        "blobs",
        "blob_train",
        "weight_average",
        "detect_metrics",
        "learners",
        "folds",
        "split",
    }
)
VISION_INFERENCE = frozenset(
    {"infer", "detect_infer", "detect_tta", "classifier", "detector", "scorer", "scoremap",
     "modeldir", "modelcard", "runtime", "boxes", "backbones", "weights", "embeddings",
     "tabular", "inputs", "tilefeatures", "blockscreen", "stages", "fold", "quantize",
     "similarity_model", "blob_detector", "card_warnings"}
)  # fmt: skip

# Edges the rules forbid that remain on purpose, each with its reason. Every entry must
# still exist (a fixed one is removed from here), so the list only shrinks.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def allowed(group: str) -> frozenset[str]:
    """The groups that modules of ``group`` may import."""
    if group in NEUTRAL:
        return NEUTRAL
    if group in SHARED:
        return NEUTRAL | SHARED | {"imagery"}
    if group in STAGES:
        earlier = STAGES[: STAGES.index(group) + 1]
        return NEUTRAL | (SHARED if group != "imagery" else frozenset()) | set(earlier)
    if group == "evaluate":
        return NEUTRAL | SHARED | {"imagery", "vision", "sites", "evaluate"}
    if group == "batch":
        return ALL - {"web"} - ENTRY
    assert group in ENTRY, f"no rule for {group!r}: add it to test_import_graph.py"
    return frozenset(ALL)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every ``geoscreen`` module that ``path`` imports (``from a import b`` gives ``a.b`` where
    that is a module, else ``a``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if is_module(sub) else base)
    return {name for name in found if name.split(".")[0] == "geoscreen"}


def is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def group_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def edges() -> set[tuple[str, str]]:
    return {
        (module_name(path), target)
        for path in sorted(ROOT.rglob("*.py"))
        for target in imports(path)
    }


def test_every_group_has_a_rule() -> None:
    groups = {group_of(module_name(p)) for p in ROOT.rglob("*.py")}
    assert groups <= ALL, f"modules outside every rule: {sorted(groups - ALL)}"


def test_no_stage_imports_a_later_one() -> None:
    bad = sorted(
        (src, dst)
        for src, dst in edges()
        if group_of(dst) not in allowed(group_of(src)) and (src, dst) not in EXCEPTIONS
    )
    assert not bad, "imports against the data flow:\n" + "\n".join(f"{s} -> {d}" for s, d in bad)


def test_vision_inference_never_imports_training() -> None:
    def part(module: str) -> str:
        return module.split(".")[2] if module.startswith("geoscreen.vision.") else ""

    bad = sorted(
        (src, dst)
        for src, dst in edges()
        if part(src) in VISION_INFERENCE
        and part(dst) in VISION_TRAINING
        and (src, dst) not in EXCEPTIONS
    )
    assert not bad, "inference imports training:\n" + "\n".join(f"{s} -> {d}" for s, d in bad)


def test_every_vision_module_is_training_or_inference_or_shared() -> None:
    """A new vision module needs a side, or the rule above silently skips it."""
    # task: the one interface over both (it trains and it screens)
    shared = {"__init__", "augment", "cards", "detect_card", "testing", "task"}
    names = {p.stem for p in (ROOT / "vision").glob("*.py")}
    unsorted = names - VISION_TRAINING - VISION_INFERENCE - shared
    assert not unsorted, f"add to VISION_TRAINING or VISION_INFERENCE: {sorted(unsorted)}"


def test_exceptions_still_exist() -> None:
    stale = sorted(set(EXCEPTIONS) - edges())
    assert not stale, f"fixed, remove from EXCEPTIONS: {stale}"


def test_the_checker_sees_a_backward_import(tmp_path: Path) -> None:
    """The parser finds imports inside functions and under TYPE_CHECKING."""
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from geoscreen.web.app import create_app\n"
        "def f():\n    import geoscreen.review.store\n",
        encoding="utf-8",
    )
    found = imports(source)
    assert {"geoscreen.web.app", "geoscreen.review.store"} <= found
    assert group_of("geoscreen.web.app") not in allowed("sites")
    assert "vision" in allowed("sites") and "sites" not in allowed("vision")
