"""What the HTTP API accepts, said exactly: the request bodies of POST /v1/compare and
/v1/compare/png as the server validates them, and the OpenAPI schema that publishes them.

- `TaskOptionsJson` is visioncompare.v1.TaskOptions as a pydantic model built from the proto's
  descriptor (strict types, float32 and uint32 ranges, no unknown fields): the server validates
  `options` with it, and its JSON Schema is the one published. Fields go by their proto names
  (the names the answers use); the proto3 JSON mapping's lowerCamelCase names are accepted too.
- `CompareJson` is the JSON body; its image is non-empty, padded standard base64 of an image file
  (`format: image-base64`).
- `live_openapi` narrows the published schema to what the gateway can answer now: the tasks some
  model serves, the configured model names, and for each task the models that serve it (a request
  that names none of them is refused). Every other request the schema admits is answered 200
  (or 503 while no model is reachable).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, create_model

from visioncompare.runtime.tasks import short_name
from visioncompare.runtime.types import Task
from visioncompare.v1 import common_pb2 as pb

if TYPE_CHECKING:
    from visioncompare.gateway.comparison import Comparator

#: The bound of the float fields: JSON's safe range (JavaScript's Number.MAX_SAFE_INTEGER, 2^53 - 1),
#: well inside float32's. A bound of float32's own size (3.4e38) is not one a client can test against:
#: one past it (3.4e38 + 1) is the same float.
FLOAT_BOUND = 2**53 - 1
#: Standard base64 (RFC 4648, padded), as `base64.b64decode(..., validate=True)` reads it.
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
#: The image formats the gateway reads (visioncompare.runtime.images), as media types.
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif", "image/tiff")
#: `format` of a base64 image field: the base64 of a JPEG, PNG, WebP, BMP, GIF or TIFF file.
IMAGE_BASE64_FORMAT = "image-base64"
#: What Python's str.strip() removes, as a regular-expression class: the multipart lists'
#: items are stripped of it.
WHITESPACE = r"[\t\n\u000b\f\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"

_JSON_STRING = r'"(?:[^"\\\u0000-\u001f]|\\["\\/bfnrt])*"'
_JSON_SPACE = r"[ \t\n\r]*"
#: A JSON array of strings (no \u escapes: a lone surrogate would be no text): how the multipart
#: body spells a list of free text, which comma-separated text or repeated parts cannot tell apart
#: from a number or a single value.
_JSON_STRINGS = rf"(?:{_JSON_STRING}(?:{_JSON_SPACE},{_JSON_SPACE}{_JSON_STRING})*)?"
JSON_STRING_ARRAY = rf"^{_JSON_SPACE}\[{_JSON_SPACE}{_JSON_STRINGS}{_JSON_SPACE}\]{_JSON_SPACE}$"


def task_spellings(enum_names: Sequence[str]) -> list[str]:
    """Each task by its enum name ("TASK_OBJECT_DETECTION") and its short name ("object-detection")."""
    return [s for n in enum_names for s in (n, short_name(Task(pb.Task.Value(n))))]


#: Task names a request may give: "TASK_OBJECT_DETECTION" or "object-detection".
TASK_NAMES = task_spellings([pb.Task.Name(t) for t in Task])
TASK_FIELD = {
    "type": "string",
    "enum": TASK_NAMES,
    "description": 'the task: its enum name ("TASK_INSTANCE_SEGMENTATION") or its short name '
    '("instance-segmentation"); /openapi.json lists the tasks some model serves now '
    "(another is 400 FAILED_PRECONDITION)",
}


# --- TaskOptions, from the proto ------------------------------------------------------------------

_INT_RANGES = {
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
}


def _integral(value: Any) -> Any:
    """JSON's 3.0 is the integer 3 (JSON Schema and the proto3 JSON mapping read it so)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _field_type(field: FieldDescriptor) -> Any:
    """The pydantic type of one proto field (its element type, for a repeated field)."""
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_model(field.message_type)
    if field.type == FieldDescriptor.TYPE_FLOAT:
        return Annotated[float, Field(ge=-FLOAT_BOUND, le=FLOAT_BOUND, allow_inf_nan=False)]
    if field.type == FieldDescriptor.TYPE_DOUBLE:
        return Annotated[float, Field(ge=-FLOAT_BOUND, le=FLOAT_BOUND, allow_inf_nan=False)]
    if field.type in _INT_RANGES:
        low, high = _INT_RANGES[field.type]
        return Annotated[int, Field(ge=low, le=high), BeforeValidator(_integral)]
    if field.type == FieldDescriptor.TYPE_BOOL:
        return bool
    if field.type == FieldDescriptor.TYPE_STRING:
        return str
    raise TypeError(f"{field.full_name}: no JSON schema for proto type {field.type}")  # none in TaskOptions


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


@cache
def message_model(descriptor: Descriptor) -> type[BaseModel]:
    """A strict pydantic model of a proto message's JSON mapping (proto names; lowerCamelCase accepted)."""
    fields: dict[str, Any] = {}
    for field in descriptor.fields:
        kind = _field_type(field)
        if _is_repeated(field):
            kind = list[kind]  # type: ignore[valid-type]
        alias = AliasChoices(field.name, field.json_name) if field.json_name != field.name else None
        fields[field.name] = (kind, Field(None, validation_alias=alias))  # absent: unset; null is refused
    model: type[BaseModel] = create_model(
        descriptor.name + "Json",
        __config__=ConfigDict(extra="forbid", strict=True, title=descriptor.full_name),
        __doc__=f"{descriptor.full_name} in the proto3 JSON mapping; an absent field is unset",
        **fields,
    )
    return model


#: visioncompare.v1.TaskOptions as JSON: `options` of both bodies.
TaskOptionsJson = message_model(pb.TaskOptions.DESCRIPTOR)


def options_dict(options: BaseModel) -> dict[str, Any]:
    """A validated TaskOptionsJson as the dict json_format.ParseDict takes."""
    return options.model_dump(exclude_none=True)


def options_schema() -> dict[str, Any]:
    """TaskOptionsJson's JSON Schema, its nested messages inline (no $defs to resolve)."""
    return _inline_defs(TaskOptionsJson.model_json_schema())


def _inline_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with every $ref into its $defs replaced by the definition (the OpenAPI document
    holds each body whole)."""
    schema = dict(schema)
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]]))
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    out: dict[str, Any] = inline(schema)
    return out


# --- the bodies -----------------------------------------------------------------------------------


def _image_base64_schema(schema: dict[str, Any]) -> None:
    """The image field as published: non-empty base64 of an image file, said by its `format` and
    `contentEncoding` (the server checks BASE64_PATTERN too; a generator that reads the pattern
    would draw base64 that is no image)."""
    schema.pop("pattern", None)
    schema.update({"contentEncoding": "base64", "contentMediaType": "image/*", "format": IMAGE_BASE64_FORMAT})


class CompareJson(BaseModel):
    """JSON body of POST /v1/compare and /v1/compare/png."""

    model_config = ConfigDict(extra="forbid", strict=True)

    image_base64: str = Field(
        min_length=4,
        pattern=BASE64_PATTERN,
        description="the image file (JPEG, PNG, WebP, BMP, GIF or TIFF), base64-encoded (standard alphabet, "
        "padded); bytes that are no such image are 400 INVALID_ARGUMENT",
        json_schema_extra=_image_base64_schema,
    )
    task: str = Field(json_schema_extra=TASK_FIELD)  # type: ignore[arg-type]
    options: TaskOptionsJson = Field(  # type: ignore[valid-type]
        default_factory=TaskOptionsJson,
        description="visioncompare.v1.TaskOptions as JSON (proto field names; lowerCamelCase accepted)",
    )
    model_names: list[str] = Field(default_factory=list, description="models by name; empty means every one")
    open_vocabulary_labels: list[str] = Field(
        default_factory=list,
        description="the vocabulary of the open-vocabulary models (CompareRequest.open_vocabulary_labels), "
        "used when options.labels is empty; fixed-vocabulary models keep their own label set",
    )
    timeout_s: float | None = Field(None, gt=0, le=600, description="deadline in seconds")


MULTIPART_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["image", "task"],
    "properties": {
        "image": {
            "type": "string",
            "format": "binary",
            "minLength": 1,
            "description": "the image file (JPEG, PNG, WebP, BMP, GIF or TIFF); other bytes are 400 INVALID_ARGUMENT",
        },
        "task": TASK_FIELD,
        "options": {**options_schema(), "description": "visioncompare.v1.TaskOptions as JSON, as in the JSON body"},
        "model_names": {"type": "string", "description": "models by name, comma-separated; empty means every one"},
        "open_vocabulary_labels": {
            "type": "string",
            "pattern": JSON_STRING_ARRAY,
            "description": "the vocabulary of the open-vocabulary models (see the JSON body), as a JSON array of "
            'strings, e.g. ["cat", "dog"] (escapes: \\" \\\\ \\/ \\b \\f \\n \\r \\t)',
        },
    },
}

#: The request body of POST /v1/compare and /v1/compare/png.
COMPARE_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {"schema": _inline_defs(CompareJson.model_json_schema())},
        "multipart/form-data": {
            "schema": MULTIPART_SCHEMA,
            "encoding": {
                "image": {"contentType": ", ".join(IMAGE_MEDIA_TYPES)},
                "options": {"contentType": "application/json"},
            },
        },
    },
}


def json_string_array(text: str) -> list[str] | None:
    """The strings of a JSON_STRING_ARRAY, or None when `text` is not one."""
    if re.fullmatch(JSON_STRING_ARRAY, text) is None:
        return None
    values: list[str] = json.loads(text)
    return values


def split_list(text: str) -> list[str]:
    """A multipart comma-separated list: items stripped, empty ones dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


# --- the schema as the gateway stands now ---------------------------------------------------------


def _regex_escape(text: str) -> str:
    """`text` as an ECMA-262 (and Python) regular expression: only the metacharacters escaped."""
    return "".join("\\" + c if c in r"\^$.|?*+()[]{}/" else c for c in text)


def _names_regex(names: Sequence[str]) -> str:
    return "(?:" + "|".join(_regex_escape(n) for n in names) + ")"


def comma_list_pattern(names: Sequence[str]) -> str:
    """A comma-separated list (as `split_list` reads it) of the given names only."""
    item = f"{WHITESPACE}*(?:{_names_regex(names)}{WHITESPACE}*)?"
    return f"^{item}(?:,{item})*$"


def comma_list_naming_one_of(names: Sequence[str]) -> str:
    """A comma-separated list with at least one of the given names among its items."""
    return f"(?:^|,){WHITESPACE}*{_names_regex(names)}{WHITESPACE}*(?:,|$)"


def narrowed(
    schema: Mapping[str, Any], tasks: Sequence[str], models: Sequence[str], servers: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """`schema` (the app's OpenAPI document) narrowed to `tasks` (enum names some model serves),
    `models` (the configured names) and, per task, the models whose capabilities list it."""
    out = copy.deepcopy(dict(schema))
    for path in ("/v1/compare", "/v1/compare/png"):
        operation = out.get("paths", {}).get(path, {}).get("post")
        if operation is None:
            continue
        content = operation["requestBody"]["content"]
        json_body, form = content["application/json"]["schema"], content["multipart/form-data"]["schema"]
        for body in (json_body, form):
            if tasks:
                body["properties"]["task"]["enum"] = task_spellings(tasks)
        if not models:
            continue
        json_body["properties"]["model_names"]["items"] = {"type": "string", "enum": list(models)}
        form["properties"]["model_names"]["pattern"] = comma_list_pattern(models)
        # Per task, the models named must include one that serves it (or be none): when model_names is
        # given, one branch a task says which models it may name.
        branches_json: list[dict[str, Any]] = []
        branches_form: list[dict[str, Any]] = []
        narrowing = False
        for task in tasks:
            named = list(servers.get(task, ()))
            task_only: dict[str, Any] = {"task": {"enum": task_spellings([task])}}
            if not named or set(named) == set(models):
                branches_json.append({"properties": task_only})
                branches_form.append({"properties": task_only})
                continue
            narrowing = True
            some = {"anyOf": [{"maxItems": 0}, {"contains": {"enum": named}}]}
            some_text = {"anyOf": [{"pattern": f"^(?:{WHITESPACE}|,)*$"}, {"pattern": comma_list_naming_one_of(named)}]}
            branches_json.append({"properties": {**task_only, "model_names": some}})
            branches_form.append({"properties": {**task_only, "model_names": some_text}})
        if narrowing:
            json_body["dependentSchemas"] = {"model_names": {"anyOf": branches_json}}
            form["dependentSchemas"] = {"model_names": {"anyOf": branches_form}}
    return out


def live_openapi(base: Mapping[str, Any], comparator: Comparator | None) -> dict[str, Any]:
    """The OpenAPI document as the gateway stands now (see `narrowed`); every task while no model
    is reachable (every compare request is then 503)."""
    if comparator is None:
        return copy.deepcopy(dict(base))
    targets = comparator.registry.targets
    tasks = comparator.available_tasks()
    servers = {
        name: [t.name for t in targets.values() if t.serves(pb.Task.Value(name))]
        for name in (tasks or [n for n in pb.Task.keys() if n != "TASK_UNSPECIFIED"])
    }
    return narrowed(base, tasks, list(targets), servers)
