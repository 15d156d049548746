"""The answer's one rule: from the network's class probabilities and what the hand finder saw, the answer every
path gives (the CLI, /predict, KServe v2, gRPC, and the web page through the API).

    the network's probabilities ^ a x the landmarks' probability of each count ^ b         -> posterior
    the most probable class                                                                -> the label
    a hand found, its reading's count the label's, the top probability at the threshold    -> confident

a and b (LoadedModel.combination) are fitted on SIGNS photos alone; the figures behind each part are in
docs/robustness.md ("The hand's reading", "The combination") and docs/accuracy.md ("Confidence").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from signs_resnet.data.preprocess import Framing
from signs_resnet.model_file import LoadedModel


@dataclass(frozen=True)
class Answer:
    """One photo's answer (decide): its class probabilities (the network's combined with the hand's reading), the most probable
    class, and whether the answer is confident."""

    probabilities: list[float]
    label: str
    confident: bool


def finger_count(label: str) -> int | None:
    """How many fingers a class shows held up, for SIGNS' "0" to "5" (a "0" is an O or a fist); None for any other
    model's classes, which are not counts."""
    return int(label) if label in ("0", "1", "2", "3", "4", "5") else None


def shows(framing: Framing, label: str) -> bool:
    """Whether the hand's reading agrees with the class `label`: its most probable count is the label's
    (finger_count). True without a reading, and for a class that is no count."""
    return framing.fingers is None or finger_count(label) in (None, framing.fingers)


def posterior(model: LoadedModel, probabilities: list[float], framing: Framing) -> list[float]:
    """The answer's class probabilities: the network's and the landmarks' (the reading's probability of each
    count, hands.reading) combined as a weighted product, p_net^a x p_count^b, summing to 1 again, with the
    model's weights (LoadedModel.combination: how far each part has earned trust on SIGNS photos shifted as real
    photos are). The network's own where there is no reading (photos read as they are, no hand found) and for
    models whose classes are not SIGNS' counts."""
    counts = [finger_count(name) for name in model.classes]
    if framing.reading is None or len(probabilities) != len(counts) or None in counts:
        return probabilities
    network, landmarks = model.combination
    floor = 1e-12  # a probability of 0 from either part weighs, it does not veto
    logs = [network * math.log(max(p, floor)) + landmarks * math.log(max(framing.reading.counts[count], floor))
            for p, count in zip(probabilities, counts)]
    top = max(logs)
    weighed = [math.exp(v - top) for v in logs]
    total = sum(weighed)
    return [w / total for w in weighed]


def is_confident(model: LoadedModel, probabilities: list[float], framing: Framing) -> bool:
    """The confidence rule, on an answer's probabilities (posterior): a hand was found, its reading's count is
    the answer's (shows), and the top class probability reaches the model's threshold. No hand,
    no confidence: a photo no larger than the network's input (SIGNS' own, say) is read as it is, without a
    search (the finder would cost some 20 ms a photo, five times the rest of its answer: docs/accuracy.md,
    "Confidence"), and an image tensor carries no hand, so neither is ever confident; their labels are the
    network's own."""
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    return (framing.hand_found and shows(framing, model.classes[best])
            and probabilities[best] >= model.confidence_threshold)


def decide(model: LoadedModel, probabilities: list[float], framing: Framing) -> Answer:
    """The answer to one photo from the network's probabilities and where its hand was found: weighed by the
    hand's reading once (posterior), then judged by the confidence rule (is_confident). Every path that answers a
    photo answers through this."""
    weighed = posterior(model, probabilities, framing)
    best = max(range(len(weighed)), key=weighed.__getitem__)
    return Answer(weighed, model.classes[best], is_confident(model, weighed, framing))


def hand_json(framing: Framing) -> dict[str, Any] | None:
    """Where the hand was found and what it shows, as answers carry it (serving.schemas.HandFound): found, score,
    crop, fingers (the reading's count), the reading (each count's probability, each finger's of being held up:
    thumb, index, middle, ring, little; an O's) and the 21 points; None when no hand was looked for."""
    if not framing.searched:
        return None
    found = {"found": framing.score is not None, "score": None if framing.score is None else round(framing.score, 4),
             "crop": None if framing.crop is None else list(framing.crop), "fingers": framing.fingers,
             "counts": None, "fingers_up": None, "o": None,
             "points": None if framing.points is None else [[round(x, 1), round(y, 1)] for x, y in framing.points]}
    if framing.reading is not None:
        found.update(counts=[round(p, 4) for p in framing.reading.counts],
                     fingers_up=[round(p, 4) for p in framing.reading.fingers_up], o=round(framing.reading.o, 4))
    return found


def ranked(probabilities: list[float], classes: list[str]) -> list[dict[str, Any]]:
    """Every class with its probability, the most probable first (the original API's "predictions")."""
    order = sorted(range(len(classes)), key=probabilities.__getitem__, reverse=True)
    return [{"label": classes[i], "probability": round(probabilities[i], 6)} for i in order]


def result_json(probabilities: list[float], classes: list[str], confident: bool,
                hand: dict[str, Any] | None = None, network: list[float] | None = None) -> dict[str, Any]:
    """One file's answer as `signs predict` reports it, from its class probabilities, whether it is confident,
    where its hand was found and what it shows (hand_json), and the network's own probabilities: the label, its
    probability, the confidence, the hand, every class's probability, and the network's."""
    best = max(range(len(classes)), key=probabilities.__getitem__)
    result = {"label": classes[best], "probability": round(probabilities[best], 6), "confident": confident,
              "hand": hand, "probabilities": {name: round(p, 6) for name, p in zip(classes, probabilities)}}
    if network is not None:
        result["network"] = {name: round(p, 6) for name, p in zip(classes, network)}
    return result


def note(label: str, hand: dict[str, Any] | None) -> str:
    """What the hand finder adds to an answer's line of text: no hand found, or a count of fingers other than the
    answer's."""
    if hand and not hand["found"]:
        return ", no hand found"
    fingers = (hand or {}).get("fingers")
    if fingers is not None and finger_count(label) not in (None, fingers):
        return f", the hand shows {fingers} finger{'' if fingers == 1 else 's'}"
    return ""
