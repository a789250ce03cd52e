"""Call a model service's Open Inference Protocol through Triton's own client, in a child process.

tritonclient carries its own generated copy of the protocol (package `inference`,
file grpc_service.proto) and the model server registers the project's
(inference/grpc_predict_v2.proto); protobuf's default descriptor pool refuses the
same message names from two files, so the two never share a process. The tests
run their servers in-process and their tritonclient calls here:

    results = run_calls(address, [Call("infer", model="maskrcnn.object-detection", inputs=[...])])

Each Call becomes one tritonclient call; each result is a dict (numpy arrays for
outputs), or {"error": {"code": "StatusCode.INVALID_ARGUMENT", "message": ...}}.
This module imports neither the runtime nor the generated protos.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Input:
    name: str
    datatype: str
    data: Any  # numpy array (object dtype of bytes for BYTES)
    shape: list[int] | None = None  # sent instead of the data's own shape (for bad-shape tests)


@dataclass
class Call:
    op: str  # live, ready, model_ready, server_metadata, model_metadata, model_config, statistics, infer
    model: str = ""
    version: str = ""
    inputs: list[Input] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] | None = None
    headers: dict[str, str] | None = None
    timeout_s: float = 120.0


def run_calls(address: str, calls: list[Call], timeout: float = 600.0) -> list[dict[str, Any]]:
    """Run `calls` against `address` with tritonclient in a child process; their results in order."""
    done = subprocess.run(
        [sys.executable, "-m", "visioncompare.testing.oip_tritonclient", address],
        input=pickle.dumps(calls),
        capture_output=True,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"tritonclient child failed ({done.returncode}): {done.stderr.decode()[-4000:]}")
    results: list[dict[str, Any]] = pickle.loads(done.stdout)
    return results


def _one(client: Any, call: Call) -> dict[str, Any]:
    import tritonclient.grpc as tg
    from tritonclient.utils import InferenceServerException

    kw = {"headers": call.headers, "client_timeout": call.timeout_s}
    try:
        if call.op == "live":
            return {"live": client.is_server_live(**kw)}
        if call.op == "ready":
            return {"ready": client.is_server_ready(**kw)}
        if call.op == "model_ready":
            return {"ready": client.is_model_ready(call.model, call.version, **kw)}
        if call.op == "server_metadata":
            return client.get_server_metadata(as_json=True, **kw)
        if call.op == "model_metadata":
            return client.get_model_metadata(call.model, call.version, as_json=True, **kw)
        if call.op == "model_config":
            return client.get_model_config(call.model, call.version, as_json=True, **kw)
        if call.op == "statistics":
            return client.get_inference_statistics(call.model, call.version, as_json=True, **kw)
        if call.op == "infer":
            inputs = []
            for i in call.inputs:
                tensor = tg.InferInput(i.name, list(i.data.shape), i.datatype)
                tensor.set_data_from_numpy(i.data)
                if i.shape is not None:
                    tensor.set_shape(i.shape)
                inputs.append(tensor)
            outputs = [tg.InferRequestedOutput(n) for n in call.outputs] if call.outputs is not None else None
            result = client.infer(
                call.model,
                inputs,
                model_version=call.version,
                outputs=outputs,
                request_id="oip-test",
                parameters=call.parameters or None,
                **kw,
            )
            response = result.get_response(as_json=True)
            return {
                "outputs": {o["name"]: result.as_numpy(o["name"]) for o in response["outputs"]},
                "datatypes": {o["name"]: o["datatype"] for o in response["outputs"]},
                "output_parameters": {o["name"]: o.get("parameters", {}) for o in response["outputs"]},
                "parameters": response.get("parameters", {}),
                "id": response.get("id", ""),
                "model_name": response["model_name"],
                "model_version": response.get("model_version", ""),
            }
        raise ValueError(f"unknown op {call.op}")
    except InferenceServerException as exc:
        return {"error": {"code": exc.status(), "message": exc.message()}}


def main() -> None:
    import tritonclient.grpc as tg

    calls: list[Call] = pickle.loads(sys.stdin.buffer.read())
    with tg.InferenceServerClient(sys.argv[1]) as client:
        results = [_one(client, c) for c in calls]
    sys.stdout.buffer.write(pickle.dumps(results))


if __name__ == "__main__":
    main()
