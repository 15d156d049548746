"""Classifying many image files at once, as `signs predict` does: find them (files and folders,
recursively), decode them in parallel threads, and run them in batches through an engine (the server's
own, engines.py), so that a folder of photos takes seconds, not one forward pass per photo.

Every file goes through the one preprocessing path (preprocess.prepare: the hand found and cut out), so the answers
are the server's.
A file that cannot be read is a result with an "error" and does not stop the others.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from signs_resnet.answer import decide, hand_json, result_json
from signs_resnet.data.datasets import image_files, labelled_files
from signs_resnet.data.preprocess import Framing, prepare
from signs_resnet.hands.detector import finder, search_threads
from signs_resnet.inference.engines import Engine
from signs_resnet.scores import scores


def find_images(paths: Iterable[str | Path]) -> list[tuple[str, str | None]]:
    """(path, error) for every file named and every image file in the folders named, in the order given;
    error is None for a file to classify, else why there is nothing to classify there."""
    found: list[tuple[str, str | None]] = []
    for path in map(Path, paths):
        if path.is_dir():
            files = image_files(path)
            found += [(str(file), None) for file in files] or [(str(path), "folder holds no image files")]
        elif path.exists():
            found.append((str(path), None))  # named on purpose: tried whatever its suffix
        else:
            found.append((str(path), "no such file or folder"))
    return found


def classify_files(engine: Engine, files: list[tuple[str, str | None]], batch_size: int = 64,
                   decode_threads: int = 0) -> Iterator[dict[str, Any]]:
    """One result per entry of `files` (what find_images found), in that order: {"path", "label",
    "probability", "confident", "hand", "probabilities", "network"} (answer.result_json) or {"path", "error"}.
    The next batches decode while the current one runs."""
    image_size = engine.model.image_size
    finder()  # here, so that unusable hand models are one error, not one per file
    batches = [files[start:start + batch_size] for start in range(0, len(files), batch_size)]
    threads = decode_threads or search_threads()
    with ThreadPoolExecutor(threads, thread_name_prefix="decode") as pool:
        def submit(batch: list[tuple[str, str | None]]) -> list[tuple[str, str | None, Future | None]]:
            return [(path, error, None if error else pool.submit(prepare, path, image_size))
                    for path, error in batch]

        pending = deque(submit(batch) for batch in batches[:2])
        for index in range(len(batches)):
            batch = pending.popleft()
            if index + 2 < len(batches):
                pending.append(submit(batches[index + 2]))
            yield from _classify_batch(engine, batch)


def _classify_batch(engine: Engine, batch: list[tuple[str, str | None, Future | None]]) -> Iterator[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    images: list[torch.Tensor] = []
    framings: list[Framing] = []
    for path, error, future in batch:
        if future is not None:
            try:
                image, framing = future.result()
                images.append(image)
                framings.append(framing)
            except (ValueError, OSError) as failure:  # ImageError is a ValueError
                error = str(failure)
        results.append({"path": path, "error": error} if error else {"path": path})
    if images:
        with torch.inference_mode():
            probabilities = engine.run(torch.stack(images)).tolist()
        answered = iter(zip(probabilities, framings))
        for result in results:
            if "error" not in result:
                row, framing = next(answered)
                given = decide(engine.model, row, framing)
                result |= result_json(given.probabilities, engine.model.classes, given.confident, hand_json(framing),
                                      row)
    yield from results


def evaluate_folder(engine: Engine, folder: str | Path, batch_size: int = 64) -> dict[str, Any]:
    """The product's answers (classify_files: the hand found and cut out, its reading combined with the
    network) on a folder of labelled photos (class subfolders, or file names starting with the class), scored
    against their labels (scores.scores); beside them the network's own answers ("network"), the hand's
    reading's ("landmarks_accuracy") and the share of photos whose hand was found ("hands_found"); each error
    names its file ("path"). Unreadable files are counted in "unreadable", not scored."""
    classes = engine.model.classes
    labelled = labelled_files([Path(folder)])
    unknown = sorted({label for _, label in labelled} - set(classes))
    if unknown:
        raise ValueError(f"{folder}: labels {unknown} are not the model's classes {classes}")
    results = list(classify_files(engine, [(str(path), None) for path, _ in labelled], batch_size))
    read = [(result, classes.index(label)) for result, (_, label) in zip(results, labelled) if "error" not in result]
    if not read:
        raise ValueError(f"{folder}: no photo could be read")
    labels = torch.tensor([label for _, label in read])
    answers = torch.tensor([[result["probabilities"][name] for name in classes] for result, _ in read])
    network = torch.tensor([[result["network"][name] for name in classes] for result, _ in read])
    counts = [(result["hand"] or {}).get("fingers") for result, _ in read]
    summary = scores(answers, labels, classes, str(folder))
    for error in summary["errors"]:
        error["path"] = read[error["index"]][0]["path"]
    summary["network"] = scores(network, labels, classes, str(folder))
    # the landmarks alone: the hand's reading's count, for SIGNS' classes (no hand read: wrong)
    summary["landmarks_accuracy"] = (sum(count is not None and classes[label] == str(count)
                                         for count, (_, label) in zip(counts, read)) / len(read))
    summary["hands_found"] = sum(bool(result["hand"] and result["hand"]["found"]) for result, _ in read) / len(read)
    summary["confident"] = sum(result["confident"] for result, _ in read) / len(read)
    summary["unreadable"] = len(results) - len(read)
    return summary
