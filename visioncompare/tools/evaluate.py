"""Every model serving a task, on a labelled dataset, side by side (`vcompare evaluate`).

A dataset is a COCO annotation file with its image folder, or an image folder alone.
Every image (or object crop) goes through the gateway's `Compare` once (bounded concurrency, a deadline
per call, retries on UNAVAILABLE); each answer is appended to `results.jsonl` in the
output folder as it arrives, so a run that stops resumes where it stopped. From the
stored answers come, per model, the task's metrics: COCO metrics for instances
(pycocotools' COCOeval, or the drop-in faster-coco-eval when installed: same numbers);
mIoU, per-class IoU and pixel accuracy for semantic segmentation, against a class map
drawn from the instance masks (`semantic_truth`); top-1 and top-5 accuracy for zero-shot
classification, on each object's crop (`object_crop`) or on the images of a class folder
(`image_folder`); then latency percentiles and errors by code; between every pair of
models, the gateway's agreement over the dataset and the images where they disagree most.
`evaluate()` gives the JSON result (`visioncompare/tools/schemas/evaluation.schema.json` documents it);
`visioncompare.tools.report` draws the HTML.

Layering: this module talks to the gateway over gRPC and reads COCO files; it imports
no model service, no shapes code and no model framework.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import grpc
import numpy as np

from visioncompare.gateway.agreement import instance_agreement
from visioncompare.runtime.channels import channel_options
from visioncompare.runtime.convert import pb_enum
from visioncompare.runtime.tasks import short_name
from visioncompare.runtime.types import Task
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import comparison_service_pb2 as cs
from visioncompare.v1 import comparison_service_pb2_grpc as cs_grpc
from visioncompare.v1 import vision_model_service_pb2 as vms

SCHEMA_VERSION = 2  # 2: semantic segmentation and zero-shot classification; every pair says its kind
SCHEMA_FILE = Path(__file__).parent / "schemas" / "evaluation.schema.json"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
#: The tasks `evaluate` runs, by short name (the task table's): those whose answers are labelled
#: instances, label maps or class scores.
OBJECT_DETECTION = short_name(Task.OBJECT_DETECTION)
INSTANCE_SEGMENTATION = short_name(Task.INSTANCE_SEGMENTATION)
KEYPOINT_DETECTION = short_name(Task.KEYPOINT_DETECTION)
SEMANTIC_SEGMENTATION = short_name(Task.SEMANTIC_SEGMENTATION)
ZERO_SHOT_CLASSIFICATION = short_name(Task.ZERO_SHOT_CLASSIFICATION)
INSTANCE_TASKS = (OBJECT_DETECTION, INSTANCE_SEGMENTATION, KEYPOINT_DETECTION)
TASKS = {
    short_name(t): pb_enum(pb.Task, t)
    for t in (
        Task.OBJECT_DETECTION,
        Task.INSTANCE_SEGMENTATION,
        Task.KEYPOINT_DETECTION,
        Task.SEMANTIC_SEGMENTATION,
        Task.ZERO_SHOT_CLASSIFICATION,
    )
}
#: What each task sends when --score-threshold and --max-results are not given: instance tasks rank
#: low-scoring answers too (AP) and COCO counts 100 a image; a label map is whole (no threshold);
#: a classification returns its top 5 (top-5 accuracy).
TASK_OPTIONS: dict[str, tuple[float | None, int | None]] = {
    **{task: (0.05, 100) for task in INSTANCE_TASKS},
    SEMANTIC_SEGMENTATION: (None, None),
    ZERO_SHOT_CLASSIFICATION: (None, 5),
}
#: Zero-shot classification on a COCO dataset classifies each object's crop; objects whose mask (box,
#: without a mask) covers fewer pixels than this are hidden down to slivers and not classified.
MIN_OBJECT_PIXELS = 60
#: What a crop is filled with outside the object's mask: CLIP's mean colour, as SAM-CLIP fills
#: the crops it classifies (visioncompare/samclip/openvocab.py FILL).
CROP_FILL = (122, 116, 104)
TOP_K = 5
#: COCO's per-keypoint OKS constants for its 17 person keypoints (pycocotools' defaults).
COCO_PERSON_SIGMAS = (
    np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89])
    / 10.0
)
DEFAULT_OKS_SIGMA = 0.05  # one constant per keypoint for skeletons other than COCO's person
STATS_NAMES = {
    "bbox": (
        "AP",
        "AP50",
        "AP75",
        "AP_small",
        "AP_medium",
        "AP_large",
        "AR1",
        "AR10",
        "AR100",
        "AR_small",
        "AR_medium",
        "AR_large",
    ),
    "keypoints": ("AP", "AP50", "AP75", "AP_medium", "AP_large", "AR", "AR50", "AR75", "AR_medium", "AR_large"),
}
STATS_NAMES["segm"] = STATS_NAMES["bbox"]
IouType = Literal["bbox", "segm", "keypoints"]
EVALUATORS = ("auto", "pycocotools", "faster-coco-eval")
UNREADABLE = "UNREADABLE"  # an image file that could not be read: no call was made
DEFAULT_CONCURRENCY = 8  # Compare calls in flight: enough to fill the model services' batches


# --- the dataset ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetImage:
    """One item sent to Compare: an image file, or (`crop`, for classification) an object cut from one."""

    id: int
    file_name: str
    path: Path
    category_id: int | None = None  # the true class, for classification
    crop: dict[str, Any] | None = None  # the COCO annotation whose object this item is
    size: tuple[int, int] | None = None  # the image's (height, width) in the annotations

    def read(self) -> bytes:
        """The bytes Compare gets: the file, or the object's crop as a PNG (`object_crop`)."""
        data = self.path.read_bytes()
        if self.crop is None:
            return data
        return object_crop(data, self.crop, self.size)


def annotation_mask(ann: Mapping[str, Any], height: int, width: int) -> np.ndarray | None:
    """A COCO annotation's mask (polygons, RLE or uncompressed RLE) as an H x W bool array; None without one."""
    from pycocotools import mask as mask_utils

    segmentation = ann.get("segmentation")
    if not segmentation:
        return None
    rle: Any
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        counts = segmentation["counts"]
        rle = {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
    return np.asarray(mask_utils.decode(rle), dtype=bool)


def object_mask(ann: Mapping[str, Any], height: int, width: int) -> np.ndarray:
    """The object's pixels: its mask, or its box where it has none."""
    mask = annotation_mask(ann, height, width)
    if mask is not None:
        return mask
    x, y, w, h = (float(v) for v in ann["bbox"])
    out = np.zeros((height, width), dtype=bool)
    out[max(int(y), 0) : max(int(np.ceil(y + h)), 0), max(int(x), 0) : max(int(np.ceil(x + w)), 0)] = True
    return out


def object_crop(image_bytes: bytes, ann: Mapping[str, Any], size: tuple[int, int] | None = None) -> bytes:
    """The object's crop, as SAM-CLIP classifies a mask (shapes.accuracy.clip_top1 sends the same): its
    mask's bounding box, the pixels outside the mask filled with CROP_FILL, padded to a square with it;
    a PNG."""
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(image_bytes)).convert("RGB"))
    height, width = image.shape[:2]
    if size is not None and size != (height, width):
        raise ValueError(f"the image is {width}x{height}, its annotations say {size[1]}x{size[0]}")
    mask = object_mask(ann, height, width)
    ys, xs = np.nonzero(mask)
    if not len(ys):
        raise ValueError(f"annotation {ann.get('id')} covers no pixel")
    y1, y2, x1, x2 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = image[y1:y2, x1:x2].copy()
    crop[~mask[y1:y2, x1:x2]] = CROP_FILL
    h, w = crop.shape[:2]
    side = max(h, w)
    square = np.empty((side, side, 3), dtype=np.uint8)
    square[:] = CROP_FILL
    top, left = (side - h) // 2, (side - w) // 2
    square[top : top + h, left : left + w] = crop
    buffer = io.BytesIO()
    Image.fromarray(square).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Dataset:
    """Images, and for a COCO dataset its annotations (`coco`, the file's JSON); for an image folder in
    the ImageFolder layout (one subfolder a class), the classes (`folder_classes`)."""

    images_dir: Path
    images: list[DatasetImage]
    annotations_file: Path | None = None
    coco: dict[str, Any] | None = None
    folder_classes: list[str] = field(default_factory=list)
    min_object_pixels: int = MIN_OBJECT_PIXELS

    @property
    def labelled(self) -> bool:
        return self.coco is not None

    def labelled_for(self, task: str) -> bool:
        """Whether the dataset says what is right for `task`: COCO annotations, or for classification
        the folders of the ImageFolder layout."""
        return self.labelled or (task == ZERO_SHOT_CLASSIFICATION and bool(self.folder_classes))

    def items(self, task: str) -> list[DatasetImage]:
        """What Compare gets for `task`: each image, or for classification on COCO annotations each
        object's crop (its id the annotation's; crowds and objects under min_object_pixels left out)."""
        if task != ZERO_SHOT_CLASSIFICATION or self.coco is None:
            return list(self.images)
        sizes = {int(i["id"]): (int(i["height"]), int(i["width"])) for i in self.coco["images"]}
        by_image: dict[int, list[dict[str, Any]]] = {}
        for ann in self.annotations:
            if not ann.get("iscrowd", 0):
                by_image.setdefault(int(ann["image_id"]), []).append(ann)
        items = []
        for image in self.images:
            size = sizes.get(image.id)
            for ann in by_image.get(image.id, []):
                if size is None or object_mask(ann, *size).sum() < self.min_object_pixels:
                    continue
                items.append(
                    DatasetImage(
                        int(ann["id"]),
                        f"{image.file_name}#{ann['id']}",
                        image.path,
                        category_id=int(ann["category_id"]),
                        crop=ann,
                        size=size,
                    )
                )
        return items

    @property
    def categories(self) -> list[dict[str, Any]]:
        return list(self.coco["categories"]) if self.coco else []

    @property
    def annotations(self) -> list[dict[str, Any]]:
        return list(self.coco["annotations"]) if self.coco else []

    @property
    def has_masks(self) -> bool:
        return any(a.get("segmentation") for a in self.annotations)

    @property
    def keypoint_categories(self) -> list[dict[str, Any]]:
        with_points = {a["category_id"] for a in self.annotations if a.get("num_keypoints", 0) > 0}
        return [c for c in self.categories if c.get("keypoints") and c["id"] in with_points]

    def describe(self) -> dict[str, Any]:
        return {
            "images_dir": str(self.images_dir),
            "annotations": str(self.annotations_file) if self.annotations_file else None,
            "images": len(self.images),
            "annotation_count": len(self.annotations),
            "categories": [c["name"] for c in self.categories] or list(self.folder_classes),
            "has_masks": self.has_masks,
            "has_keypoints": bool(self.keypoint_categories),
            "classes_from_folders": bool(self.folder_classes) and self.coco is None,
        }


def task_categories(dataset: Dataset, task: str) -> list[dict[str, Any]]:
    """The categories a task is evaluated on: those with keypoints for keypoint detection; for
    classification on an ImageFolder-layout folder its subfolders (ids from 1, in name order); else all."""
    if task == KEYPOINT_DETECTION:
        return dataset.keypoint_categories
    if task == ZERO_SHOT_CLASSIFICATION and dataset.coco is None:
        return [{"id": n, "name": name} for n, name in enumerate(dataset.folder_classes, start=1)]
    return dataset.categories


def load_coco(annotations: Path, images_dir: Path) -> Dataset:
    """A COCO annotation file (images, annotations, categories) and the folder its file names are in."""
    try:
        data = json.loads(annotations.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {annotations}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "categories")):
        raise ValueError(f"{annotations} is not a COCO annotation file (it needs images and categories lists)")
    data.setdefault("annotations", [])
    for ann in data["annotations"]:
        if "area" not in ann and ann.get("bbox"):
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
        ann.setdefault("iscrowd", 0)
    images = [DatasetImage(int(i["id"]), str(i["file_name"]), images_dir / str(i["file_name"])) for i in data["images"]]
    return Dataset(images_dir, images, annotations, data)


def image_folder(images_dir: Path) -> Dataset:
    """Every image file in a folder (and its subfolders), in name order, numbered from 1. When every
    image lies one subfolder down, in two subfolders or more (torchvision's ImageFolder layout), the
    subfolders are the classes (sorted by name) and each image's is its true class (for classification)."""
    if not images_dir.is_dir():
        raise ValueError(f"{images_dir} is not a folder")
    files = sorted(p for p in images_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    relative = [p.relative_to(images_dir) for p in files]
    folders = sorted({r.parts[0] for r in relative})
    layout = bool(files) and all(len(r.parts) == 2 for r in relative) and len(folders) >= 2
    class_id = {name: n for n, name in enumerate(folders, start=1)} if layout else {}
    images = [
        DatasetImage(n, str(r), p, category_id=class_id.get(r.parts[0]) if layout else None)
        for n, (p, r) in enumerate(zip(files, relative, strict=True), start=1)
    ]
    return Dataset(images_dir, images, folder_classes=folders if layout else [])


# --- vocabularies ---------------------------------------------------------------------------------


def normalise(name: str) -> str:
    """Names compare case-, underscore- and hyphen-insensitively: "Traffic_light" == "traffic light"."""
    return re.sub(r"[\s_\-]+", " ", name).strip().lower()


@dataclass
class ModelVocabulary:
    """How one model's labels meet the dataset's categories."""

    model: str
    vocabulary: str  # "fixed", "open", "none" or "unknown" (the model was not reached)
    category_of: dict[str, int] = field(default_factory=dict)  # normalised label -> category id
    matched: dict[str, str] = field(default_factory=dict)  # category name -> the model's label
    unknown_categories: list[str] = field(default_factory=list)
    labels_without_category: list[str] = field(default_factory=list)


def match_vocabularies(
    categories: Sequence[Mapping[str, Any]], capabilities: Mapping[str, vms.TaskCapability | None]
) -> dict[str, ModelVocabulary]:
    """Each model's labels matched to the categories by (normalised) name; an open-vocabulary
    model gets the category names themselves as its labels."""
    by_name = {normalise(str(c["name"])): c for c in categories}
    out = {}
    for model, cap in capabilities.items():
        if cap is None:
            out[model] = ModelVocabulary(model, "unknown", unknown_categories=[str(c["name"]) for c in categories])
            continue
        if cap.vocabulary == vms.VOCABULARY_OPEN:
            v = ModelVocabulary(model, "open")
            for key, c in by_name.items():
                v.category_of[key] = int(c["id"])
                v.matched[str(c["name"])] = str(c["name"])
            out[model] = v
            continue
        v = ModelVocabulary(model, "fixed" if cap.vocabulary == vms.VOCABULARY_FIXED else "none")
        for label in cap.label_names:
            category = by_name.get(normalise(label))
            if category is None:
                v.labels_without_category.append(label)
            else:
                v.category_of[normalise(label)] = int(category["id"])
                v.matched[str(category["name"])] = label
        v.unknown_categories = [str(c["name"]) for c in categories if str(c["name"]) not in v.matched]
        out[model] = v
    return out


# --- running --------------------------------------------------------------------------------------


@dataclass
class RunConfig:
    """What a run asks the gateway; a stored run resumes only with the same."""

    task: str
    models: list[str]
    score_threshold: float | None = 0.05
    max_results: int | None = 100
    open_vocabulary_labels: list[str] = field(default_factory=list)

    def options(self) -> pb.TaskOptions:
        options = pb.TaskOptions()
        if self.score_threshold is not None:
            options.score_threshold = self.score_threshold
        if self.max_results is not None:
            options.max_results = self.max_results
        return options


@dataclass
class Record:
    """One image's outcome, as stored: the Compare response, or why there is none."""

    image_id: int
    file_name: str
    code: str  # "OK", a gRPC status name, or UNREADABLE
    message: str = ""
    attempts: int = 1
    seconds: float = 0.0  # the last Compare call, as this client saw it
    response: cs.CompareResponse | None = None

    def to_json(self) -> str:
        data: dict[str, Any] = {k: v for k, v in asdict(self).items() if k != "response"}
        if self.response is not None:
            data["response"] = base64.b64encode(self.response.SerializeToString()).decode()
        return json.dumps(data)

    @classmethod
    def from_json(cls, line: str) -> Record:
        data = json.loads(line)
        encoded = data.pop("response", None)
        record = cls(**data)
        if encoded is not None:
            record.response = cs.CompareResponse.FromString(base64.b64decode(encoded))
        return record


class ResultStore:
    """`results.jsonl` (one Record a line, appended and flushed as answers arrive) beside
    `run.json` (the dataset and RunConfig the records belong to)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "results.jsonl"
        self.manifest = directory / "run.json"

    def open(self, identity: dict[str, Any], fresh: bool = False) -> dict[int, Record]:
        """The records stored so far for this identity (none when `fresh`); raises ValueError
        when the folder holds a run of something else."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if fresh:
            self.path.unlink(missing_ok=True)
        elif self.manifest.exists() and self.path.exists():
            stored = json.loads(self.manifest.read_text())
            if stored != identity:
                changed = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
                raise ValueError(
                    f"{self.directory} holds a run with other settings ({', '.join(changed)} differ); "
                    "run with --fresh to start over, or choose another --out"
                )
        self.manifest.write_text(json.dumps(identity, indent=2) + "\n")
        return self.load()

    def load(self) -> dict[int, Record]:
        records: dict[int, Record] = {}
        if not self.path.exists():
            return records
        with self.path.open() as f:
            for line in f:
                try:
                    record = Record.from_json(line)
                except (ValueError, TypeError, KeyError):
                    continue  # a line cut short by an interruption: that image runs again
                records[record.image_id] = record  # the last answer for an image wins
        return records

    def append(self, record: Record) -> None:
        with self.path.open("a") as f:
            f.write(record.to_json() + "\n")
            f.flush()


@dataclass
class RunStats:
    resumed: int = 0  # images whose stored answer was kept
    done: int = 0  # images answered in this run (any outcome)
    retries: int = 0
    seconds: float = 0.0


def _unavailable_models(response: cs.CompareResponse) -> list[str]:
    return [r.model_name for r in response.results if r.status.code == grpc.StatusCode.UNAVAILABLE.value[0]]


async def compare_image(
    stub: Any,
    image: DatasetImage,
    config: RunConfig,
    *,
    timeout_s: float,
    retries: int,
    metadata: Sequence[tuple[str, str]] = (),
    backoff_s: float = 0.5,
) -> tuple[Record, int]:
    """One image through Compare: retried (with backoff) while the call, or any model in it,
    is UNAVAILABLE; returns the record and the number of retries."""
    try:
        data = image.read()
    except OSError as exc:
        return Record(image.id, image.file_name, UNREADABLE, exc.strerror or str(exc), attempts=0), 0
    except ValueError as exc:  # a crop of an image that is no image, or of an empty object
        return Record(image.id, image.file_name, UNREADABLE, str(exc), attempts=0), 0
    request = cs.CompareRequest(
        image=pb.Image(encoded=data),
        task=TASKS[config.task],
        options=config.options(),
        model_names=config.models,
        open_vocabulary_labels=config.open_vocabulary_labels,
    )
    attempt = 0
    while True:
        attempt += 1
        start = time.perf_counter()
        try:
            response = await stub.Compare(request, timeout=timeout_s, metadata=tuple(metadata))
        except grpc.aio.AioRpcError as exc:
            seconds = time.perf_counter() - start
            if exc.code() == grpc.StatusCode.UNAVAILABLE and attempt <= retries:
                await asyncio.sleep(min(backoff_s * 2 ** (attempt - 1), 8.0))
                continue
            record = Record(image.id, image.file_name, exc.code().name, exc.details() or "", attempt, seconds)
            return record, attempt - 1
        seconds = time.perf_counter() - start
        if _unavailable_models(response) and attempt <= retries:
            await asyncio.sleep(min(backoff_s * 2 ** (attempt - 1), 8.0))
            continue
        return Record(image.id, image.file_name, "OK", "", attempt, seconds, response), attempt - 1


async def run_images(
    address: str,
    images: Sequence[DatasetImage],
    config: RunConfig,
    store: ResultStore,
    *,
    concurrency: int = 4,
    timeout_s: float = 120.0,
    retries: int = 3,
    token: str | None = None,
    on_record: Callable[[Record], None] = lambda r: None,
    stub: Any = None,
) -> RunStats:
    """Compare every image, `concurrency` calls at a time; each record is stored as it arrives."""
    stats = RunStats()
    pending = deque(images)
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    channel = None
    if stub is None:
        channel = grpc.aio.insecure_channel(address, options=channel_options(64 * 1024 * 1024))
        stub = cs_grpc.ComparisonServiceStub(channel)

    async def worker() -> None:
        while pending:
            image = pending.popleft()
            record, retried = await compare_image(
                stub, image, config, timeout_s=timeout_s, retries=retries, metadata=metadata
            )
            store.append(record)
            stats.done += 1
            stats.retries += retried
            on_record(record)

    start = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(pending) or 1)))))
    finally:
        stats.seconds = time.perf_counter() - start
        if channel is not None:
            await channel.close()
    return stats


def list_models(address: str, token: str | None = None, timeout_s: float = 30.0) -> cs.ListModelsResponse:
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(address, options=channel_options(64 * 1024 * 1024)) as channel:
        stub = cs_grpc.ComparisonServiceStub(channel)
        response: cs.ListModelsResponse = stub.ListModels(cs.ListModelsRequest(), timeout=timeout_s, metadata=metadata)
    return response


def models_for_task(models: cs.ListModelsResponse, task: str, names: Sequence[str] = ()) -> dict[str, Any]:
    """The models taking part (named, or every one advertising the task; a model never reached
    advertises nothing), with their task capability and row."""
    rows = {m.model_name: m for m in models.models}
    unknown = [n for n in names if n not in rows]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; the gateway has: {', '.join(rows)}")
    chosen = {}
    for name, row in rows.items():
        if names and name not in names:
            continue
        caps = [t for t in row.capabilities.tasks if t.task == TASKS[task]]
        if caps:
            chosen[name] = {"capability": caps[0], "row": row}
    return chosen


# --- COCO evaluation ------------------------------------------------------------------------------


def evaluator_name(choice: str = "auto") -> str:
    """ "faster-coco-eval" when chosen, or with "auto" when installed; else "pycocotools"."""
    if choice == "pycocotools":
        return choice
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        if choice == "faster-coco-eval":
            raise ValueError("faster-coco-eval is not installed: pip install faster-coco-eval") from None
        return "pycocotools"
    return "faster-coco-eval"


def evaluator_version(name: str) -> str:
    try:
        return f"{name} {version(name)}"
    except PackageNotFoundError:
        return name


def _coco_classes(evaluator: str) -> tuple[Any, Any]:
    if evaluator == "faster-coco-eval":
        from faster_coco_eval import COCO as FasterCOCO
        from faster_coco_eval import COCOeval_faster

        return FasterCOCO, COCOeval_faster
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return COCO, COCOeval


def ground_truth(dataset: Dataset, evaluator: str) -> Any:
    coco_class, _ = _coco_classes(evaluator)
    coco = coco_class()
    coco.dataset = json.loads(json.dumps(dataset.coco))  # a copy: the evaluators index it in place
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def oks_sigmas(dataset: Dataset, given: Sequence[float] = ()) -> np.ndarray:
    """Per-keypoint OKS constants: given (one for all, or one per keypoint), COCO's for a
    17-keypoint skeleton, else DEFAULT_OKS_SIGMA for each keypoint."""
    sizes = {len(c["keypoints"]) for c in dataset.keypoint_categories}
    if len(sizes) > 1:
        raise ValueError(f"keypoint categories have different numbers of keypoints ({sorted(sizes)})")
    k = sizes.pop() if sizes else 0
    if given:
        if len(given) not in (1, k):
            raise ValueError(f"--oks-sigma: give one value or {k} (one per keypoint), not {len(given)}")
        return np.full(k, given[0]) if len(given) == 1 else np.asarray(given, dtype=np.float64)
    return COCO_PERSON_SIGMAS.copy() if k == 17 else np.full(k, DEFAULT_OKS_SIGMA)


def detections(
    records: Iterable[Record], model: str, vocab: ModelVocabulary, task: str, dataset: Dataset
) -> tuple[list[dict[str, Any]], int]:
    """The model's answers as COCO results (labels mapped to category ids by name), and the
    number of instances whose label no category has (left out)."""
    keypoint_names = {int(c["id"]): list(c["keypoints"]) for c in dataset.keypoint_categories}
    out: list[dict[str, Any]] = []
    unmatched = 0
    for record in records:
        result = model_result(record, model)
        if result is None or result.status.code != 0:
            continue
        output = getattr(result, result.WhichOneof("output") or "detect")
        for i in output.instances:
            category = vocab.category_of.get(normalise(i.label.name)) if i.HasField("label") else None
            if category is None:
                unmatched += 1
                continue
            b = i.box
            det: dict[str, Any] = {
                "image_id": record.image_id,
                "category_id": category,
                "score": i.score,
                "bbox": [b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1],
            }
            if task == INSTANCE_SEGMENTATION and i.HasField("mask"):
                det["segmentation"] = {
                    "size": [i.mask.rle.height, i.mask.rle.width],
                    "counts": i.mask.rle.counts.decode(),
                }
            if task == KEYPOINT_DETECTION:
                if category not in keypoint_names:
                    continue
                points = {normalise(k.name): k for k in i.keypoints}
                det["keypoints"] = [
                    v
                    for name in keypoint_names[category]
                    for v in (
                        (points[normalise(name)].x, points[normalise(name)].y, 1)
                        if normalise(name) in points
                        else (0.0, 0.0, 0)
                    )
                ]
            out.append(det)
    return out, unmatched


def _stats(names: Sequence[str], values: Sequence[float]) -> dict[str, float]:
    return {n: round(float(v), 4) for n, v in zip(names, values, strict=False)}


def coco_metrics(
    gt: Any,
    results: list[dict[str, Any]],
    iou_type: IouType,
    *,
    image_ids: Sequence[int],
    category_ids: Sequence[int],
    category_names: Mapping[int, str],
    evaluator: str,
    sigmas: np.ndarray | None = None,
    known: Sequence[int] = (),
) -> dict[str, Any]:
    """COCOeval's summary, per-class AP and precision-recall curves for one model."""
    names = STATS_NAMES[iou_type]
    in_run = set(image_ids)
    gt_counts = Counter(
        a["category_id"] for a in gt.dataset["annotations"] if a["image_id"] in in_run and not a.get("iscrowd", 0)
    )
    recall = [round(float(r), 2) for r in np.linspace(0.0, 1.0, 101)]
    empty = {
        "detections": 0,
        "stats": {n: 0.0 for n in names} | {"AP_known_categories": 0.0},
        "per_class": [
            {"category_id": c, "name": category_names[c], "AP": 0.0, "AP50": 0.0, "ground_truth": gt_counts.get(c, 0)}
            for c in category_ids
        ],
        "pr_curves": {"recall": recall, "precision": {k: [0.0] * 101 for k in ("0.50:0.95", "0.50", "0.75")}},
    }
    if not results or not image_ids:
        return empty
    _, cocoeval_class = _coco_classes(evaluator)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes([dict(r) for r in results])
        ev = cocoeval_class(gt, dt, iou_type)
        ev.params.imgIds = list(image_ids)
        ev.params.catIds = list(category_ids)
        if iou_type == "keypoints" and sigmas is not None:
            ev.params.kpt_oks_sigmas = sigmas
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = np.asarray(ev.eval["precision"])  # [IoU thresholds, recall thresholds, classes, areas, max dets]
    p_all = precision[:, :, :, 0, -1]

    def mean_valid(p: np.ndarray, axis: int | tuple[int, ...] | None = None) -> Any:
        masked = np.ma.masked_less(p, 0)
        return masked.mean(axis=axis).filled(0.0) if axis is not None else float(masked.mean() or 0.0)

    per_class: list[dict[str, Any]] = []
    for k, c in enumerate(ev.params.catIds):
        p = p_all[:, :, k]
        ap = float(np.mean(p[p > -1])) if (p > -1).any() else None
        p50 = p[0]
        ap50 = float(np.mean(p50[p50 > -1])) if (p50 > -1).any() else None
        per_class.append(
            {
                "category_id": int(c),
                "name": category_names[int(c)],
                "AP": None if ap is None else round(ap, 4),
                "AP50": None if ap50 is None else round(ap50, 4),
                "ground_truth": gt_counts.get(int(c), 0),
            }
        )
    known_aps = [float(r["AP"]) for r in per_class if r["category_id"] in set(known) and r["AP"] is not None]
    stats = _stats(names, ev.stats) | {"AP_known_categories": round(float(np.mean(known_aps)), 4) if known_aps else 0.0}
    iou_thresholds = np.asarray(ev.params.iouThrs)
    t50, t75 = (int(np.argmin(np.abs(iou_thresholds - t))) for t in (0.5, 0.75))
    curves = {
        "0.50:0.95": mean_valid(p_all.transpose(1, 0, 2).reshape(p_all.shape[1], -1), axis=1),
        "0.50": mean_valid(p_all[t50], axis=1),
        "0.75": mean_valid(p_all[t75], axis=1),
    }
    return {
        "detections": len(results),
        "stats": stats,
        "per_class": per_class,
        "pr_curves": {
            "recall": [round(float(r), 2) for r in ev.params.recThrs],
            "precision": {k: [round(float(v), 4) for v in curve] for k, curve in curves.items()},
        },
    }


def iou_types(task: str, dataset: Dataset) -> list[IouType]:
    if task == KEYPOINT_DETECTION:
        return ["bbox", "keypoints"]
    if task == INSTANCE_SEGMENTATION and dataset.has_masks:
        return ["bbox", "segm"]
    return ["bbox"]


# --- per-model and pairwise figures ---------------------------------------------------------------


def model_result(record: Record, model: str) -> cs.ModelResult | None:
    if record.response is None:
        return None
    for r in record.response.results:
        if r.model_name == model:
            return r
    return None


def percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "mean": None, "p50": None, "p95": None, "p99": None}
    a = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = (round(float(v), 2) for v in np.percentile(a, [50, 95, 99]))
    return {"count": len(values), "mean": round(float(a.mean()), 2), "p50": p50, "p95": p95, "p99": p99}


def status_name(code: int) -> str:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return str(status.name)
    return str(code)


def filtered(instances: Sequence[pb.Instance], min_score: float | None) -> list[pb.Instance]:
    return [i for i in instances if min_score is None or i.score >= min_score]


def _output(result: cs.ModelResult) -> Any:
    name = result.WhichOneof("output")
    return getattr(result, name) if name else None


def pair_rows(
    records: Iterable[Record], model_a: str, model_b: str, min_score: float | None, request_threshold: float | None
) -> list[dict[str, Any]]:
    """Per image, the agreement of two models that both answered: the gateway's own figures, or,
    with `min_score` above the request's score threshold, the gateway's agreement
    (visioncompare.gateway.agreement.instance_agreement, at the IoU threshold the gateway used) over the
    instances scoring at least `min_score`."""
    rows = []
    recompute = min_score is not None and (request_threshold is None or min_score > request_threshold)
    for record in records:
        if record.response is None:
            continue
        pair = next(
            (
                p
                for p in record.response.agreements
                if {p.model_a, p.model_b} == {model_a, model_b} and p.WhichOneof("agreement") == "instances"
            ),
            None,
        )
        if pair is None:
            continue
        ra, rb = model_result(record, pair.model_a), model_result(record, pair.model_b)
        assert ra is not None and rb is not None
        agreement = pair.instances
        ia, ib = list(_output(ra).instances), list(_output(rb).instances)
        if recompute:
            ia, ib = filtered(ia, min_score), filtered(ib, min_score)
            agreement = instance_agreement(ia, ib, agreement.iou_threshold)
        if pair.model_a != model_a:  # the gateway orders pairs by its targets; keep ours
            ia, ib = ib, ia
            only_a, only_b = agreement.only_b_count, agreement.only_a_count
        else:
            only_a, only_b = agreement.only_a_count, agreement.only_b_count
        matched = len(agreement.matches)
        agreeing = sum(m.labels_agree for m in agreement.matches)
        labelled = any(i.HasField("label") for i in [*ia, *ib])
        consistent = agreeing if labelled else matched
        total = len(ia) + len(ib)
        rows.append(
            {
                "image_id": record.image_id,
                "file_name": record.file_name,
                "instances_a": len(ia),
                "instances_b": len(ib),
                "matched": matched,
                "labels_disagree": matched - agreeing if labelled else 0,
                "only_a": only_a,
                "only_b": only_b,
                "mean_iou": round(agreement.mean_iou, 4),
                "iou_sum": float(sum(m.iou for m in agreement.matches)),
                "agreeing": agreeing,
                "iou_kind": agreement.iou_kind,
                "iou_threshold": agreement.iou_threshold,
                # 0 when every instance has a match with the same label; 1 when nothing matches
                "disagreement": round(1.0 - 2.0 * consistent / total, 4) if total else 0.0,
            }
        )
    return rows


def aggregate_pair(model_a: str, model_b: str, rows: list[dict[str, Any]], worst: int) -> dict[str, Any]:
    n = len(rows)
    matched = sum(r["matched"] for r in rows)
    kind = {cs.IOU_KIND_MASK: "mask", cs.IOU_KIND_BOX: "box"}
    kinds = sorted({kind.get(r["iou_kind"], "none") for r in rows if r["matched"] or r["instances_a"]})
    ranked = sorted(
        rows, key=lambda r: (-r["disagreement"], -(r["only_a"] + r["only_b"] + r["labels_disagree"]), r["image_id"])
    )
    keep = (
        "image_id",
        "file_name",
        "disagreement",
        "instances_a",
        "instances_b",
        "matched",
        "labels_disagree",
        "only_a",
        "only_b",
        "mean_iou",
    )
    return {
        "kind": "instances",
        "model_a": model_a,
        "model_b": model_b,
        "images": n,
        "iou_kind": "/".join(kinds) or "none",
        "iou_threshold": round(float(rows[0]["iou_threshold"]), 4) if rows else None,
        "matched": matched,
        "matched_per_image": round(matched / n, 3) if n else 0.0,
        "mean_iou": round(sum(r["iou_sum"] for r in rows) / matched, 4) if matched else 0.0,
        "label_agreement": round(sum(r["agreeing"] for r in rows) / matched, 4) if matched else 0.0,
        "only_a": sum(r["only_a"] for r in rows),
        "only_b": sum(r["only_b"] for r in rows),
        "only_a_per_image": round(sum(r["only_a"] for r in rows) / n, 3) if n else 0.0,
        "only_b_per_image": round(sum(r["only_b"] for r in rows) / n, 3) if n else 0.0,
        "mean_disagreement": round(float(np.mean([r["disagreement"] for r in rows])), 4) if rows else 0.0,
        "most_disagreeing": [{k: r[k] for k in keep} for r in ranked[:worst] if r["disagreement"] > 0],
    }


# --- label maps and class scores ------------------------------------------------------------------


def semantic_truth(dataset: Dataset, image_id: int, category_ids: Sequence[int]) -> np.ndarray | None:
    """The image's class map from its instance masks (a category-per-pixel rendering: each annotation
    with a mask painted with its category, in the file's order, a later one over an earlier; crowds
    included; 0 elsewhere), as indices into [background, *category_ids] (other categories: background)."""
    if dataset.coco is None:
        return None
    image = next((i for i in dataset.coco["images"] if int(i["id"]) == image_id), None)
    if image is None:
        return None
    h, w = int(image["height"]), int(image["width"])
    index = {c: n for n, c in enumerate(category_ids, start=1)}
    truth = np.zeros((h, w), dtype=np.int64)
    for ann in dataset.annotations:
        if int(ann["image_id"]) != image_id or int(ann["category_id"]) not in index:
            continue
        mask = annotation_mask(ann, h, w)
        if mask is not None:
            truth[mask] = index[int(ann["category_id"])]
    return truth


def label_map_classes(label_map: pb.LabelMap, vocab: ModelVocabulary, category_ids: Sequence[int]) -> np.ndarray:
    """A label map's pixels as indices into [background, *category_ids, no category]: its class names
    matched to categories by name; a class no category has is the last index."""
    index = {c: n for n, c in enumerate(category_ids, start=1)}
    none = len(category_ids) + 1
    lut = [0] + [index.get(vocab.category_of.get(normalise(n), -1), none) for n in list(label_map.class_names)[1:]]
    table = np.array(lut, dtype=np.int64)
    indices = np.frombuffer(label_map.class_indices_u16le, dtype="<u2").astype(np.int64)
    return np.where(indices < len(table), table[np.minimum(indices, len(table) - 1)], none)


def semantic_metrics(
    dataset: Dataset,
    records: Sequence[Record],
    vocabularies: Mapping[str, ModelVocabulary],
    categories: Sequence[Mapping[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Per model: IoU per class (background included) of its label maps against the ground truth class
    maps (`semantic_truth`), each class's intersection and union summed over the images; mIoU their mean
    over the classes present in either (as shapes.accuracy.semantic_miou), also without background;
    pixel accuracy. An image a model failed on, or answered with a map of another size, counts as all
    background."""
    ids = [int(c["id"]) for c in sorted(categories, key=lambda c: int(c["id"]))]
    names = ["background", *(str(c["name"]) for c in sorted(categories, key=lambda c: int(c["id"])))]
    k = len(ids) + 2  # background, the categories, and "a class no category has"
    joint = {m: np.zeros((k, k), dtype=np.int64) for m in vocabularies}
    for record in records:
        truth = semantic_truth(dataset, record.image_id, ids)
        if truth is None:
            continue
        for model, vocab in vocabularies.items():
            result = model_result(record, model)
            pred = np.zeros(truth.size, dtype=np.int64)
            output = _output(result) if result is not None and result.status.code == 0 else None
            if isinstance(output, vms.SegmentResponse) and output.HasField("label_map"):
                lm = output.label_map
                if (lm.height, lm.width) == truth.shape and len(lm.class_indices_u16le) == 2 * truth.size:
                    pred = label_map_classes(lm, vocab, ids)
            joint[model] += np.bincount(truth.ravel() * k + pred, minlength=k * k).reshape(k, k)
    out = {}
    for model, m in joint.items():
        both = np.diag(m)[: k - 1].astype(np.float64)
        truth_px, pred_px = m.sum(axis=1)[: k - 1], m.sum(axis=0)[: k - 1]
        union = (truth_px + pred_px).astype(np.float64) - both
        present = union > 0
        iou = np.divide(both, union, out=np.zeros_like(both), where=present)
        total = int(m.sum())
        out[model] = {
            "images": len(records),
            "stats": {
                "mIoU": round(float((both[present] / union[present]).mean()), 4) if present.any() else 0.0,
                "mIoU_categories": round(float(iou[1:][present[1:]].mean()), 4) if present[1:].any() else 0.0,
                "pixel_accuracy": round(float(np.trace(m) / total), 4) if total else 0.0,
            },
            "per_class": [
                {
                    "category_id": 0 if n == 0 else ids[n - 1],
                    "name": names[n],
                    "IoU": round(float(iou[n]), 4) if present[n] else None,
                    "ground_truth_pixels": int(truth_px[n]),
                    "predicted_pixels": int(pred_px[n]),
                }
                for n in range(k - 1)
            ],
            "pixels_without_category": int(m[:, k - 1].sum()),
        }
    return out


def classification_metrics(
    items: Sequence[DatasetImage],
    records: Mapping[int, Record],
    vocabularies: Mapping[str, ModelVocabulary],
    categories: Sequence[Mapping[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Per model: top-1 and top-5 accuracy over the items answered (shapes.accuracy.clip_top1's top-1),
    and per class. An item a model failed on counts as wrong."""
    answered = [i for i in items if i.category_id is not None and (r := records.get(i.id)) and r.code == "OK"]
    names = {int(c["id"]): str(c["name"]) for c in categories}
    out = {}
    for model, vocab in vocabularies.items():
        top1: Counter[int] = Counter()
        topk: Counter[int] = Counter()
        total: Counter[int] = Counter()
        unmatched = 0
        for item in answered:
            assert item.category_id is not None
            total[item.category_id] += 1
            result = model_result(records[item.id], model)
            output = _output(result) if result is not None and result.status.code == 0 else None
            if not isinstance(output, vms.ClassifyResponse) or not output.scores:
                continue
            ranked = [vocab.category_of.get(normalise(s.label.name)) for s in output.scores[:TOP_K]]
            unmatched += ranked[0] is None
            top1[item.category_id] += ranked[0] == item.category_id
            topk[item.category_id] += item.category_id in ranked
        n = sum(total.values())
        out[model] = {
            "items": n,
            "stats": {
                "top1": round(sum(top1.values()) / max(n, 1), 4),
                f"top{TOP_K}": round(sum(topk.values()) / max(n, 1), 4),
            },
            "per_class": [
                {
                    "category_id": c,
                    "name": names[c],
                    "top1": round(top1[c] / total[c], 4) if total[c] else None,
                    f"top{TOP_K}": round(topk[c] / total[c], 4) if total[c] else None,
                    "ground_truth": total[c],
                }
                for c in sorted(names)
            ],
            "unmatched_top1": unmatched,
        }
    return out


def _pair_of(record: Record, model_a: str, model_b: str, kind: str) -> cs.PairAgreement | None:
    if record.response is None:
        return None
    return next(
        (
            p
            for p in record.response.agreements
            if {p.model_a, p.model_b} == {model_a, model_b} and p.WhichOneof("agreement") == kind
        ),
        None,
    )


def label_map_pair(model_a: str, model_b: str, records: Iterable[Record], worst: int) -> dict[str, Any]:
    """The gateway's label-map agreement of two models over the images both answered."""
    rows: list[dict[str, Any]] = []
    for record in records:
        pair = _pair_of(record, model_a, model_b, "label_map")
        if pair is None:
            continue
        m = pair.label_map
        rows.append(
            {
                "image_id": record.image_id,
                "file_name": record.file_name,
                "disagreement": round(1.0 - m.pixel_agreement, 4),
                "pixel_agreement": round(m.pixel_agreement, 4),
                "mean_iou": round(m.mean_iou, 4),
                "classes": len(m.classes),
            }
        )
    ranked = sorted(rows, key=lambda r: (-r["disagreement"], r["image_id"]))
    mean = lambda key: round(float(np.mean([r[key] for r in rows])), 4) if rows else 0.0  # noqa: E731
    return {
        "kind": "label_map",
        "model_a": model_a,
        "model_b": model_b,
        "images": len(rows),
        "pixel_agreement": mean("pixel_agreement"),
        "mean_iou": mean("mean_iou"),
        "mean_disagreement": mean("disagreement"),
        "most_disagreeing": [r for r in ranked[:worst] if r["disagreement"] > 0],
    }


def classification_pair(model_a: str, model_b: str, records: Iterable[Record], worst: int) -> dict[str, Any]:
    """The gateway's classification agreement of two models over the items both answered."""
    rows: list[dict[str, Any]] = []
    for record in records:
        pair = _pair_of(record, model_a, model_b, "classification")
        if pair is None:
            continue
        c = pair.classification
        rho = round(c.rank_correlation, 4) if c.HasField("rank_correlation") else None
        rows.append(
            {
                "image_id": record.image_id,
                "file_name": record.file_name,
                # half for a top-1 that differs, half for the top-k labels that do not overlap
                "disagreement": round(0.5 * (not c.top1_agree) + 0.5 * (1.0 - c.topk_overlap), 4),
                "top1_agree": c.top1_agree,
                "topk_overlap": round(c.topk_overlap, 4),
                "rank_correlation": rho,
            }
        )
    ranked = sorted(rows, key=lambda r: (-r["disagreement"], r["image_id"]))
    rhos = [r["rank_correlation"] for r in rows if r["rank_correlation"] is not None]
    return {
        "kind": "classification",
        "model_a": model_a,
        "model_b": model_b,
        "images": len(rows),
        "top1_agreement": round(sum(r["top1_agree"] for r in rows) / len(rows), 4) if rows else 0.0,
        "topk_overlap": round(float(np.mean([r["topk_overlap"] for r in rows])), 4) if rows else 0.0,
        "rank_correlation": round(float(np.mean(rhos)), 4) if rhos else None,
        "rank_correlation_images": len(rhos),
        "mean_disagreement": round(float(np.mean([r["disagreement"] for r in rows])), 4) if rows else 0.0,
        "most_disagreeing": [r for r in ranked[:worst] if r["disagreement"] > 0],
    }


# --- the result -----------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """Everything the JSON result and the report are made of."""

    result: dict[str, Any]
    records: dict[int, Record]
    dataset: Dataset
    latencies: dict[str, list[float]]
    items: list[DatasetImage] = field(default_factory=list)  # what Compare got (images, or objects' crops)


def evaluate(
    dataset: Dataset,
    records: Mapping[int, Record],
    config: RunConfig,
    vocabularies: Mapping[str, ModelVocabulary],
    *,
    endpoints: Mapping[str, str] | None = None,
    evaluator: str = "auto",
    agreement_min_score: float | None = 0.5,
    oks_sigma: Sequence[float] = (),
    worst: int = 10,
    run: Mapping[str, Any] | None = None,
    gateway: str = "",
) -> Evaluation:
    """Metrics, latency, errors and agreement from the stored records of `dataset`'s items (its images,
    or for classification on COCO annotations its objects' crops: `Dataset.items`)."""
    items = dataset.items(config.task)
    wanted = {i.id for i in items}
    kept = {k: r for k, r in records.items() if k in wanted}
    answered = [r for r in sorted(kept.values(), key=lambda r: r.image_id) if r.code == "OK"]
    failed = [r for r in sorted(kept.values(), key=lambda r: r.image_id) if r.code != "OK"]
    models = list(vocabularies)
    evaluator = evaluator_name(evaluator)
    eval_seconds = 0.0
    latencies: dict[str, list[float]] = {}
    model_figures: dict[str, Any] = {}
    instances = config.task in INSTANCE_TASKS
    gt = ground_truth(dataset, evaluator) if dataset.labelled and instances else None
    names = {int(c["id"]): str(c["name"]) for c in dataset.categories}
    dense: dict[str, dict[str, Any]] = {}  # semantic segmentation's and classification's metrics, per model
    if dataset.labelled_for(config.task) and not instances:
        start = time.perf_counter()
        categories_ = task_categories(dataset, config.task)
        if config.task == SEMANTIC_SEGMENTATION:
            dense = {
                m: {"semantic": f} for m, f in semantic_metrics(dataset, answered, vocabularies, categories_).items()
            }
        else:
            found = classification_metrics(items, kept, vocabularies, categories_)
            dense = {m: {"classification": f} for m, f in found.items()}
        eval_seconds += time.perf_counter() - start
    for model in models:
        vocab = vocabularies[model]
        lat: list[float] = []
        errors: Counter[str] = Counter()
        error_images = []
        weights = ""
        for record in answered:
            r = model_result(record, model)
            if r is None:
                continue
            if r.status.code == 0:
                lat.append(r.latency_ms)
                out = _output(r)
                weights = weights or (out.info.weights if out is not None else "")
            else:
                errors[status_name(r.status.code)] += 1
                error_images.append(
                    {
                        "image_id": record.image_id,
                        "file_name": record.file_name,
                        "code": status_name(r.status.code),
                        "message": r.status.message,
                    }
                )
        latencies[model] = lat
        figures: dict[str, Any] = {
            "endpoint": (endpoints or {}).get(model, ""),
            "weights": weights,
            "vocabulary": vocab.vocabulary,
            "images_ok": len(lat),
            "latency_ms": percentiles(lat),
            "errors": {"by_code": dict(sorted(errors.items())), "images": error_images},
            "metrics": None,
        }
        if gt is not None:
            start = time.perf_counter()
            dets, unmatched = detections(answered, model, vocab, config.task, dataset)
            image_ids = [r.image_id for r in answered]
            metrics: dict[str, Any] = {"unmatched_detections": unmatched}
            for iou_type in iou_types(config.task, dataset):
                if config.task == KEYPOINT_DETECTION:
                    category_ids = [int(c["id"]) for c in dataset.keypoint_categories]
                    sigmas = oks_sigmas(dataset, oks_sigma)
                else:
                    category_ids, sigmas = sorted(names), None
                usable = [d for d in dets if iou_type != "segm" or "segmentation" in d]
                metrics[iou_type] = coco_metrics(
                    gt,
                    usable,
                    iou_type,
                    image_ids=image_ids,
                    category_ids=category_ids,
                    category_names=names,
                    evaluator=evaluator,
                    sigmas=sigmas,
                    known=list(vocab.category_of.values()),
                )
            eval_seconds += time.perf_counter() - start
            figures["metrics"] = metrics
        if model in dense:
            figures["metrics"] = dense[model]
        model_figures[model] = figures

    pairs = []
    for n, a in enumerate(models):
        for b in models[n + 1 :]:
            if config.task == SEMANTIC_SEGMENTATION:
                pairs.append(label_map_pair(a, b, answered, worst))
            elif config.task == ZERO_SHOT_CLASSIFICATION:
                pairs.append(classification_pair(a, b, answered, worst))
            else:
                rows = pair_rows(answered, a, b, agreement_min_score, config.score_threshold)
                pairs.append(aggregate_pair(a, b, rows, worst))

    compare_seconds = [r.seconds * 1000.0 for r in answered]
    failures = Counter(r.code for r in failed)
    categories = [str(c["name"]) for c in task_categories(dataset, config.task)]
    known = {c for v in vocabularies.values() for c in v.matched}
    result = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "gateway": gateway,
        "dataset": {**dataset.describe(), "items": len(items)},
        "task": config.task,
        "models": models,
        "options": {"score_threshold": config.score_threshold, "max_results": config.max_results},
        "run": {
            "images_total": len(items),
            "images_stored": len(kept),
            "images_answered": len(answered),
            "images_failed": len(failed),
            "compare_latency_ms": percentiles(compare_seconds),
            **(dict(run) if run else {}),
        },
        "vocabulary": {
            "open_vocabulary_labels": list(config.open_vocabulary_labels),
            "categories_no_model_knows": [c for c in categories if c not in known],
            "models": {
                m: {
                    "vocabulary": v.vocabulary,
                    "matched": v.matched,
                    "unknown_categories": v.unknown_categories,
                    "labels_without_category": v.labels_without_category,
                }
                for m, v in vocabularies.items()
            },
        },
        "per_model": model_figures,
        "agreement": {"min_score": agreement_min_score if instances else None, "pairs": pairs},
        "failures": {
            "by_code": dict(sorted(failures.items())),
            "images": [
                {
                    "image_id": r.image_id,
                    "file_name": r.file_name,
                    "code": r.code,
                    "message": r.message,
                    "attempts": r.attempts,
                }
                for r in failed
            ],
        },
        "evaluator": {
            "name": evaluator_version(evaluator) if gt is not None else None,
            "seconds": round(eval_seconds, 4),
        },
    }
    return Evaluation(result, dict(kept), dataset, latencies, items)


def most_disagreeing_images(result: Mapping[str, Any], count: int) -> list[dict[str, Any]]:
    """The images where some pair disagrees most, each once, worst first."""
    best: dict[int, dict[str, Any]] = {}
    for pair in result["agreement"]["pairs"]:
        for row in pair["most_disagreeing"]:
            current = best.get(row["image_id"])
            if current is None or row["disagreement"] > current["disagreement"]:
                best[row["image_id"]] = {**row, "pair": f"{pair['model_a']} vs {pair['model_b']}"}
    return sorted(best.values(), key=lambda r: (-r["disagreement"], r["image_id"]))[:count]


def ground_truth_result(
    dataset: Dataset, image_id: int, task: str, item: DatasetImage | None = None
) -> cs.ModelResult | None:
    """The image's annotations (for classification: `item`'s class) as a model result, for drawing
    beside the models' panels."""
    if task == ZERO_SHOT_CLASSIFICATION:
        if item is None or item.category_id is None:
            return None
        name = next((str(c["name"]) for c in task_categories(dataset, task) if int(c["id"]) == item.category_id), "?")
        truth = vms.ClassScore(label=pb.Label(id=item.category_id, name=name, score=1.0))
        return cs.ModelResult(model_name="ground truth", classify=vms.ClassifyResponse(scores=[truth]))
    if dataset.coco is None:
        return None
    if task == SEMANTIC_SEGMENTATION:
        categories = sorted(dataset.categories, key=lambda c: int(c["id"]))
        truth_map = semantic_truth(dataset, image_id, [int(c["id"]) for c in categories])
        if truth_map is None:
            return None
        label_map = pb.LabelMap(
            width=truth_map.shape[1],
            height=truth_map.shape[0],
            class_names=["background", *(str(c["name"]) for c in categories)],
            class_indices_u16le=truth_map.astype("<u2").tobytes(),
        )
        return cs.ModelResult(model_name="ground truth", segment=vms.SegmentResponse(label_map=label_map))
    from pycocotools import mask as mask_utils

    names = {int(c["id"]): str(c["name"]) for c in dataset.categories}
    points = {int(c["id"]): list(c.get("keypoints") or []) for c in dataset.categories}
    image = next(i for i in dataset.coco["images"] if int(i["id"]) == image_id)
    h, w = int(image["height"]), int(image["width"])
    instances = []
    for ann in dataset.annotations:
        if int(ann["image_id"]) != image_id:
            continue
        x, y, bw, bh = (float(v) for v in ann["bbox"])
        instance = pb.Instance(
            box=pb.BoundingBox(x1=x, y1=y, x2=x + bw, y2=y + bh),
            score=1.0,
            label=pb.Label(id=int(ann["category_id"]), name=names.get(int(ann["category_id"]), "?"), score=1.0),
        )
        segmentation = ann.get("segmentation")
        if task == INSTANCE_SEGMENTATION and segmentation:
            if isinstance(segmentation, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
            elif isinstance(segmentation.get("counts"), list):
                rle = mask_utils.frPyObjects(segmentation, h, w)
            else:
                rle = segmentation
            counts = rle["counts"]
            instance.mask.rle.CopyFrom(
                pb.RleMask(height=h, width=w, counts=counts.encode() if isinstance(counts, str) else counts)
            )
            instance.mask.bbox.CopyFrom(instance.box)
        if task == KEYPOINT_DETECTION and ann.get("keypoints"):
            kp = ann["keypoints"]
            for n, name in enumerate(points.get(int(ann["category_id"]), [])):
                if kp[3 * n + 2] > 0:
                    instance.keypoints.append(pb.Keypoint(name=name, x=kp[3 * n], y=kp[3 * n + 1], score=1.0))
        instances.append(instance)
    return cs.ModelResult(model_name="ground truth", segment=vms.SegmentResponse(instances=instances))


def write_json(result: Mapping[str, Any], path: Path) -> None:
    path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")


def identity(dataset: Dataset, config: RunConfig) -> dict[str, Any]:
    """What a stored run is of: resuming needs the same dataset, task, models, options and labels
    (the gateway's address may change, e.g. after a restart)."""
    out = {
        "images_dir": str(dataset.images_dir.resolve()),
        "annotations": str(dataset.annotations_file.resolve()) if dataset.annotations_file else None,
        **asdict(config),
    }
    if config.task == ZERO_SHOT_CLASSIFICATION and dataset.coco is not None:
        out["min_object_pixels"] = dataset.min_object_pixels  # which objects are crops, and so which items
    return out
