"""Photos to answers, the one path that `/predict` (app.py) and `/stream` (stream.py) share, so that the two
answer the same photo alike (a stream's frame once its hand is located: tracked from the frame before, or found
as /predict finds it):

    image files -> open_image (headers only: format, size, max_pixels) -> prepare_images (the hand found and cut
    out; a decoding thread, or the event loop for small photos) -> runtime.classify (the Batcher) ->
    answer.decide -> photo_result: one element of /predict's `results`
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from signs_resnet.answer import decide, hand_json, ranked
from signs_resnet.data.decoding import ImageError, open_image
from signs_resnet.data.preprocess import Framing
from signs_resnet.model_file import LoadedModel
from signs_resnet.serving.batching import BatchResult
from signs_resnet.serving.errors import decode_error
from signs_resnet.serving.runtime import INLINE_DECODE_MAX_PIXELS, Runtime
from signs_resnet.serving.tensors import prepare_images


def photo_result(model: LoadedModel, probabilities: list[float], framing: Framing) -> dict[str, Any]:
    """One photo's answer as the API carries it (serving.schemas.ImageResult, without filename and image): the
    label, its probability, the confidence, where the hand was found and what it shows, every class, most
    probable first, and the network's own probabilities before the hand's reading is combined with them."""
    given = decide(model, probabilities, framing)
    predictions = ranked(given.probabilities, model.classes)
    return {"label": predictions[0]["label"], "probability": predictions[0]["probability"],
            "confident": given.confident, "hand": hand_json(framing), "predictions": predictions,
            "network": ranked(probabilities, model.classes)}


async def classify_photos(runtime: Runtime, files: Sequence[tuple[str | None, bytes]],
                          include_image: bool = False) -> tuple[list[dict[str, Any]], BatchResult, float]:
    """Classify image files (name, bytes), in one batch: each one's photo_result (with `include_image`, also the
    64x64 image the model saw as a PNG data URL, `image`), the batch result and the seconds spent decoding.
    Raises ApiError naming the first file that does not decode (413 over max_pixels), or 503 (not ready, queue
    full, no hand models)."""
    results, _, batch, decode_seconds = await classify_framed(runtime, files, include_image)
    return results, batch, decode_seconds


async def classify_framed(runtime: Runtime, files: Sequence[tuple[str | None, bytes]], include_image: bool = False,
                          previous: Sequence[Sequence[tuple[float, float]] | None] | None = None,
                          ) -> tuple[list[dict[str, Any]], list[Framing], BatchResult, float]:
    """classify_photos with where each file's hand was found (Framing) beside its result; `previous`: for each
    file, the hand's points in the frame before it, where its hand is looked for first (/stream's tracking)."""
    settings = runtime.settings
    engine = runtime.ready_engine()
    opened = []  # headers only: format and size (refused here when over max_pixels)
    for index, (name, blob) in enumerate(files):
        try:
            opened.append(open_image(blob, settings.max_pixels))
        except ImageError as error:
            raise decode_error(index, name, error) from None

    def prepare_all() -> tuple[torch.Tensor, tuple[list[Framing], list[str] | None]]:
        images, framings = prepare_images(opened, engine.model.image_size, settings.max_pixels,
                                          [name for name, _ in files], previous)
        return images, (framings, [_png_data_url(image) for image in images] if include_image else None)

    # Small photos decode on the event loop; never one the hand finder's two networks would run on.
    inline = (sum(image.width * image.height for image in opened) <= INLINE_DECODE_MAX_PIXELS
              and all(max(image.size) <= engine.model.image_size for image in opened))
    (framings, pngs), batch, decode_seconds = await runtime.classify(prepare_all, len(files), inline)
    results = [photo_result(engine.model, row, framing) for row, framing in zip(batch.probabilities, framings)]
    for result, png in zip(results, pngs or []):
        result["image"] = png
    return results, framings, batch, decode_seconds


def _png_data_url(image: torch.Tensor) -> str:
    """The model input (3 x H x W in [0, 1]) back as 8-bit pixels: exactly what the model saw."""
    pixels = (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
