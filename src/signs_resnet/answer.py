"""The answer's one rule: from the network's class probabilities and what the hand finder saw, the answer every
path gives (the CLI, /predict, KServe v2, gRPC, and the web page through the API).

    the network's probabilities x how often SIGNS hands of each class show the hand's count -> posterior
    the most probable class                                                                -> the label
    a hand found, showing the label's count, the top probability at the model's threshold  -> confident

The figures behind each part are in docs/accuracy.md ("The hand's count", "Confidence").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from signs_resnet.data.preprocess import Framing
from signs_resnet.hands.reading import COUNT_LIKELIHOOD
from signs_resnet.model_file import LoadedModel


@dataclass(frozen=True)
class Answer:
    """One photo's answer (decide): its class probabilities (weighed by the hand's count), the most probable
    class, and whether the answer is confident."""

    probabilities: list[float]
    label: str
    confident: bool


def finger_count(label: str) -> int | None:
    """How many fingers a class shows held out, for SIGNS' "1" to "5"; None for any other class: SIGNS' "0" is
    an O whose curled fingers the count was not fitted to (hands.reading.finger_ratios), other models' classes
    are not counts."""
    return int(label) if label in ("1", "2", "3", "4", "5") else None


def shows(framing: Framing, label: str) -> bool:
    """Whether the hand's points agree with the class `label`: they show as many fingers held out as it counts
    (finger_count). True without points, and for a class that is no count."""
    return framing.fingers is None or finger_count(label) in (None, framing.fingers)


def posterior(model: LoadedModel, probabilities: list[float], framing: Framing) -> list[float]:
    """The answer's class probabilities: the network's, weighed by the count of fingers the hand's points show
    (Bayes' rule, the count taken as a second look at the photo: each class's probability times how often SIGNS
    hands of that class show that count, hands.reading.COUNT_LIKELIHOOD, summing to 1 again). The network's own
    where there is no count (photos read as they are, no hand found) and for models whose classes are not
    SIGNS'."""
    if (framing.fingers not in range(6) or len(probabilities) != len(model.classes)
            or not all(name in COUNT_LIKELIHOOD for name in model.classes)):
        return probabilities
    weighed = [p * COUNT_LIKELIHOOD[name][framing.fingers] for p, name in zip(probabilities, model.classes)]
    total = sum(weighed)
    return [w / total for w in weighed] if total > 0 else probabilities


def is_confident(model: LoadedModel, probabilities: list[float], framing: Framing) -> bool:
    """The confidence rule, on an answer's probabilities (posterior): a hand was found, its points show as many
    fingers as the answer counts (shows), and the top class probability reaches the model's threshold. No hand,
    no confidence: a photo no larger than the network's input (SIGNS' own, say) is read as it is, without a
    search (the finder would cost some 20 ms a photo, five times the rest of its answer: docs/accuracy.md,
    "Confidence"), and an image tensor carries no hand, so neither is ever confident; their labels are the
    network's own."""
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    return (framing.hand_found and shows(framing, model.classes[best])
            and probabilities[best] >= model.confidence_threshold)


def decide(model: LoadedModel, probabilities: list[float], framing: Framing) -> Answer:
    """The answer to one photo from the network's probabilities and where its hand was found: weighed by the
    hand's count once (posterior), then judged by the confidence rule (is_confident). Every path that answers a
    photo answers through this."""
    weighed = posterior(model, probabilities, framing)
    best = max(range(len(weighed)), key=weighed.__getitem__)
    return Answer(weighed, model.classes[best], is_confident(model, weighed, framing))


def hand_json(framing: Framing) -> dict[str, Any] | None:
    """Where the hand was found, as answers carry it (serving.schemas.HandFound): found, score, crop, fingers;
    None when no hand was looked for."""
    if not framing.searched:
        return None
    return {"found": framing.score is not None, "score": None if framing.score is None else round(framing.score, 4),
            "crop": None if framing.crop is None else list(framing.crop), "fingers": framing.fingers}


def ranked(probabilities: list[float], classes: list[str]) -> list[dict[str, Any]]:
    """Every class with its probability, the most probable first (the original API's "predictions")."""
    order = sorted(range(len(classes)), key=probabilities.__getitem__, reverse=True)
    return [{"label": classes[i], "probability": round(probabilities[i], 6)} for i in order]


def result_json(probabilities: list[float], classes: list[str], confident: bool,
                hand: dict[str, Any] | None = None) -> dict[str, Any]:
    """One file's answer as `signs predict` reports it, from its class probabilities, whether it is confident and
    where its hand was found (hand_json): the label, its probability, the confidence, the hand, and every
    class's probability."""
    best = max(range(len(classes)), key=probabilities.__getitem__)
    return {"label": classes[best], "probability": round(probabilities[best], 6), "confident": confident,
            "hand": hand, "probabilities": {name: round(p, 6) for name, p in zip(classes, probabilities)}}


def note(label: str, hand: dict[str, Any] | None) -> str:
    """What the hand finder adds to an answer's line of text: no hand found, or a count of fingers other than the
    answer's."""
    if hand and not hand["found"]:
        return ", no hand found"
    fingers = (hand or {}).get("fingers")
    if fingers is not None and finger_count(label) not in (None, fingers):
        return f", the hand shows {fingers} finger{'' if fingers == 1 else 's'}"
    return ""
