"""The task table (visioncompare.runtime.tasks) agrees with the contract and drives behaviour:
the RPCs the servicer, client and gateway use, and the options both services accept."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from visioncompare.gateway.http import parse_task
from visioncompare.gateway.http_schema import TASK_NAMES
from visioncompare.gateway.render import capability_table, task_name
from visioncompare.maskrcnn import options as maskrcnn_options
from visioncompare.maskrcnn.model import MaskRCNNModel
from visioncompare.maskrcnn.settings import MaskRCNNSettings
from visioncompare.runtime import convert
from visioncompare.runtime.client import VisionModelClient
from visioncompare.runtime.errors import InvalidArgument
from visioncompare.runtime.model import VisionModel
from visioncompare.runtime.oip import model_name
from visioncompare.runtime.tasks import (
    CLASSIFY,
    RPCS,
    TASK_TABLE,
    TASKS_BY_SHORT_NAME,
    check_options,
    short_name,
    spec,
    task_capability,
    tasks_of,
)
from visioncompare.runtime.types import (
    AutomaticOptions,
    Box,
    Capabilities,
    InferenceRequest,
    Point,
    Task,
    TaskCapability,
    TaskOption,
    TaskOptions,
    Vocabulary,
)
from visioncompare.samclip import validation as samclip_validation
from visioncompare.samclip.model import SamClipModel
from visioncompare.samclip.settings import SamClipSettings
from visioncompare.testing.images import encode
from visioncompare.testing.serving import ServerThread
from visioncompare.testing.tiny_model import BrightSpotModel
from visioncompare.tools import cli as vcompare_cli
from visioncompare.tools import evaluate as vcompare_evaluate
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import comparison_service_pb2 as cs
from visioncompare.v1 import vision_model_service_pb2 as vms
from visioncompare.v1 import vision_model_service_pb2_grpc as vms_grpc

IMAGE = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)

#: One request setting just that option, for every option.
ONE_OPTION: dict[TaskOption, TaskOptions] = {
    TaskOption.SCORE_THRESHOLD: TaskOptions(score_threshold=0.5),
    TaskOption.MAX_RESULTS: TaskOptions(max_results=3),
    TaskOption.LABELS: TaskOptions(labels=("circle",)),
    TaskOption.PROMPT_TEMPLATES: TaskOptions(prompt_templates=("a {}",)),
    TaskOption.MASK_THRESHOLD: TaskOptions(mask_threshold=0.5),
    TaskOption.RESIZE: TaskOptions(min_size=64),
    TaskOption.PROMPTS: TaskOptions(points=(Point(5, 5),)),
    TaskOption.AUTOMATIC: TaskOptions(automatic=AutomaticOptions(points_per_side=4)),
    TaskOption.NMS_IOU_THRESHOLD: TaskOptions(nms_iou_threshold=0.5),
}


@pytest.fixture(scope="module")
def maskrcnn() -> Iterator[ServerThread]:
    settings = MaskRCNNSettings(
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        log_json=False,
        weights="random",
        keypoints_enabled=True,
        keypoint_weights="random",
        min_size=64,
        max_size=96,
        max_detections=3,
    )
    with ServerThread(MaskRCNNModel(settings, detector_kwargs={"rpn_post_nms_top_n_test": 50}), settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def samclip() -> Iterator[ServerThread]:
    settings = SamClipSettings(
        backend="composed",
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        log_json=False,
        sam_variant="tiny",
        clip_model="tiny",
        sam_weights="random",
        clip_pretrained="random",
        device="cpu",
        points_per_side=4,
        proposal_points_per_side=4,
    )
    with ServerThread(SamClipModel(settings), settings) as srv:
        yield srv


# --- the table against the contract -------------------------------------------------------------


def test_every_task_has_one_rpc_and_its_types_are_the_contracts() -> None:
    assert set(TASK_TABLE) == set(Task)
    assert sorted(t for rpc in RPCS for t in tasks_of(rpc)) == sorted(Task)
    service = vms.DESCRIPTOR.services_by_name["VisionModelService"]
    output = cs.ModelResult.DESCRIPTOR.oneofs_by_name["output"]
    for rpc in RPCS:
        method = service.methods_by_name[rpc.name]
        assert method.input_type is rpc.request_type.DESCRIPTOR
        assert method.output_type is rpc.response_type.DESCRIPTOR
        [result_field] = [f for f in output.fields if f.message_type is rpc.response_type.DESCRIPTOR]
        assert result_field.name == rpc.result_field
        assert rpc.default_task is None or spec(rpc.default_task).rpc is rpc
        assert rpc.method(vms_grpc.VisionModelServiceStub(grpc.insecure_channel("unused:1"))) is not None
    assert [rpc.name for rpc in RPCS if not rpc.takes_task] == ["Classify"]
    assert spec(Task.KEYPOINT_DETECTION).rpc.name == "Detect"
    assert spec(Task.SEMANTIC_SEGMENTATION).rpc.name == "Segment"


def test_a_task_has_one_short_name_wherever_it_is_spelled() -> None:
    """The task table's short_name is the one spelling: the OIP model names, the HTTP API and its
    schema, the rendered tables, the CLI and `vcompare evaluate` take it from there."""
    assert short_name(Task.ZERO_SHOT_CLASSIFICATION) == "zero-shot-classification"
    assert TASKS_BY_SHORT_NAME == {short_name(t): t for t in Task} and len(TASKS_BY_SHORT_NAME) == len(Task)
    for task in Task:
        name = short_name(task)
        assert model_name("svc", task) == f"svc.{name}"
        assert parse_task(name) == parse_task(pb.Task.Name(task)) == task
        assert name in TASK_NAMES and task_name(task) == name
        assert vcompare_cli.TASKS[name] == task
    assert {name: TASKS_BY_SHORT_NAME[name] for name in vcompare_evaluate.TASKS} == vcompare_evaluate.TASKS


def test_task_option_mirrors_the_proto_enum_and_names_task_options_fields() -> None:
    proto = {name.removeprefix("TASK_OPTION_"): value for name, value in pb.TaskOption.items() if value}
    assert proto == {o.name: o.value for o in TaskOption}
    for option in TaskOption:
        assert pb.TaskOptions.DESCRIPTOR.fields_by_number[option.value].name == option.field.removeprefix("options.")


@pytest.mark.parametrize("option", list(TaskOption), ids=lambda o: o.name)
def test_given_names_exactly_the_option_a_request_sets(option: TaskOption) -> None:
    options = ONE_OPTION[option]
    assert options.given() == (option,)
    assert [f.number for f, _ in convert.options_to_proto(options).ListFields()] == [option.value]
    assert convert.options_from_proto(convert.options_to_proto(options)).given() == (option,)
    assert TaskOptions().given() == ()


def test_an_rpc_builds_its_request_with_the_task_where_it_has_one() -> None:
    image, options = pb.Image(encoded=b"x"), pb.TaskOptions(max_results=2)
    for task, s in TASK_TABLE.items():
        request = s.rpc.request(task, image, options)
        assert isinstance(request, s.rpc.request_type) and request.options.max_results == 2
        assert (request.task == task) if s.rpc.takes_task else s.rpc is CLASSIFY


def test_an_rpc_builds_its_response_from_the_fields_it_has() -> None:
    fields = convert.PredictionFields(
        instances=[pb.Instance(score=0.5)],
        label_map=pb.LabelMap(width=2, height=1),
        scores=[vms.ClassScore(similarity=0.25)],
    )
    info = pb.InferenceInfo(model_name="m")
    for rpc in RPCS:
        response = rpc.response(fields, info)
        assert isinstance(response, rpc.response_type) and response.info.model_name == "m"
        own = {f.name for f, _ in response.ListFields()} - {"info"}
        assert own == set(fields) & set(rpc.response_type.DESCRIPTOR.fields_by_name), rpc.name


def test_a_capability_without_accepted_options_takes_the_tables() -> None:
    for task, s in TASK_TABLE.items():
        assert set(task_capability(task, Vocabulary.NONE).accepted_options) == s.options


# --- the options both services accept ------------------------------------------------------------


def served_models(maskrcnn: ServerThread, samclip: ServerThread) -> list[VisionModel]:
    return [maskrcnn.model, samclip.model]


def test_no_model_accepts_an_option_the_table_does_not_apply(maskrcnn: ServerThread, samclip: ServerThread) -> None:
    for model in served_models(maskrcnn, samclip):
        for cap in model.capabilities().tasks:
            assert set(cap.accepted_options) <= spec(cap.task).options, (model.name, cap.task)
    assert {c.task: c.accepted_options for c in maskrcnn.model.capabilities().tasks} == {
        t: maskrcnn_options.accepted_options(t)
        for t in (Task.OBJECT_DETECTION, Task.INSTANCE_SEGMENTATION, Task.KEYPOINT_DETECTION)
    }
    assert {c.task: c.accepted_options for c in samclip.model.capabilities().tasks} == {
        t: samclip_validation.accepted_options(t) for t in Task if t != Task.KEYPOINT_DETECTION
    }


def test_capabilities_advertise_the_accepted_options_over_grpc(maskrcnn: ServerThread, samclip: ServerThread) -> None:
    for server in (maskrcnn, samclip):
        with grpc.insecure_channel(server.address) as channel:
            raw = vms_grpc.VisionModelServiceStub(channel).Capabilities(vms.CapabilitiesRequest(), timeout=30)
        with VisionModelClient(server.address) as client:
            caps = client.capabilities()
        assert caps.tasks == server.model.capabilities().tasks
        for task in raw.tasks:
            assert list(task.accepted_options) == sorted(task.accepted_options)  # in field order
            assert list(task.accepted_options) == [int(o) for o in caps.capability(Task(task.task)).accepted_options]
    detect = {pb.TaskOption.Name(o) for o in _raw_capability(maskrcnn, Task.OBJECT_DETECTION).accepted_options}
    assert detect == {
        "TASK_OPTION_SCORE_THRESHOLD",
        "TASK_OPTION_MAX_RESULTS",
        "TASK_OPTION_LABELS",
        "TASK_OPTION_RESIZE",
        "TASK_OPTION_NMS_IOU_THRESHOLD",
    }
    prompted = _raw_capability(samclip, Task.PROMPTED_SEGMENTATION).accepted_options
    assert list(prompted) == [pb.TASK_OPTION_MASK_THRESHOLD, pb.TASK_OPTION_PROMPTS]


def _raw_capability(server: ServerThread, task: Task) -> vms.TaskCapability:
    with grpc.insecure_channel(server.address) as channel:
        raw = vms_grpc.VisionModelServiceStub(channel).Capabilities(vms.CapabilitiesRequest(), timeout=30)
    return next(t for t in raw.tasks if t.task == task)


def test_every_option_a_task_does_not_accept_is_refused_by_its_field(
    maskrcnn: ServerThread, samclip: ServerThread
) -> None:
    checked = 0
    for model in served_models(maskrcnn, samclip):
        caps = model.capabilities()
        for cap in caps.tasks:
            for option, options in ONE_OPTION.items():
                request = InferenceRequest(cap.task, IMAGE, options)
                if option in cap.accepted_options:
                    check_options(request, caps, model.name)  # the runtime lets it through
                    continue
                with pytest.raises(InvalidArgument) as err:
                    model.validate(request)
                assert [f for f, _ in err.value.field_violations] == [option.field], (model.name, cap.task, option)
                assert "leave it unset" in err.value.message
                checked += 1
    assert checked == 11 + 28  # Mask R-CNN, SAM-CLIP


def rich(err: grpc.RpcError) -> tuple[grpc.StatusCode, str, list[tuple[str, str]]]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    violations = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            violations += [(v.field, v.description) for v in bad.field_violations]
    return err.code(), status.message, violations  # type: ignore[attr-defined]


def same_refusal(
    servers: tuple[ServerThread, ...], task: Task, options: TaskOptions
) -> tuple[grpc.StatusCode, str, list[tuple[str, str]]]:
    """Each server refuses the request (with a label, which every task here takes); the
    refusals are identical, and this is it."""
    answers = []
    for server in servers:
        with VisionModelClient(server.address, timeout=60) as client, pytest.raises(grpc.RpcError) as err:
            client.run(IMAGE, task, dataclasses.replace(options, labels=("circle",)))
        answers.append(rich(err.value))
    assert all(a == answers[0] for a in answers)
    return answers[0]


@pytest.mark.parametrize(
    ("task", "options", "words"),
    [
        (Task.INSTANCE_SEGMENTATION, TaskOptions(boxes=(Box(1, 1, 9, 9),)), "takes no point or box prompts"),
        (Task.OBJECT_DETECTION, TaskOptions(mask_threshold=0.5), "it is for INSTANCE_SEGMENTATION"),
        (
            Task.OBJECT_DETECTION,
            TaskOptions(mask_threshold=0.5, points=(Point(1, 1),)),
            "OBJECT_DETECTION does not use options.mask_threshold, options.prompts; leave them unset",
        ),
    ],
    ids=["prompts on instances", "mask threshold on detection", "both"],
)
def test_an_option_the_task_does_not_take_gets_the_same_answer_from_both_services(
    maskrcnn: ServerThread, samclip: ServerThread, task: Task, options: TaskOptions, words: str
) -> None:
    code, message, violations = same_refusal((maskrcnn, samclip), task, options)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and words in message
    assert [f for f, _ in violations] == [o.field for o in options.given()]


@pytest.mark.parametrize(
    ("options", "field", "words"),
    [
        (TaskOptions(score_threshold=1.5), "options.score_threshold", "is 1.5; it must be in [0, 1]"),
        (TaskOptions(score_threshold=float("nan")), "options.score_threshold", "is nan; it must be in [0, 1]"),
        (TaskOptions(nms_iou_threshold=0.0), "options.nms_iou_threshold", "is 0; it must be in (0, 1]"),
    ],
)
def test_an_option_outside_the_apis_range_gets_the_same_answer_from_both_services(
    maskrcnn: ServerThread, samclip: ServerThread, options: TaskOptions, field: str, words: str
) -> None:
    code, message, violations = same_refusal((maskrcnn, samclip), Task.OBJECT_DETECTION, options)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message == f"{field} {words}, or left unset for the model's default"
    assert [f for f, _ in violations] == [field]


def test_an_option_the_task_takes_but_the_model_does_not_names_the_model(
    maskrcnn: ServerThread, samclip: ServerThread
) -> None:
    with VisionModelClient(samclip.address, timeout=60) as client, pytest.raises(grpc.RpcError) as err:
        client.run(IMAGE, Task.OBJECT_DETECTION, TaskOptions(labels=("circle",), min_size=64))
    code, message, violations = rich(err.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("sam-clip-composed does not use options.resize for OBJECT_DETECTION; leave it unset")
    assert [f for f, _ in violations] == ["options.resize"]
    with VisionModelClient(maskrcnn.address, timeout=60) as client:  # Mask R-CNN reads it
        assert client.run(IMAGE, Task.OBJECT_DETECTION, TaskOptions(min_size=64)).model_name == "maskrcnn"


def test_the_client_runs_any_task_through_the_tables_rpc(maskrcnn: ServerThread, samclip: ServerThread) -> None:
    with VisionModelClient(maskrcnn.address, timeout=120) as client:
        keypoints = client.run(encode(IMAGE), Task.KEYPOINT_DETECTION)
        assert keypoints.model_name == "maskrcnn" and keypoints.image_width == 64
    with VisionModelClient(samclip.address, timeout=120) as client:
        prompted = client.run(IMAGE, Task.PROMPTED_SEGMENTATION, TaskOptions(points=(Point(10, 10),)))
        assert prompted.instances and prompted.instances[0].mask is not None
        scores = client.run(IMAGE, Task.ZERO_SHOT_CLASSIFICATION, TaskOptions(labels=("circle", "square")))
        assert {s.label.name for s in scores.scores} == {"circle", "square"}


# --- a model's capability is what the runtime enforces ------------------------------------------


class NoThresholdModel(BrightSpotModel):
    """The tiny model, declaring that detection reads no score threshold."""

    def capabilities(self) -> Capabilities:
        caps = super().capabilities()
        tasks = tuple(
            dataclasses.replace(
                c, accepted_options=tuple(o for o in c.accepted_options if o != TaskOption.SCORE_THRESHOLD)
            )
            if c.task == Task.OBJECT_DETECTION
            else c
            for c in caps.tasks
        )
        return dataclasses.replace(caps, tasks=tasks)


def test_the_runtime_enforces_the_options_a_capability_declares() -> None:
    with ServerThread(NoThresholdModel(name="strict")) as server, VisionModelClient(server.address) as client:
        caps = client.capabilities()
        assert TaskOption.SCORE_THRESHOLD not in caps.capability(Task.OBJECT_DETECTION).accepted_options
        assert TaskOption.SCORE_THRESHOLD in caps.capability(Task.INSTANCE_SEGMENTATION).accepted_options
        with pytest.raises(grpc.RpcError) as err:
            client.detect(IMAGE, options=TaskOptions(score_threshold=0.5))
        code, message, violations = rich(err.value)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert message.startswith("strict does not use options.score_threshold for OBJECT_DETECTION")
        assert [f for f, _ in violations] == ["options.score_threshold"]
        assert client.segment(IMAGE, Task.INSTANCE_SEGMENTATION, TaskOptions(score_threshold=0.5)).instances


# --- the gateway's capability table --------------------------------------------------------------


def test_the_capability_table_lists_the_accepted_options() -> None:
    caps = convert.capabilities_to_proto(
        Capabilities(
            card=BrightSpotModel().capabilities().card,
            tasks=(
                task_capability(Task.PROMPTED_SEGMENTATION, Vocabulary.NONE),
                TaskCapability(Task.OBJECT_DETECTION, Vocabulary.FIXED, accepted_options=()),
            ),
            runtime=BrightSpotModel().capabilities().runtime,
        )
    )
    table = capability_table(cs.ListModelsResponse(models=[cs.ModelRow(model_name="m", capabilities=caps)]))
    lines = table.splitlines()
    assert "Options accepted (TaskOptions fields; any other is INVALID_ARGUMENT):" in lines
    assert "  m  prompted-segmentation  mask_threshold, prompts" in lines
    assert "  m  object-detection       none" in lines
