"""Classifying image files on a running server, as `signs predict --server URL` does: the same files
(inference.classify.find_images) and the same results as inference.classify.classify_files, so the command prints the same
text, JSON or CSV whether it ran the model here or there.

The photos go to the server's `POST /predict` in requests of at most the server's `max_images` (it says
in its model metadata; 64 when it does not). /predict answers a request as a whole, so a photo the
server cannot read becomes that photo's error and the rest of its request is sent again; a request over
the server's body limit is split in halves. Anything else the server refuses (a wrong API key, an
overloaded server after a few tries) stops the run with its message.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from signs_resnet.answer import result_json

DEFAULT_MAX_IMAGES = 64
RETRIES = 5  # tries per request while the server answers 503 (overloaded or starting)
IMAGE_ERROR = re.compile(r"^image (\d+)\b")  # "image 2 (bad.jpg): not a readable image": the server names it


class RemoteModel:
    """A running `signs serve` at `url`: its classes and its images per request."""

    def __init__(self, url: str, api_key: str = "", timeout: float = 60):
        headers = {"X-API-Key": api_key} if api_key else {}
        self.url = url.rstrip("/")
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        ready = self._get("/readyz")
        self.classes: list[str] = ready["model"]["classes"]
        metadata = self.client.get(f"/v2/models/{ready['model']['name']}")  # behind the API key, if any
        self._check(metadata)
        self.max_images = int(metadata.json().get("parameters", {}).get("max_images", DEFAULT_MAX_IMAGES))

    def close(self) -> None:
        self.client.close()

    def classify(self, files: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
        """Results for (path, bytes) files in one request (more when the server refuses some)."""
        if not files:
            return []
        response = self._post(files)
        if response.status_code == 200:
            return [{"path": path} | result_json([p["probability"] for p in _in_class_order(result, self.classes)],
                                            self.classes, result["confident"], result.get("hand"),
                                            _network_of(result, self.classes))
                    for (path, _), result in zip(files, response.json()["results"])]
        error = _error_of(response)
        failed = IMAGE_ERROR.match(error["message"])
        if response.status_code in (400, 413) and failed and 1 <= int(failed.group(1)) <= len(files):
            index = int(failed.group(1)) - 1
            path = files[index][0]
            reason = error["message"].removeprefix(f"image {index + 1} ({Path(path).name}): ")
            return (self.classify(files[:index]) + [{"path": path, "error": f"{path}: {reason}"}]
                    + self.classify(files[index + 1:]))
        if error["code"] == "payload_too_large":
            if len(files) == 1:
                return [{"path": files[0][0], "error": error["message"]}]
            half = len(files) // 2
            return self.classify(files[:half]) + self.classify(files[half:])
        raise ValueError(f"{self.url}: {response.status_code} {error['message']}")

    def _post(self, files: list[tuple[str, bytes]]) -> httpx.Response:
        upload = [("image", (Path(path).name, blob, "application/octet-stream")) for path, blob in files]
        return self._send(lambda: self.client.post("/predict", files=upload))

    def _get(self, path: str) -> dict[str, Any]:
        response = self._send(lambda: self.client.get(path))
        self._check(response)
        return response.json()

    def _send(self, request) -> httpx.Response:
        """`request()`, again after Retry-After while the server answers 503 (starting up or overloaded);
        ConnectionError when the server cannot be reached."""
        try:
            response = request()
            for _ in range(RETRIES - 1):
                if response.status_code != 503 or _error_of(response)["code"] == "hand_models_missing":
                    break  # answered, or a 503 that waiting does not mend
                time.sleep(min(float(response.headers.get("retry-after", 1)), 10))
                response = request()
        except httpx.TransportError as error:
            raise ConnectionError(f"cannot reach {self.url}: {error or type(error).__name__}") from None
        return response

    def _check(self, response: httpx.Response) -> None:
        if response.status_code != 200:
            raise ValueError(f"{self.url}{response.url.path}: {response.status_code} {_error_of(response)['message']}")


def classify_remote(model: RemoteModel, found: list[tuple[str, str | None]],
                    batch_size: int) -> Iterator[dict[str, Any]]:
    """One result per entry of `found` (what find_images found), in that order, as inference.classify.classify_files
    gives them."""
    size = max(1, min(batch_size, model.max_images))
    for start in range(0, len(found), size):
        results: dict[int, dict[str, Any]] = {}
        files, indices = [], []
        for index, (path, error) in enumerate(found[start:start + size]):
            if error:
                results[index] = {"path": path, "error": error}
                continue
            try:
                files.append((path, Path(path).read_bytes()))
                indices.append(index)
            except OSError as failure:
                results[index] = {"path": path, "error": failure.strerror or str(failure)}
        results |= dict(zip(indices, model.classify(files)))
        yield from (results[index] for index in sorted(results))


def _in_class_order(result: dict[str, Any], classes: list[str]) -> list[dict[str, Any]]:
    by_label = {p["label"]: p for p in result["predictions"]}
    return [by_label[name] for name in classes]


def _network_of(result: dict[str, Any], classes: list[str]) -> list[float] | None:
    """The network's own probabilities in class order, None from a server that does not send them."""
    if not result.get("network"):
        return None
    by_label = {p["label"]: p["probability"] for p in result["network"]}
    return [by_label[name] for name in classes]


def _error_of(response: httpx.Response) -> dict[str, str]:
    """The server's {"code", "message"} (the v2 routes' {"error": message} too), else the HTTP reason."""
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return {"code": "error", "message": response.reason_phrase or "no answer"}
    return error if isinstance(error, dict) else {"code": "error", "message": str(error)}
