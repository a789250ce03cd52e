"""Where SAM and CLIP weights come from, and how they are loaded. Never downloads.

`WEIGHT_FILES` lists what `fetch-weights samclip` downloads with checksum
verification. A weight spec resolves to a `WeightSource` (the runtime's `Weights`, plus
what an open_clip tag brings) through a small dispatch table per part: add an entry to
add a source.

The "shapes" weights are the reference models this project trains on its synthetic
shapes world (`visioncompare/shapes_models/`, trained by the `shapes/` lab): shipped in the repository,
verified against the SHA-256 in their model cards, and loaded by the same code as real
checkpoints. They know only the five shape classes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from visioncompare.runtime.errors import ConfigurationError
from visioncompare.runtime.weights import WeightFile, Weights, WeightsSpec, load_state_dict
from visioncompare.shapes_models import cards as shapes_cards
from visioncompare.shapes_models.facts import SHAPES

#: Said by every answer, in Capabilities and in each part's weights label.
SHAPES_NOTE = shapes_cards.DESCRIPTION  # "shapes reference weights, synthetic data"
#: part -> (file stem in visioncompare/shapes_models/weights/, the script that trains it, its setting,
#: its architecture's setting).
SHAPES_FILES = {
    "SAM": ("sam_shapes", "shapes.train_sam", "SAMCLIP_SAM_WEIGHTS", "SAMCLIP_SAM_VARIANT"),
    "CLIP": ("clip_shapes", "shapes.train_clip", "SAMCLIP_CLIP_PRETRAINED", "SAMCLIP_CLIP_MODEL"),
    "SAM-CLIP": ("samclip_shapes", "shapes.train_samclip", "SAMCLIP_MERGED_WEIGHTS", "SAMCLIP_SAM_VARIANT"),
}

_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"

#: The official segment-anything checkpoints (full SHA-256 digests; the name
#: suffix of these files is an MD5 prefix, not a SHA-256 one).
SAM_FILES: dict[str, WeightFile] = {
    variant: WeightFile(
        name=f"sam_{variant}",
        url=_SAM_URL + filename,
        sha256=digest,
        filename=filename,
        subdir="segment_anything",
    )
    for variant, filename, digest in (
        ("vit_b", "sam_vit_b_01ec64.pth", "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
        ("vit_l", "sam_vit_l_0b3195.pth", "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
        ("vit_h", "sam_vit_h_4b8939.pth", "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
    )
}

#: The default OpenCLIP checkpoint: ViT-B-32 trained on LAION-2B (16 epochs).
#: Its release file name carries a SHA-256 prefix, so the download is verifiable
#: (the Hugging Face files of other tags publish no digest open_clip knows).
DEFAULT_CLIP_FILE = WeightFile(
    name="open_clip_ViT-B-32_laion2b_e16",
    url="https://github.com/mlfoundations/open_clip/releases/download/v0.2-weights/vit_b_32-laion2b_e16-af8dbd0c.pth",
    sha256=None,
    sha256_prefix="af8dbd0c",
    filename="vit_b_32-laion2b_e16-af8dbd0c.pth",
    subdir="open_clip/ViT-B-32/laion2b_e16",
)

WEIGHT_FILES: list[WeightFile] = [*SAM_FILES.values(), DEFAULT_CLIP_FILE]


@dataclass(frozen=True)
class WeightSource(Weights):
    """Resolved weights of one part; a CLIP's also say how its open_clip tag preprocesses."""

    preprocess: dict[str, Any] | None = None  # open_clip preprocess config of a tag
    quick_gelu: bool = False  # the open_clip tag was trained with QuickGELU


def _fetch_hint(file: WeightFile, cache_dir: Path, env: str) -> str:
    return (
        f"Fetch them with `fetch-weights --cache-dir {cache_dir} samclip --only {file.name}`, "
        f"point {env} at a checkpoint (file:/path), or set {env}=random."
    )


def _file(arg: str, label: str) -> WeightSource:
    path = Path(arg).expanduser()
    return WeightSource(label=f"file:{path}", path=path, pretrained=True, fetch_hint=f"Check {label}.")


def _random(*_: object) -> WeightSource:
    return WeightSource(label="random", path=None, pretrained=False)


def _shapes(part: str, arch: str) -> WeightSource:
    """The shipped shapes weights of `part` (a key of SHAPES_FILES), with their model card."""
    stem, script, env, arch_env = SHAPES_FILES[part]
    if arch != SHAPES:
        raise ConfigurationError(
            f"{env}=shapes are weights of the shapes architecture only; set {arch_env}=shapes "
            f"(not {arch!r}), or give {arch} its own weights"
        )
    directory = shapes_cards.WEIGHTS_DIR
    hint = (
        f"The shapes reference weights ship in {directory}: restore them from git, or train them "
        f"with `python -m {script} --out {directory}`."
    )
    return WeightSource(**asdict(shapes_cards.shipped(stem, part, hint)))


def _official_sam(variant: str, cache_dir: Path) -> WeightSource:
    file = SAM_FILES.get(variant)
    if file is None:
        own = "shapes, " if variant == SHAPES else ""
        raise ConfigurationError(
            f"SAM variant {variant!r} has no official weights; use SAMCLIP_SAM_WEIGHTS={own}random or file:/path"
        )
    return WeightSource(
        label=f"segment-anything:{file.filename}",
        path=file.path(cache_dir),
        pretrained=True,
        fetch_hint=_fetch_hint(file, cache_dir, "SAMCLIP_SAM_WEIGHTS"),
    )


#: sam_weights kind -> resolver(variant or file path, cache_dir).
SAM_SOURCES: dict[str, Callable[[str, Path], WeightSource]] = {
    "official": _official_sam,
    "file": lambda arg, _: _file(arg, "SAMCLIP_SAM_WEIGHTS"),
    "random": _random,
    SHAPES: lambda variant, _: _shapes("SAM", variant),
}


def _resolve(
    setting: str,
    spec: str,
    variant: str,
    cache_dir: Path,
    sources: dict[str, Callable[[str, Path], WeightSource]],
    advice: str = "",
) -> WeightSource:
    """`spec` ("kind" or "file:/path") through its kind's resolver in `sources`."""
    parsed = WeightsSpec.parse(spec)
    resolver = sources.get(parsed.scheme)
    if resolver is None:
        raise ConfigurationError(f"{setting}={spec!r}: use one of {sorted(sources)}{advice}")
    return resolver(parsed.value if parsed.scheme == "file" else variant, cache_dir)


def resolve_sam_weights(spec: str, variant: str, cache_dir: Path) -> WeightSource:
    return _resolve("sam_weights", spec, variant, cache_dir, SAM_SOURCES)


#: merged_weights kind -> resolver(variant or file path, cache_dir). No official merged
#: weights exist: Apple has not released them.
MERGED_SOURCES: dict[str, Callable[[str, Path], WeightSource]] = {
    "file": lambda arg, _: _file(arg, "SAMCLIP_MERGED_WEIGHTS"),
    "random": _random,
    SHAPES: lambda variant, _: _shapes("SAM-CLIP", variant),
}


def resolve_merged_weights(spec: str, variant: str, cache_dir: Path) -> WeightSource:
    advice = (
        "; Apple's SAM-CLIP weights are not released, so merge your own with "
        "`python -m shapes.train_samclip` and give them as file:/path"
    )
    return _resolve("merged_weights", spec, variant, cache_dir, MERGED_SOURCES, advice)


def clip_weight_file(model: str, tag: str) -> WeightFile | None:
    """The checkpoint of an open_clip pretrained tag as a cacheable file, or None if unknown."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        return None
    url: str = cfg.get("url", "")
    sha256 = prefix = None
    if url:
        filename = os.path.basename(url)
        if "openaipublic" in url:
            sha256 = url.split("/")[-2]
        elif "mlfoundations" in url:
            prefix = os.path.splitext(filename)[0].split("-")[-1]
    elif cfg.get("hf_hub"):
        # open_clip's convention: "org/repo/" means the default file name.
        model_id, filename = os.path.split(cfg["hf_hub"])
        filename = filename or "open_clip_pytorch_model.bin"
        url = f"https://huggingface.co/{model_id}/resolve/main/{filename}"
    else:
        return None
    return WeightFile(
        name=f"open_clip_{model}_{tag}",
        url=url,
        sha256=sha256,
        filename=filename,
        subdir=f"open_clip/{model}/{tag}",
        sha256_prefix=prefix,
    )


def _clip_tag(model: str, tag: str, cache_dir: Path) -> WeightSource:
    import open_clip

    file = clip_weight_file(model, tag)
    if file is None:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise ConfigurationError(
            f"clip_pretrained={tag!r} is not an open_clip tag of {model!r} "
            f"(known: {', '.join(tags) or 'none'}); or use file:/path or random"
        )
    cfg = open_clip.get_pretrained_cfg(model, tag)
    listed = file.name in {f.name for f in WEIGHT_FILES}
    hint = (
        _fetch_hint(file, cache_dir, "SAMCLIP_CLIP_PRETRAINED")
        if listed
        else f"Download {file.url} to that path yourself, or set SAMCLIP_CLIP_PRETRAINED=random."
    )
    keys = ("mean", "std", "interpolation", "resize_mode")
    return WeightSource(
        label=f"open_clip:{model}:{tag}",
        path=file.path(cache_dir),
        pretrained=True,
        fetch_hint=hint,
        preprocess={k: cfg[k] for k in keys if k in cfg},
        quick_gelu=bool(cfg.get("quick_gelu", False)),
    )


#: clip_pretrained kind -> resolver(model, argument, cache_dir); anything else is a tag.
#: "file" takes an argument after the colon; the others are bare names.
CLIP_SOURCES: dict[str, Callable[[str, str, Path], WeightSource]] = {
    "file": lambda _, arg, __: _file(arg, "SAMCLIP_CLIP_PRETRAINED"),
    "random": _random,
    SHAPES: lambda model, _, __: _shapes("CLIP", model),
}


def resolve_clip_weights(spec: str, model: str, cache_dir: Path) -> WeightSource:
    parsed = WeightsSpec.parse(spec)
    resolver = CLIP_SOURCES.get(parsed.scheme)
    if resolver is not None and (parsed.value or parsed.scheme != "file"):
        return resolver(model, parsed.value, cache_dir)
    if model == SHAPES:
        raise ConfigurationError(
            f"clip_pretrained={spec!r}: the shapes CLIP has no open_clip tags; use shapes, file:/path or random"
        )
    return _clip_tag(model, spec, cache_dir)


def load_strict(module: Any, path: Path, what: str) -> None:
    """Load a state dict (`load_state_dict`, weights_only) strictly into `module`."""
    state = load_state_dict(path, what)
    try:
        module.load_state_dict(state, strict=True)
    except Exception as exc:  # shape and key errors alike: the file is not for this network
        raise ConfigurationError(f"cannot load {what} weights from {path.name}: {exc}") from exc


def load_sam_state(sam: Any, path: Path) -> None:
    """Load a segment-anything checkpoint (a plain state dict) with weights_only=True."""
    load_strict(sam, path, "SAM")


def load_clip_state(clip: Any, path: Path) -> None:
    """Load an open_clip checkpoint (.pt/.pth/.bin/.safetensors) with weights_only=True."""
    import open_clip

    try:
        open_clip.load_checkpoint(clip, str(path), strict=True, weights_only=True)
    except Exception as exc:  # unpickling, zip, shape and key errors alike: the file is unusable
        raise ConfigurationError(f"cannot load CLIP weights from {path}: {exc}") from exc
