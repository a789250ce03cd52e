"""`vcompare`: the command line for the comparison gateway.

vcompare models
vcompare compare photo.jpg --task instance-segmentation --out side_by_side.png
vcompare compare photo.jpg --task prompted-segmentation --point 120,80 --point 40,40,neg
vcompare evaluate data/shapes-eval/images --annotations data/shapes-eval/annotations.json
"""

from __future__ import annotations

import signal
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated, NoReturn

import grpc
import typer
from google.protobuf import json_format

from visioncompare.gateway.render import capability_table, side_by_side, summary
from visioncompare.runtime.channels import channel_options
from visioncompare.runtime.convert import pb_enum
from visioncompare.runtime.tasks import short_name
from visioncompare.runtime.types import Task
from visioncompare.tools.compose import COMPOSE_FILE, MODEL_SERVICES
from visioncompare.tools.evaluate_cli import evaluate
from visioncompare.tools.stack import LocalStack, StackFileError, stop_on_signals
from visioncompare.v1 import common_pb2 as pb
from visioncompare.v1 import comparison_service_pb2 as cs
from visioncompare.v1 import comparison_service_pb2_grpc as cs_grpc

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Compare vision models side by side.")

TASKS = {short_name(t): pb_enum(pb.Task, t) for t in Task}
INSTANCE_SEGMENTATION = short_name(Task.INSTANCE_SEGMENTATION)  # the commands' default task
GatewayOpt = Annotated[str, typer.Option("--gateway", "-g", envvar="VCOMPARE_GATEWAY", help="gateway address")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="VCOMPARE_TOKEN", help="bearer token")]


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"vcompare: {message}", err=True)
    raise typer.Exit(code)


def stub(address: str) -> tuple[grpc.Channel, cs_grpc.ComparisonServiceStub]:
    channel = grpc.insecure_channel(address, options=channel_options(64 * 1024 * 1024))
    return channel, cs_grpc.ComparisonServiceStub(channel)


def rpc_error(exc: grpc.RpcError, address: str) -> NoReturn:
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        fail(f"cannot reach the gateway at {address}: {exc.details()}")
    fail(f"{code.name}: {exc.details()}")


def floats(text: str, n: int, what: str) -> list[float]:
    parts = text.split(",")
    try:
        values = [float(p) for p in parts[:n]]
    except ValueError:
        fail(f"{what} {text!r}: expected {n} comma-separated numbers")
    if len(values) != n:
        fail(f"{what} {text!r}: expected {n} comma-separated numbers")
    return values


def build_options(
    labels: str | None, points: list[str], boxes: list[str], score_threshold: float | None, max_results: int | None
) -> pb.TaskOptions:
    options = pb.TaskOptions()
    if labels:
        options.labels.extend(label.strip() for label in labels.split(",") if label.strip())
    for p in points:
        x, y = floats(p, 2, "--point")
        negative = p.count(",") == 2 and p.rsplit(",", 1)[1].strip().lower() in {"neg", "negative", "0"}
        options.prompts.points.append(pb.PointPrompt(x=x, y=y, positive=not negative))
    for b in boxes:
        x1, y1, x2, y2 = floats(b, 4, "--box")
        options.prompts.boxes.append(pb.BoundingBox(x1=x1, y1=y1, x2=x2, y2=y2))
    if score_threshold is not None:
        options.score_threshold = score_threshold
    if max_results is not None:
        options.max_results = max_results
    return options


@app.command()
def models(
    gateway: GatewayOpt = "localhost:50050",
    token: TokenOpt = None,
    json: Annotated[bool, typer.Option("--json", help="print the raw response as JSON")] = False,
) -> None:
    """Print the capability table of every configured model."""
    channel, client = stub(gateway)
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    try:
        response = client.ListModels(cs.ListModelsRequest(), timeout=10, metadata=metadata)
    except grpc.RpcError as exc:
        rpc_error(exc, gateway)
    finally:
        channel.close()
    typer.echo(json_format.MessageToJson(response) if json else capability_table(response))


@app.command()
def compare(
    image: Annotated[Path, typer.Argument(help="image file (JPEG, PNG, WebP, BMP, GIF, TIFF)")],
    task: Annotated[str, typer.Option("--task", "-t", help=f"one of: {', '.join(TASKS)}")] = INSTANCE_SEGMENTATION,
    labels: Annotated[str | None, typer.Option(help="comma-separated labels")] = None,
    point: Annotated[list[str], typer.Option("--point", help="x,y or x,y,neg; repeatable")] = [],  # noqa: B006
    box: Annotated[list[str], typer.Option("--box", help="x1,y1,x2,y2; repeatable")] = [],  # noqa: B006
    models_: Annotated[str | None, typer.Option("--models", help="comma-separated model names")] = None,
    score_threshold: Annotated[float | None, typer.Option(help="drop results below this score")] = None,
    max_results: Annotated[int | None, typer.Option(help="keep at most this many results")] = None,
    json: Annotated[bool, typer.Option("--json", help="print the full response as JSON")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write a side-by-side PNG here")] = None,
    timeout: Annotated[float, typer.Option(help="deadline in seconds")] = 120.0,
    gateway: GatewayOpt = "localhost:50050",
    token: TokenOpt = None,
) -> None:
    """Run IMAGE through every model serving TASK and compare the outputs."""
    if task not in TASKS:
        fail(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}", 2)
    try:
        data = image.read_bytes()
    except OSError as exc:
        fail(f"cannot read {image}: {exc.strerror or exc}", 2)
    request = cs.CompareRequest(
        image=pb.Image(encoded=data),
        task=TASKS[task],
        options=build_options(labels, point, box, score_threshold, max_results),
        model_names=[m.strip() for m in models_.split(",")] if models_ else [],
    )
    channel, client = stub(gateway)
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    try:
        response = client.Compare(request, timeout=timeout, metadata=metadata)
    except grpc.RpcError as exc:
        rpc_error(exc, gateway)
    finally:
        channel.close()
    typer.echo(json_format.MessageToJson(response) if json else summary(response))
    if out is not None:
        try:
            side_by_side(data, response).save(out)
        except (OSError, ValueError) as exc:
            fail(f"cannot write {out}: {exc}")
        if not json:
            typer.echo(f"wrote {out}")
    if not any(r.status.code == 0 for r in response.results):
        sys.exit(1)


app.command(help=evaluate.__doc__)(evaluate)  # `vcompare evaluate`: visioncompare/tools/evaluate_cli.py

stack_app = typer.Typer(no_args_is_help=True, help="Run the stack locally, as processes.")
app.add_typer(stack_app, name="stack")
#: The bundled shapes scene (held-out scene 1002013): the page's sample, which the gateway serves.
DEFAULT_SAMPLE = Path(str(resources.files("visioncompare.gateway").joinpath("samples", "shapes-scene.png")))


@stack_app.command("up")
def stack_up(
    image: Annotated[Path, typer.Option(help="image for the main job")] = DEFAULT_SAMPLE,
    task: Annotated[str, typer.Option("--task", "-t")] = INSTANCE_SEGMENTATION,
    out: Annotated[Path, typer.Option("--out", "-o", help="side-by-side PNG")] = Path("side_by_side.png"),
    stop: Annotated[bool, typer.Option("--stop", help="stop the stack after the main job")] = False,
    port_offset: Annotated[int, typer.Option(help="add to every port (to run beside another stack)")] = 0,
    compose_file: Annotated[
        Path,
        typer.Option(
            envvar="VCOMPARE_COMPOSE_FILE",
            help="the project's docker-compose.yml (default: the checkout's); its directory is the stack's root",
        ),
    ] = COMPOSE_FILE,
    env_file: Annotated[
        Path | None, typer.Option(help="compose-style variables (default: deploy/local.env beside the compose file)")
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for each service")] = 600.0,
) -> None:
    """Start the compose file's services as local processes and run the main comparison."""
    try:
        stack = LocalStack(compose_file=compose_file, env_file=env_file, port_offset=port_offset)
    except StackFileError as exc:
        fail(str(exc), 2)
    stop_on_signals(stack)
    typer.echo(f"starting {', '.join(MODEL_SERVICES)} and gateway (logs in {stack.log_dir}) ...")
    try:
        stack.up(timeout)
    except RuntimeError as exc:
        stack.stop()
        fail(str(exc))
    gateway = f"127.0.0.1:{stack.port('gateway')}"
    http_port = stack.service_env("gateway").get("GATEWAY_HTTP_PORT")
    try:
        models(gateway=gateway, token=None, json=False)
        typer.echo("")
        compare(
            image,
            task=task,
            labels=None,
            point=[],
            box=[],
            models_=None,
            score_threshold=None,
            max_results=None,
            json=False,
            out=out,
            timeout=timeout,
            gateway=gateway,
            token=None,
        )
    except (typer.Exit, SystemExit):
        stack.stop()
        raise
    if stop:
        stack.stop()
        typer.echo("stack stopped")
        return
    typer.echo(f"\nstack is up: gRPC gateway {gateway}, web page http://127.0.0.1:{http_port}/ ; Ctrl-C stops it")
    while True:
        signal.pause()


def main() -> None:
    app()
