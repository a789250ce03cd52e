"""docker-compose.yml as data: the single source of the stack's commands and settings.

The local stack (`vcompare stack up`) and the deploy consistency tests read it here. The
defaults are the checkout's files (ROOT: the directory above the visioncompare package, where an editable
install, `make setup`'s, leaves it); `vcompare stack up --compose-file` names another.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
MODEL_SERVICES = ("maskrcnn", "samclip", "sam-clip-composed")

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


class _Loader(yaml.SafeLoader):
    """YAML loader that understands compose's `!reset` tag."""


def _reset(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return None


_Loader.add_constructor("!reset", _reset)


def load_yaml(path: Path) -> Any:
    with open(path) as f:
        return yaml.load(f, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ${VAR} and ${VAR:-default}."""
    return _VARIABLE.sub(lambda m: env.get(m["name"]) or (m["default"] or ""), value)


def local_env_file(compose_file: Path) -> Path:
    """The local stack's variables for a checkout's compose file: deploy/local.env beside it."""
    return compose_file.parent / "deploy" / "local.env"


def read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class ComposeService:
    name: str
    command: list[str]
    environment: dict[str, str]
    ports: list[str]
    healthcheck: list[str]


def compose_services(env: Mapping[str, str] | None = None, path: Path = COMPOSE_FILE) -> dict[str, ComposeService]:
    """Services with their command and interpolated environment."""
    env = dict(os.environ if env is None else env)
    doc = load_yaml(path)
    out = {}
    for name, spec in doc["services"].items():
        environment = {k: interpolate(str(v), env) for k, v in (spec.get("environment") or {}).items()}
        out[name] = ComposeService(
            name=name,
            command=[interpolate(str(c), env) for c in spec.get("command") or []],
            environment=environment,
            ports=[interpolate(str(p), env) for p in spec.get("ports") or []],
            healthcheck=[str(t) for t in (spec.get("healthcheck") or {}).get("test", [])],
        )
    return out
