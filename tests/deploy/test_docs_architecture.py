"""docs/architecture.md names real files and real code: a rename that the map misses fails here."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
# Where a bare file name in the doc (`merged.py`) may live, besides the repository root.
PACKAGE_DIRS = (
    "visioncompare/runtime",
    "visioncompare/maskrcnn",
    "visioncompare/samclip",
    "visioncompare/gateway",
    "visioncompare/tools",
    "deploy/docker",
)
SOURCES = ("visioncompare", "protos/visioncompare")


def _code_spans() -> list[str]:
    text = re.sub(r"```.*?```", "", DOC.read_text(), flags=re.S)  # the diagram is prose, not references
    return [part for span in re.findall(r"`([^`\n]+)`", text) for part in re.split(r"[ ,()→|]+", span) if part]


def _is_path(part: str) -> bool:
    if any((ROOT / d / part).is_file() for d in PACKAGE_DIRS):  # a bare file name: gateway.Dockerfile
        return True
    return part.endswith(".py") or ("/" in part and not part.startswith("/") and ":" not in part)


def test_every_path_the_map_names_exists() -> None:
    missing = []
    for part in filter(_is_path, _code_spans()):
        if "*" in part:
            found = any(ROOT.glob(part))
        else:
            found = (ROOT / part).exists() or any((ROOT / d / part).exists() for d in PACKAGE_DIRS)
        if not found:
            missing.append(part)
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"


def test_every_function_and_class_the_map_names_is_in_the_code() -> None:
    code = (
        "\n".join(p.read_text() for d in SOURCES for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".proto"))
        + (ROOT / "pyproject.toml").read_text()
    )
    words = set(re.findall(r"\w+", code.lower()))
    missing = []
    for part in _code_spans():
        if _is_path(part) or not re.fullmatch(r"[A-Za-z_][\w.]*", part) or part.isupper():
            continue  # paths, routes, settings variables (SAMCLIP_BACKEND), punctuation
        missing += [f"{part} ({name})" for name in part.split(".") if name and name.lower() not in words]
    assert not missing, f"docs/architecture.md names what the code does not hold: {missing}"
