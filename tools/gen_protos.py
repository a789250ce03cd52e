"""Generate the Python code for protos/ into the visioncompare package.

python tools/gen_protos.py            # regenerate in place
python tools/gen_protos.py --check    # exit 1 if the generated code is stale

Each .proto's path under protos/ is its module's path: protos/visioncompare/v1/common.proto is
visioncompare.v1.common_pb2. The generated folders hold nothing else; the rest of the package is
the project's own code.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
#: The folders under protos/, each generated into the Python package of the same path: the
#: project's contract, and the Open Inference Protocol (KServe v2) it also serves (its proto
#: package stays `inference`, the name its clients call).
PACKAGES = ("visioncompare/v1", "visioncompare/oip")


def generate(out_dir: Path) -> None:
    protos = sorted(
        str(p.relative_to(PROTO_ROOT)) for package in PACKAGES for p in (PROTO_ROOT / package).rglob("*.proto")
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    subprocess.run(cmd, check=True, cwd=PROTO_ROOT)
    for package in PACKAGES:
        for package_dir in [out_dir / package, *(p for p in (out_dir / package).rglob("*") if p.is_dir())]:
            (package_dir / "__init__.py").touch()


def differences(a: Path, b: Path) -> list[str]:
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    diffs = [f"missing or extra: {p}" for p in sorted(files_a ^ files_b)]
    diffs += [f"differs: {p}" for p in sorted(files_a & files_b) if not filecmp.cmp(a / p, b / p, shallow=False)]
    return diffs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the generated code is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "gen"
        generate(fresh)
        if args.check:
            diffs = [
                f"{package}: {line}"
                for package in PACKAGES
                for line in (differences(fresh / package, ROOT / package) if (ROOT / package).exists() else ["missing"])
            ]
            for line in diffs:
                print(line, file=sys.stderr)
            if diffs:
                print("Generated code is stale: run `python tools/gen_protos.py`.", file=sys.stderr)
                return 1
            return 0
        for package in PACKAGES:
            shutil.rmtree(ROOT / package, ignore_errors=True)
            shutil.copytree(fresh / package, ROOT / package)
            print(f"generated {package}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
