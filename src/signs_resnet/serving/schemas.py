"""The API's answers as pydantic models: FastAPI documents every route's response with them."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Prediction(BaseModel):
    label: str
    probability: float


class HandFound(BaseModel):
    found: bool = Field(description="whether the hand finder found a hand; when it did not, the whole photo was read "
                                    "and the answer is not confident")
    score: float | None = Field(None, description="the hand finder's certainty, 0 to 1")
    crop: list[int] | None = Field(None, description="the square the model read: left, top, right, bottom in the "
                                                     "photo's pixels (after EXIF orientation; it may reach past "
                                                     "the edges), the hand cut out of it onto SIGNS' background; "
                                                     "null: no hand, the whole photo")
    fingers: int | None = Field(None, ge=0, le=5,
                                description="how many fingers, the thumb among them, the hand's points show held "
                                            "out; it weighs the probabilities, and an answer of 1 to 5 counting "
                                            "otherwise is not confident; null: no hand")


class ImageResult(BaseModel):
    filename: str | None = None
    label: str = Field(description="the most probable class")
    probability: float
    confident: bool = Field(description="whether a hand was found, its points show as many fingers as `label` counts, "
                                        "and `probability` reaches the model's confidence threshold, fixed on SIGNS "
                                        "data; an answer that is not confident is often wrong")
    hand: HandFound | None = Field(description="where the hand was found; null for a photo no larger than the model's "
                                               "input (64x64), which is read as it is")
    predictions: list[Prediction] = Field(description="every class, most probable first: the network's probabilities, "
                                                      "weighed by the hand's count of fingers where it has one")
    image: str | None = Field(None, description="with ?include_image=true: the 64x64 model input (the hand's square) as a PNG "
                                         "data URL")


class ModelInfo(BaseModel):
    name: str
    checksum: str
    engine: str
    classes: list[str]
    version: str


class Timing(BaseModel):
    decode_ms: float
    queue_ms: float
    inference_ms: float
    total_ms: float
    batch_size: int = Field(description="images in the forward pass that answered this request")


class PredictResponse(BaseModel):
    success: bool = True
    predictions: list[Prediction] | None = Field(
        None, description="the original's key: every class of the image, most probable first (one image only)")
    results: list[ImageResult] = Field(description="one entry per uploaded image, in upload order")
    model: ModelInfo
    timing: Timing


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    success: bool = False
    error: ErrorDetail


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    model: ModelInfo | None = None
