"""The API's answers as pydantic models: FastAPI documents every route's response with them."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Prediction(BaseModel):
    label: str
    probability: float


class HandFound(BaseModel):
    found: bool = Field(description="whether the hand finder found a hand; when it did not, the whole photo was read "
                                    "and the answer is not confident")
    score: float | None = Field(None, description="the hand finder's certainty, 0 to 1: the palm's score times the "
                                                  "hand's presence; on a stream's tracked frame the presence alone")
    crop: list[int] | None = Field(None, description="the square the model read: left, top, right, bottom in the "
                                                     "photo's pixels (after EXIF orientation; it may reach past "
                                                     "the edges), the hand cut out of it onto SIGNS' background; "
                                                     "null: no hand, the whole photo")
    fingers: int | None = Field(None, ge=0, le=5,
                                description="the hand's reading: the most probable count of fingers held up, the "
                                            "thumb among them (a fist or an O: 0); an answer counting otherwise is "
                                            "not confident; null: no hand")
    counts: list[float] | None = Field(None, description="the hand's reading: the probability of each count 0 to 5, "
                                                         "which the answer combines with the network's")
    fingers_up: list[float] | None = Field(None, description="each finger's probability of being held up: thumb, "
                                                             "index, middle, ring, little")
    o: float | None = Field(None, description="the probability that the hand makes an O (a 0)")
    points: list[list[float]] | None = Field(None, description="the hand's 21 landmarks, x and y in the photo's "
                                                               "pixels (MediaPipe's order: the wrist first)")


class ImageResult(BaseModel):
    filename: str | None = None
    label: str = Field(description="the most probable class")
    probability: float
    confident: bool = Field(description="whether a hand was found, its reading counts as many fingers as `label`, "
                                        "and `probability` reaches the model's confidence threshold, fixed on SIGNS "
                                        "data; an answer that is not confident is often wrong")
    hand: HandFound | None = Field(description="where the hand was found; null for a photo no larger than the model's "
                                               "input (64x64), which is read as it is")
    predictions: list[Prediction] = Field(description="every class, most probable first: the network's probabilities "
                                                      "combined with the hand's reading where it has one")
    network: list[Prediction] | None = Field(None, description="the network's own probabilities, most probable first, "
                                                               "before the hand's reading is combined with them")
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
