"""GGUF export with llama.cpp's own tools: ``convert_hf_to_gguf.py`` writes an f16 (or f32 / bf16) GGUF file from a
transformers folder, and llama.cpp's quantizer (``llama_model_quantize``, through llama-cpp-python) makes the
quantized types from it.

Where the converter comes from: llama-cpp-python's wheel holds only the compiled library; its source
distribution on PyPI (the same version the llamacpp engine runs, ``llama-cpp-python==0.3.36``) ships
``vendor/llama.cpp`` with ``convert_hf_to_gguf.py``, the ``conversion`` package it imports and the matching
``gguf-py``. ``make setup`` (``python -m studio.export.gguf --install-converter``) downloads that sdist with pip
and copies those three (and llama.cpp's licence) into ``<venv>/share/whetstone/llama-cpp-convert/``; the
converter then runs as a subprocess of the export job with this venv's Python (it needs torch, transformers,
numpy and sentencepiece, all in requirements.txt) and the gguf-py next to it, so the converter, the quantizer and
the engine that loads the file are all the same llama.cpp commit. ``STUDIO_GGUF_CONVERTER`` points at another
folder holding ``convert_hf_to_gguf.py`` (a llama.cpp checkout, for instance).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from studio.errors import BackendUnavailableError, ValidationError

CONVERTER_ENV = "STUDIO_GGUF_CONVERTER"
CONVERTER_SCRIPT = "convert_hf_to_gguf.py"
CONVERTER_PACKAGE = "llama-cpp-python"
CONVERTER_VERSION = "0.3.36"  # the llamacpp engine's pin (requirements-engines.txt)
STAMP_FILE = "whetstone-converter.json"
INSTALL_HINT = "run `make setup`, or `.venv/bin/python -m studio.export.gguf --install-converter`"

#: types convert_hf_to_gguf.py writes itself (no quantizer pass)
CONVERTER_TYPES: dict[str, str] = {"f32": "f32", "f16": "f16", "bf16": "bf16"}
#: types llama.cpp's quantizer makes from the f16 file (llama_ftype constants of llama-cpp-python); the i-quants
#: below 4 bits need an importance matrix and are left out
QUANTIZER_TYPES: dict[str, str] = {
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q5_k_s": "LLAMA_FTYPE_MOSTLY_Q5_K_S",
    "q5_1": "LLAMA_FTYPE_MOSTLY_Q5_1",
    "q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q4_k_s": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
    "q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1",
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "iq4_nl": "LLAMA_FTYPE_MOSTLY_IQ4_NL",
    "iq4_xs": "LLAMA_FTYPE_MOSTLY_IQ4_XS",
    "q3_k_l": "LLAMA_FTYPE_MOSTLY_Q3_K_L",
    "q3_k_m": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "q3_k_s": "LLAMA_FTYPE_MOSTLY_Q3_K_S",
    "q2_k": "LLAMA_FTYPE_MOSTLY_Q2_K",
}
QUANTS: tuple[str, ...] = (*CONVERTER_TYPES, *QUANTIZER_TYPES)
DEFAULT_QUANT = "f16"
#: exports of these types must answer exactly as the source (see studio.export.verify). f16/bf16 files only report
#: their agreement: llama.cpp multiplies 16-bit matrices with 16-bit activations, which can flip a near-tie (the
#: bundled model: 8/8 prompts identical; with a merged random LoRA: 6/8), and refusing a user's f16 export for that
#: would refuse a correct file
LOSSLESS_QUANTS = frozenset({"f32"})


def check_quant(value: str) -> str:
    """A GGUF type name, lower-case; a ValidationError on ``quant`` listing the allowed ones otherwise."""
    quant = value.strip().lower()
    if quant not in QUANTS:
        raise ValidationError(
            f"quant '{value}' is not a GGUF type llama.cpp makes here; choose one of: {', '.join(QUANTS)}",
            param="quant",
        )
    return quant


def gguf_file_name(name: str, quant: str) -> str:
    """``<name>.<QUANT>.gguf`` (the registry reads the quant from the file name)."""
    return f"{name}.{quant.upper()}.gguf"


# --- the converter --------------------------------------------------------------------------------------------


def default_converter_dir() -> Path:
    """Where ``--install-converter`` puts the converter: ``<venv>/share/whetstone/llama-cpp-convert``."""
    return Path(sys.prefix) / "share" / "whetstone" / "llama-cpp-convert"


def converter_dir() -> Path:
    """The folder holding ``convert_hf_to_gguf.py`` (``STUDIO_GGUF_CONVERTER``, else the venv's), or a
    BackendUnavailableError saying how to install it."""
    configured = os.environ.get(CONVERTER_ENV, "").strip()
    folder = Path(configured) if configured else default_converter_dir()
    if not (folder / CONVERTER_SCRIPT).is_file():
        where = f"{CONVERTER_ENV}={configured}" if configured else "this virtual environment"
        raise BackendUnavailableError(
            f"GGUF export needs llama.cpp's {CONVERTER_SCRIPT}, which is not installed in {where}: {INSTALL_HINT}",
            param="format",
        )
    return folder


def converter_info(folder: Path) -> dict[str, Any]:
    """What the installed converter is: the package and version it came from (its stamp file), and its folder."""
    try:
        stamp = json.loads((folder / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stamp = {}
    return {
        "script": CONVERTER_SCRIPT,
        "package": stamp.get("package", "unknown"),
        "version": stamp.get("version", "unknown"),
        "source": stamp.get("source", "unknown"),
    }


def install_converter(dest: Path | None = None, version: str = CONVERTER_VERSION, archive: Path | None = None) -> Path:
    """Download llama-cpp-python's sdist (``version``) with pip, or take ``archive`` (that sdist, already on disk),
    and install its llama.cpp converter into ``dest`` (default :func:`default_converter_dir`), replacing what was
    there. Returns ``dest``."""
    dest = dest or default_converter_dir()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llama-cpp-sdist-") as work:
        if archive is not None:
            shutil.copy(archive, Path(work) / archive.name)
        else:
            _pip_download(version, Path(work))
        archives = sorted(Path(work).glob("*.tar.gz"))
        if not archives:
            raise RuntimeError(f"pip downloaded no source archive of {CONVERTER_PACKAGE}=={version}")
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
        try:
            _extract_converter(archives[0], staging)
            stamp = {"package": CONVERTER_PACKAGE, "version": version, "source": archives[0].name}
            (staging / STAMP_FILE).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
            if dest.exists():
                old = dest.parent / f".{dest.name}-old-{os.getpid()}"
                os.rename(dest, old)
                shutil.rmtree(old, ignore_errors=True)
            os.rename(staging, dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return dest


def _pip_download(version: str, work: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--no-binary",
        ":all:",
        f"{CONVERTER_PACKAGE}=={version}",
        "-d",
        str(work),
    ]
    subprocess.run(cmd, check=True)


def _extract_converter(archive: Path, staging: Path) -> None:
    """Copy ``vendor/llama.cpp/{convert_hf_to_gguf.py, conversion/, gguf-py/, LICENSE}`` out of the sdist."""
    wanted = (CONVERTER_SCRIPT, "conversion/", "gguf-py/", "LICENSE")
    with tarfile.open(archive, "r:gz") as tar:
        members = []
        for member in tar.getmembers():
            parts = member.name.split("/", 1)
            if len(parts) != 2 or not parts[1].startswith("vendor/llama.cpp/"):
                continue
            rel = parts[1].removeprefix("vendor/llama.cpp/")
            if rel.startswith(wanted) and (member.isfile() or member.isdir()) and ".." not in rel.split("/"):
                member.name = rel
                members.append(member)
        tar.extractall(staging, members=members, filter="data")
    if not (staging / CONVERTER_SCRIPT).is_file() or not (staging / "conversion").is_dir():
        raise RuntimeError(f"{archive.name} has no vendor/llama.cpp/{CONVERTER_SCRIPT} with its conversion package")


def convert_to_gguf(
    model_dir: Path,
    out_file: Path,
    outtype: str,
    report: Callable[[str], None],
    should_stop: Callable[[], bool] = lambda: False,
) -> bool:
    """Run llama.cpp's converter on a transformers folder, writing ``out_file`` as ``outtype`` (f32, f16, bf16).
    Its output lines go to ``report``. Returns False when ``should_stop`` said so (the converter was ended);
    a converter that fails is a RuntimeError with its last lines."""
    if outtype not in CONVERTER_TYPES:
        raise ValidationError(f"the converter writes {', '.join(CONVERTER_TYPES)}; got {outtype!r}", param="quant")
    folder = converter_dir()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("NO_LOCAL_GGUF", None)  # use the gguf-py shipped with the converter: it is the same llama.cpp commit
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cmd = [sys.executable, str(folder / CONVERTER_SCRIPT), str(model_dir), "--outfile", str(out_file)]
    cmd += ["--outtype", CONVERTER_TYPES[outtype]]
    proc = subprocess.Popen(
        cmd, cwd=str(folder), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    tail: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            del tail[:-20]
            if "%|" not in line and "INFO:hf-to-gguf:blk." not in line:  # progress bars, one line per tensor
                report(line)

    reader = threading.Thread(target=pump, name="gguf-convert-output", daemon=True)
    reader.start()
    stopped = False
    while proc.poll() is None:
        if should_stop():
            stopped = True
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            break
        time.sleep(0.25)
    reader.join(timeout=5)
    if stopped:
        return False
    if proc.returncode != 0 or not out_file.is_file():
        last = " | ".join(t for t in tail[-5:] if t)
        raise RuntimeError(f"llama.cpp's converter failed (exit {proc.returncode}): {last}")
    return True


# --- the quantizer --------------------------------------------------------------------------------------------


def quantize_gguf(source: Path, target: Path, quant: str, threads: int | None = None) -> None:
    """Quantize an f16/f32 GGUF file into ``target`` as ``quant`` with llama.cpp's quantizer."""
    if quant not in QUANTIZER_TYPES:
        raise ValidationError(
            f"quant '{quant}' is not made by the quantizer; choose one of {', '.join(QUANTIZER_TYPES)}",
            param="quant",
        )
    from studio.inference.llamacpp_backend import import_llama_cpp

    llama_cpp = import_llama_cpp()
    ftype = getattr(llama_cpp, QUANTIZER_TYPES[quant], None)
    if ftype is None:
        raise BackendUnavailableError(
            f"this llama-cpp-python has no {QUANTIZER_TYPES[quant]}: quant '{quant}' cannot be made", param="quant"
        )
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(ftype)
    params.nthread = int(threads or os.cpu_count() or 1)
    code = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if code != 0 or not target.is_file():
        raise RuntimeError(f"llama.cpp's quantizer failed to make {quant} from {source.name} (code {code})")


def main(argv: list[str] | None = None) -> int:
    """``python -m studio.export.gguf --install-converter [--dest DIR] [--version V]`` (``make setup`` runs it)."""
    parser = argparse.ArgumentParser(prog="python -m studio.export.gguf", description=__doc__.split("\n\n")[0])
    parser.add_argument("--install-converter", action="store_true", help="install llama.cpp's converter")
    parser.add_argument("--dest", type=Path, help=f"folder (default {default_converter_dir()})")
    parser.add_argument("--version", default=CONVERTER_VERSION, help="llama-cpp-python sdist version")
    parser.add_argument("--sdist", type=Path, help="that sdist (.tar.gz) already on disk: no download")
    args = parser.parse_args(argv)
    if not args.install_converter:
        parser.print_help()
        return 2
    dest = install_converter(args.dest, args.version, args.sdist)
    print(f"installed llama.cpp's {CONVERTER_SCRIPT} from {CONVERTER_PACKAGE}=={args.version} into {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
