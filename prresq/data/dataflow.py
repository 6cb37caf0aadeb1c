"""The data-flow seam: one record's media path + prompt text -> the user message for the chat template.

A flow is any callable `flow(media_path: Path, prompt: str) -> FlowOutput`. `content` is the user
message's content list, in order (`{"type": "image"}`, `{"type": "video"}`, `{"type": "text",
"text": ...}`); `images` / `videos` hold the media for the processor in the order their
placeholders appear; `video_kwargs` are passed through to the processor call (the collator merges
them over a batch). Flows: `ImageFlow` here (IQA: one image, then the prompt); `VideoGridFlow`
and `VideoNativeFlow` in `prresq.data.video`. Config group `conf/dataflow/` (`_target_`), or by
name through `build_flow("image")`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from hydra.utils import instantiate
from PIL import Image

from prresq.data.media import DEFAULT_MAX_PIXELS, load_image


@dataclass
class FlowOutput:
    """The user turn of one sample: chat content plus the media its placeholders stand for."""

    content: list[dict[str, Any]]
    images: list[Image.Image] = field(default_factory=list)
    videos: list[Any] = field(default_factory=list)
    video_kwargs: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Flow(Protocol):
    def __call__(self, media_path: Path, prompt: str) -> FlowOutput: ...


# Flows by name: a class, or its Hydra `_target_` path (imported only when built).
FLOWS: dict[str, str | Callable[..., Flow]] = {
    "image": "prresq.data.dataflow.ImageFlow",
    "video_grid": "prresq.data.video.VideoGridFlow",
    "video_native": "prresq.data.video.VideoNativeFlow",
}


def register_flow(name: str) -> Callable[[type], type]:
    """Class decorator: make a flow buildable by name (`build_flow(name)`)."""

    def deco(cls: type) -> type:
        FLOWS[name] = cls
        return cls

    return deco


@register_flow("image")
class ImageFlow:
    """IQA: the image, then the prompt text (VisualQuality-R1 and PreResQ-R1 IQA).

    `max_image_pixels` (width x height, None = no limit) refuses larger images as bad samples.
    """

    def __init__(self, max_image_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        self.max_image_pixels = max_image_pixels

    def __call__(self, media_path: Path, prompt: str) -> FlowOutput:
        return FlowOutput(
            content=[{"type": "image"}, {"type": "text", "text": prompt}],
            images=[load_image(media_path, self.max_image_pixels)],
        )

    def __repr__(self) -> str:
        return f"ImageFlow(max_image_pixels={self.max_image_pixels})"


def build_flow(spec: str | Mapping[str, Any] | Flow | None = None) -> Flow:
    """A flow from a registered name, a `{_target_: ..., **kwargs}` / `{name: ..., **kwargs}` mapping, or as is.

    `_target_` mappings (the `conf/dataflow/` group) are built by `hydra.utils.instantiate`.
    """
    if spec is None:
        return ImageFlow()
    if isinstance(spec, str):
        spec = {"name": spec}
    if isinstance(spec, Mapping):
        if "_target_" not in spec and spec.get("name") not in FLOWS:
            raise ValueError(f"unknown data flow {dict(spec)}; registered: {sorted(FLOWS)}")
        kwargs = {k: v for k, v in spec.items() if k not in ("_target_", "name")}
        target = spec["_target_"] if "_target_" in spec else FLOWS[spec["name"]]
        if callable(target):
            return target(**kwargs)
        return instantiate({"_target_": target, **kwargs}, _convert_="all")
    if callable(spec):
        return spec
    raise TypeError(f"cannot build a data flow from {spec!r}")


def build_flows(
    image: str | Mapping[str, Any] | Flow | None,
    video: str | Mapping[str, Any] | Flow | None = None,
    processor: Any = None,
) -> dict[str, Flow]:
    """{"iqa": the `dataflow` group's flow, "vqa": the `video_dataflow` flow (VideoGridFlow when unset)}."""
    flows = {"iqa": build_flow(image), "vqa": build_flow(video if video is not None else "video_grid")}
    return {key: fit_flow(flow, processor) for key, flow in flows.items()}


def fit_flow(flow: Flow, processor: Any) -> Flow:
    """Give a flow whose `size_factor` is null the processor's model family's (patch x merge: 28, 32, a tile)."""
    if processor is not None and getattr(flow, "size_factor", 0) is None:
        from prresq.models.families import family_of_processor

        flow.size_factor = family_of_processor(processor).size_factor(processor)  # type: ignore[attr-defined]
    return flow
