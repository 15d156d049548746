"""The API's answers as pydantic models: FastAPI documents every route's response with them."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Prediction(BaseModel):
    label: str
    probability: float


class ImageResult(BaseModel):
    filename: str | None = None
    label: str = Field(description="the most probable class")
    probability: float
    confident: bool = Field(description="whether `probability` reaches the model's confidence threshold, fixed on "
                                        "SIGNS data; an answer that is not confident is often wrong")
    predictions: list[Prediction] = Field(description="every class, most probable first")
    image: str | None = Field(None, description="with ?include_image=true: the 64x64 model input as a PNG data URL")


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
