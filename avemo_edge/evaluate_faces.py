"""`avemo-edge evaluate-faces`: the model's visual accuracy on a user's own labelled face images.

The folder is laid out `<folder>/<emotion>/*.png|jpg`. Each image goes through the runtime's
own pieces: either the runtime's detector and crop (`FaceCropper`), or, with the detector off,
the whole image made into the model's input by the same crop function (a box over the whole
image, no margin: for a square image, a plain resize). One recognizer step per image, from a
fresh stream, without audio; the prediction is the argmax of that step's probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .analyze import SYNONYMS, AnalyzeError, require_extras

IMAGE_TYPES = (".png", ".jpg", ".jpeg")
REFUSED = {"contempt": "contempt is not one of the model's classes"}


@dataclass
class FaceEvaluation:
    classes: list[str]
    images: int
    no_face: int  # images where the detector found no face (detector on); not in the metrics
    accuracy: float | None
    macro_f1: float | None
    recall: dict[str, float]
    confusion: list[list[int]]
    labels: list[str]  # rows and columns of the confusion matrix
    unreadable: list[tuple[str, str]]

    @property
    def no_face_share(self) -> float:
        return self.no_face / self.images if self.images else 0.0


def list_images(folder: Path, classes: tuple[str, ...]) -> list[tuple[Path, str]]:
    """(image, class) for every image under <folder>/<emotion>/; a folder name the model lacks is refused."""
    if not folder.is_dir():
        raise AnalyzeError(f"{folder} is not a folder; evaluate-faces wants <folder>/<emotion>/*.png|jpg")
    found: list[tuple[Path, str]] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        name = sub.name.lower()
        if name in REFUSED:
            raise AnalyzeError(f"folder {sub}: {REFUSED[name]} ({', '.join(classes)}); move it out of {folder}")
        cls = SYNONYMS.get(name)
        if cls is None or cls not in classes:
            raise AnalyzeError(
                f"folder {sub}: {sub.name!r} is not an emotion the model knows; name folders after its classes "
                f"({', '.join(classes)}) or a synonym such as anger, happiness, sadness, fear, surprise, calm"
            )
        found += [(p, cls) for p in sorted(sub.iterdir()) if p.suffix.lower() in IMAGE_TYPES]
    if not found:
        raise AnalyzeError(f"{folder} holds no <emotion>/*.png or *.jpg images")
    return found


def face_label(recognizer: Any, image: Any, cropper: Any = None) -> int | None:
    """The class index one step of a fresh stream gives for a BGR image, without audio.

    With `cropper` (a `FaceCropper`) the runtime's detector and crop make the input (None when it
    finds no face); without, the whole image is the crop (no margin: a square image is resized).
    """
    from .face import Box, crop_face

    if cropper is not None:
        face = cropper(image)
        if face is None:
            return None
    else:
        h, w = image.shape[:2]
        dims = recognizer.backend.dims
        face = crop_face(image, Box(0, 0, w, h), dims.face_size, dims.face_channels, margin=0.0)
    recognizer.reset()
    return int(recognizer.step(face, None).raw.argmax())


def evaluate_faces(
    folder: Path,
    model: str = "",
    backend: str = "torch",
    detector: bool = True,
    progress: Callable[[str, int], Callable[..., None]] | None = None,
) -> FaceEvaluation:
    require_extras("avemo-edge evaluate-faces")
    import cv2
    from sklearn.metrics import confusion_matrix, f1_score, recall_score

    from .backends import create_backend
    from .daemon import resolve_model
    from .face import FaceCropper
    from .recognizer import StreamingRecognizer

    be = create_backend(backend, str(resolve_model(model)))
    classes = tuple(be.classes)
    images = list_images(folder, classes)
    size, channels = be.dims.face_size, be.dims.face_channels
    cropper = FaceCropper(size, channels)
    recognizer = StreamingRecognizer(be)
    truth: list[str] = []
    pred: list[str] = []
    no_face = 0
    unreadable: list[tuple[str, str]] = []
    advance = progress("images", len(images)) if progress else None
    for path, cls in images:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            unreadable.append((str(path), "it is not an image OpenCV can decode"))
        else:
            label = face_label(recognizer, image, cropper if detector else None)
            if label is None:
                no_face += 1
            else:
                truth.append(cls)
                pred.append(classes[label])
        if advance:
            advance(path.name)
    labels = [c for c in classes if c in set(truth) | set(pred)]
    if truth:
        accuracy = sum(t == p for t, p in zip(truth, pred, strict=True)) / len(truth)
        macro = float(f1_score(truth, pred, labels=sorted(set(truth)), average="macro", zero_division=0))
        present = [c for c in classes if c in set(truth)]
        rec = recall_score(truth, pred, labels=present, average=None, zero_division=0)
        recall = {c: float(r) for c, r in zip(present, rec, strict=True)}
        cm: Any = confusion_matrix(truth, pred, labels=labels).tolist()
    else:
        accuracy = macro = None
        recall, cm = {}, []
    return FaceEvaluation(list(classes), len(images), no_face, accuracy, macro, recall, cm, labels, unreadable)
