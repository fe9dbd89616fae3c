"""The trunk's resolution stages: where each one ends, and their maps during a forward pass.

Two users read them. The detector's feature pyramid takes the maps at the strides its
object sizes need. The deep-feature learners pool every stage next to the last layer
(:class:`~geoscreen.vision.scorer.DeepFeatures` with ``stages=True``): the last layer of
an ImageNet trunk describes objects at 1/32 of the tile, while what tells a crown,
a kiln or a roof from its surroundings in 0.1-10 m imagery is as much colour and texture
at finer scales.

Maps are read with forward hooks registered for the duration of one call
(:func:`stage_maps`), so the modules copy, pickle and run in threads like any other. A
trunk rewritten as one graph (the int8 trunk, :mod:`geoscreen.vision.quantize`) has no
modules left to hook: :func:`tap_stages` makes the graph return the maps itself, and
:class:`StageTaps` is what :func:`stage_maps` then calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.fx
from torch import nn

from geoscreen.vision.backbones import Backbone

# Where a trunk's blocks live when they are not the trunk's own children.
STAGE_CONTAINERS = {f"efficientnet_lite{k}": "net._blocks" for k in range(3)}
PROBE_PX = 128


@dataclass(frozen=True)
class Stage:
    """The last block at one stride: its module path in ``Backbone.body``, width, stride."""

    path: str
    channels: int
    stride: int


def stage_container(backbone_name: str) -> str:
    """Path (in ``Backbone.body``) of the module whose children are the trunk's blocks."""
    return STAGE_CONTAINERS.get(backbone_name, "")


def trunk_stages(backbone: Backbone, in_channels: int) -> tuple[list[Stage], Stage]:
    """The last block at each stride, finest first, and the trunk output (path ``""``).

    Found by one probe pass on a blank ``PROBE_PX`` tile with hooks on every block.
    """
    body = backbone.body
    container_path = stage_container(backbone.name)
    container = body.get_submodule(container_path) if container_path else body
    shapes: dict[str, tuple[int, int]] = {}

    def record(name: str, _m: nn.Module, _i: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.ndim == 4:
            shapes[name] = (int(out.shape[1]), PROBE_PX // int(out.shape[2]))

    handles = [
        child.register_forward_hook(partial(record, name))
        for name, child in container.named_children()
    ]
    was_training = body.training
    try:
        body.eval()
        with torch.no_grad():
            top = body(torch.zeros(1, in_channels, PROBE_PX, PROBE_PX))
    finally:
        body.train(was_training)
        for handle in handles:
            handle.remove()
    last_at: dict[int, str] = {}
    for name, (_, stride) in shapes.items():  # blocks in forward order: the last one wins
        last_at[stride] = name
    prefix = f"{container_path}." if container_path else ""
    stages = [
        Stage(prefix + name, shapes[name][0], stride) for stride, name in sorted(last_at.items())
    ]
    return stages, Stage("", int(top.shape[1]), PROBE_PX // int(top.shape[2]))


def stage_maps(
    body: nn.Module, paths: Sequence[str], x: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The output maps of the modules at ``paths`` (in that order) and the trunk output,
    from one forward pass of ``body`` on ``x``."""
    if isinstance(body, StageTaps):
        if body.paths != tuple(paths):
            raise ValueError(f"this trunk returns the maps of {body.paths}, not {tuple(paths)}")
        return body.maps(x)
    captured: dict[str, torch.Tensor] = {}
    handles = [
        body.get_submodule(path).register_forward_hook(partial(_capture, captured, path))
        for path in paths
    ]
    try:
        top = body(x)
    finally:
        for handle in handles:
            handle.remove()
    return [captured[path] for path in paths], top


def _capture(
    store: dict[str, torch.Tensor], key: str, _module: nn.Module, _inputs: Any, output: Any
) -> None:
    store[key] = output


class StageTaps(nn.Module):
    """A trunk as one graph returning the maps at ``paths`` and its output (``(*maps,
    top)``, from :func:`tap_stages`); called, it returns the output alone, as a trunk
    does."""

    def __init__(self, graph: nn.Module, paths: Sequence[str]) -> None:
        super().__init__()
        self.graph = graph
        self.paths = tuple(paths)

    def maps(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The maps at ``paths`` and the trunk output, from one pass."""
        *maps, top = self.graph(x)
        return list(maps), top

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.graph(x)[-1]
        return out


def tap_stages(body: nn.Module, paths: Sequence[str]) -> torch.fx.GraphModule:
    """``body`` traced into a graph that returns ``(*maps, top)``: the output of the
    module at each of ``paths`` (the last operation run inside it) and the trunk output.

    Raises ``torch.fx`` errors for trunks whose forward branches on tensor values or
    sizes (EfficientNet-Lite's padding), and ValueError for a path the trace never
    enters.
    """
    graph = torch.fx.symbolic_trace(body)
    nodes = list(graph.graph.nodes)
    taps = []
    for path in paths:
        inside = [n for n in nodes if path in (n.meta.get("nn_module_stack") or {})]
        if not inside:
            raise ValueError(f"no operation of the trunk runs inside {path!r}")
        taps.append(inside[-1])
    output = nodes[-1]
    output.args = ((*taps, output.args[0]),)
    graph.recompile()
    return graph
