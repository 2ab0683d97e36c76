"""The ``export`` job kind: one export (merged, GGUF, Triton layout or Docker context) as a background job.

Config (:class:`ExportConfig`, the same object the CLI, the UI and the API submit)::

    kind: export
    format: merged | gguf | triton | docker
    model: default            # an alias, a model id or a model path, as everywhere
    adapter: my-lora          # optional: a registered adapter (or its folder), merged into the model
    quant: q4_k_m             # gguf (default f16) and docker (a GGUF for the CPU image); see studio.export.gguf
    dtype: auto               # merged / triton / docker weights: auto, float32, bfloat16, float16
    name: smol-q4             # the folder STUDIO_HOME/exports/<name>; default <model>-<adapter>-<format>[-<quant>]

Steps (each a progress step; the job stops between them when cancelled): check the source (at submit too), make the
reference answers (source on transformers, float32, adapter unmerged), build the export in a partial folder,
verify it in its engine, write ``manifest.json``, publish (one rename) and register. A merged, Triton or Docker
export and an f16/f32/bf16 GGUF must answer the 8 check prompts token for token as the source does, else the job
fails and nothing is published; a quantized GGUF's agreement is reported (manifest ``verification`` and the job
result) without a threshold.

:func:`run_export` is the core function (the job body calls it; tests may call it with a ``MemoryReporter``).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from studio.errors import ValidationError
from studio.export import manifest as mf
from studio.export.exporter import (
    ExportSource,
    ExportStopped,
    StepClock,
    check_export_name,
    check_free,
    clean_stale_partials,
    default_name,
    exports_dir,
    partial_folder,
    publish,
    register,
    registration_path,
    resolve_source,
)
from studio.export.merge import DTYPES
from studio.jobs.kinds import JobKind, register_kind
from studio.settings import Settings

if TYPE_CHECKING:
    from studio.db.engine import Database
    from studio.jobs.reporter import JobReporter
    from studio.jobs.runtime import JobRuntime

log = logging.getLogger(__name__)

KIND = "export"
HF_STAGING = ".hf"  # inside the partial folder: the merged transformers model a GGUF is converted from


class ExportConfig(BaseModel):
    """One export (``kind: export``). ``name`` is filled at submit when left out."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["merged", "gguf", "onnx", "triton", "docker"] = Field(
        description="merged (safetensors, a new model), gguf (llama.cpp), onnx (Optimum's exporter, served by ONNX "
        "Runtime), triton (a Triton model repository for its vLLM backend) or docker (a build context with CPU and "
        "GPU Dockerfiles)."
    )
    model: str = Field(
        default="default", min_length=1, max_length=1024, description="default, an alias, a model id or a model path."
    )
    adapter: str | None = Field(
        default=None, max_length=1024, description="A registered adapter (or its folder) to merge into the model."
    )
    quant: str | None = Field(
        default=None,
        description="GGUF type: f16 (default), f32, bf16, q8_0, q6_k, q5_k_m, q4_k_m, ... For docker: a GGUF of that "
        "type is served by llama.cpp in the CPU image (else transformers).",
    )
    dtype: str = Field(default="auto", description="Weights of a merged model: auto, float32, bfloat16, float16.")
    name: str | None = Field(default=None, description="Export folder name under STUDIO_HOME/exports.")
    register_model: bool = Field(default=True, description="Register a merged or GGUF export as a model.")

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str | None) -> str | None:
        try:
            return check_export_name(v) if v is not None and v.strip() else None
        except ValidationError as exc:
            raise ValueError(exc.message) from None

    @field_validator("dtype")
    @classmethod
    def _check_dtype(cls, v: str) -> str:
        if v not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
        return v

    @field_validator("quant")
    @classmethod
    def _check_quant(cls, v: str | None) -> str | None:
        from studio.export.gguf import check_quant

        try:
            return check_quant(v) if v is not None and v.strip() else None
        except ValidationError as exc:
            raise ValueError(exc.message) from None

    def gguf_quant(self) -> str | None:
        """The GGUF type this export makes (gguf: default f16; docker: only when ``quant`` is given)."""
        from studio.export.gguf import DEFAULT_QUANT

        if self.format == "gguf":
            return self.quant or DEFAULT_QUANT
        return self.quant if self.format == "docker" else None


def checked_request(config: ExportConfig, settings: Settings) -> tuple[ExportConfig, ExportSource]:
    """The config with its name pinned, and its source resolved; refuses what cannot be exported (a quant for a
    format without GGUF, a missing converter, a missing model or adapter, an absent base, a name in use)."""
    if config.format in ("merged", "onnx", "triton") and config.quant:
        raise ValidationError(
            f"quant applies to gguf and docker exports; a {config.format} export takes dtype", param="quant"
        )
    if config.gguf_quant() is not None:
        from studio.export.gguf import converter_dir

        converter_dir()  # BackendUnavailableError naming the install command
    if config.format == "onnx":
        from studio.export.onnx import onnx_python

        onnx_python()  # BackendUnavailableError naming `make setup-onnx`
    source = resolve_source(settings, config.model, config.adapter)
    name = config.name or default_name(source.model_id, source.adapter, config.format, config.gguf_quant())
    check_free(settings, name, config.format, config.gguf_quant())
    return config.model_copy(update={"name": name}), source


def prepare_export(config: ExportConfig, settings: Settings, db: Database | None = None) -> ExportConfig:
    """At submit (the kind's ``prepare``): :func:`checked_request`, keeping the config with its name pinned."""
    return checked_request(config, settings)[0]


def _step(reporter: JobReporter, step: int, total: int, message: str) -> None:
    if reporter.should_stop():
        raise ExportStopped(message)
    reporter.progress(step, total, message=message)
    reporter.log(message)


def run_export(
    config: ExportConfig, settings: Settings, reporter: JobReporter, job_id: str | None = None
) -> dict[str, Any]:
    """Make the export ``config`` describes (see the module docstring). Returns the job result: name, path,
    format, registered model id, verification summary, files."""
    removed = clean_stale_partials(settings)
    if removed:
        reporter.log(f"removed {len(removed)} unfinished export folder(s) left by a killed job: {', '.join(removed)}")
    config, source = checked_request(config, settings)
    assert config.name is not None
    name, quant = config.name, config.gguf_quant()
    total = 6
    clock = StepClock()

    def report(line: str) -> None:
        if line.strip():
            reporter.log(line)

    with partial_folder(settings, name) as partial:
        _step(
            reporter,
            1,
            total,
            f"reference answers of {source.model_id}" + (f" + {source.adapter}" if source.adapter else ""),
        )
        from studio.export.verify import reference_tokens

        reference = reference_tokens(source.model_dir, source.adapter_dir)
        clock.lap("reference")
        _step(reporter, 2, total, f"building the {config.format} export '{name}'")
        built = _build(config, source, partial, report, reporter)
        clock.lap("build")
        _step(reporter, 3, total, f"checking the export in {built['engine']}")
        agreement = built["verify"](reference)
        clock.lap("verify")
        reporter.log(f"verification: {agreement.summary()}")
        if not agreement.passed:
            hint = ""
            if built["engine"] == "llamacpp":
                hint = (
                    "; llama.cpp multiplies f16/bf16 matrices with 16-bit activations, which can flip a near-tie: "
                    "export as f32 (matches token for token) or as a quantized type (agreement reported)"
                )
            raise RuntimeError(
                f"the {config.format} export does not answer as its source: {agreement.summary()} (a lossless export "
                f"must match token for token); nothing was published{hint}"
            )
        shutil.rmtree(partial / HF_STAGING, ignore_errors=True)
        _step(reporter, 4, total, "writing manifest.json (sha256 of every file)")
        final = exports_dir(settings) / name
        link = registration_path(settings, name, config.format, quant)
        registers = config.register_model and config.format in ("merged", "gguf", "onnx")
        registered_as = None
        if registers:
            registered_as = link.name if config.format == "gguf" else link.name.replace("--", "/")
        data = {
            "name": name,
            "format": config.format,
            "created_at": mf.now_iso(),
            "job_id": job_id,
            "source": source.describe(settings),
            "lineage": source.lineage,
            "options": {"quant": quant, "dtype": built.get("dtype")},
            "packages": mf.package_versions(),
            "converter": built.get("converter"),
            "engine": built["engine"],
            "verification": agreement.to_dict(),
            "registered_as": registered_as,
            "timings_s": clock.timings,
        }
        mf.write_manifest(partial, data)
        _step(reporter, 5, total, f"publishing $STUDIO_HOME/exports/{name}")
        publish(partial, final)
    if registers:
        target = final / built["register_file"] if built.get("register_file") else final
        register(settings, target, link)
        reporter.log(f"registered as model '{registered_as}'")
    reporter.progress(total, total, message=f"export '{name}' done: {agreement.summary()}")
    return {
        "name": name,
        "format": config.format,
        "path": str(final),
        "artifact_path": str(final),
        "registered_as": registered_as,
        "engine": built["engine"],
        "quant": quant,
        "dtype": built.get("dtype"),
        "verification": {k: v for k, v in agreement.to_dict().items() if k != "per_prompt"},
        "files": [f["path"] for f in (mf.read_manifest(final) or {}).get("files", [])],
        "notes": built.get("notes", []),
    }


def _merged_dir(config: ExportConfig, source: ExportSource, out: Path, report: Any) -> dict[str, Any]:
    from studio.export.merge import merge_to_folder

    return merge_to_folder(source.model_dir, source.adapter_dir, out, report, config.dtype)


def _build(
    config: ExportConfig, source: ExportSource, partial: Path, report: Any, reporter: JobReporter
) -> dict[str, Any]:
    """Build the export's files in ``partial``; returns the engine name, a ``verify(reference)`` callable and what
    the manifest records (dtype, converter, registered file)."""
    from studio.export import verify as vf

    if config.format == "merged":
        merged = _merged_dir(config, source, partial, report)
        return {
            "engine": "transformers",
            "dtype": merged["dtype"],
            "verify": lambda ref: vf.verify_export(
                ref, "transformers", lambda: vf.transformers_tokens(partial), required_identical=True
            ),
        }
    if config.format == "gguf":
        quant = config.gguf_quant() or "f16"
        gguf_file, converter = _make_gguf(config, source, partial, partial, quant, report, reporter)
        built: dict[str, Any] = {"engine": "llamacpp", "dtype": quant, "converter": converter,
                                 "register_file": gguf_file.name}  # fmt: skip
        built["verify"] = lambda ref: _verify_gguf(ref, gguf_file, quant)
        return built
    if config.format == "onnx":
        return _build_onnx(config, source, partial, report, reporter)
    if config.format == "triton":
        from studio.export.triton import write_triton_repository

        assert config.name is not None
        weights = write_triton_repository(partial, config.name)
        merged = _merged_dir(config, source, weights, report)
        return {
            "engine": "transformers",
            "dtype": merged["dtype"],
            "notes": ["Triton is not installable here: the layout is checked by loading its weights on transformers"],
            "verify": lambda ref: vf.verify_export(
                ref, "transformers", lambda: vf.transformers_tokens(weights), required_identical=True
            ),
        }
    return _build_docker(config, source, partial, report, reporter)


def _build_onnx(
    config: ExportConfig, source: ExportSource, partial: Path, report: Any, reporter: JobReporter
) -> dict[str, Any]:
    """``onnx/`` in the export: Optimum's exporter (its own venv, :mod:`studio.export.onnx`) on the model, or on
    the adapter merged into it (float32) first; checked on the onnxruntime engine, token for token."""
    from studio.errors import StudioError
    from studio.export import verify as vf
    from studio.export.onnx import export_onnx

    source_dir, dtype = source.model_dir, None
    if source.adapter_dir is not None:
        from studio.export.merge import merge_to_folder

        merged = merge_to_folder(source.model_dir, source.adapter_dir, partial / HF_STAGING, report, "float32")
        source_dir, dtype = partial / HF_STAGING, merged["dtype"]
    out = partial / "onnx"
    report("running Optimum's ONNX exporter (task text-generation-with-past) from .venv-onnx")
    try:
        export_onnx(source_dir, out, log_file=partial / "onnx-export.log", should_stop=reporter.should_stop)
    except StudioError as exc:
        if reporter.should_stop():
            raise ExportStopped("stopped while exporting to ONNX") from None
        raise RuntimeError(exc.message) from None
    return {
        "engine": "onnxruntime",
        "dtype": dtype or "float32",
        "register_file": "onnx",
        "verify": lambda ref: vf.verify_export(
            ref, "onnxruntime", lambda: vf.onnxruntime_tokens(out), required_identical=True
        ),
    }


def _build_docker(
    config: ExportConfig, source: ExportSource, partial: Path, report: Any, reporter: JobReporter
) -> dict[str, Any]:
    """The Docker context: the merged model, with a quant also a GGUF file, and the Dockerfiles around them."""
    from studio.export import verify as vf
    from studio.export.docker import write_docker_context

    assert config.name is not None
    docker_quant = config.gguf_quant()
    model_dir = partial / "model"
    merged = _merged_dir(config, source, model_dir, report)
    gguf_file: Path | None = None
    converter: dict[str, Any] | None = None
    if docker_quant is not None:
        gguf_file, converter = _make_gguf(
            config, source, partial, partial / "gguf", docker_quant, report, reporter, model_dir
        )
    notes = write_docker_context(partial, config.name, model_dir, gguf_file)
    for note in notes:
        report(note)
    if gguf_file is not None:
        found, quant = gguf_file, docker_quant or "f16"
        built: dict[str, Any] = {"engine": "llamacpp", "dtype": merged["dtype"], "converter": converter, "notes": notes}
        built["verify"] = lambda ref: _verify_gguf(ref, found, quant)
        return built
    return {
        "engine": "transformers",
        "dtype": merged["dtype"],
        "notes": notes,
        "verify": lambda ref: vf.verify_export(
            ref, "transformers", lambda: vf.transformers_tokens(model_dir), required_identical=True
        ),
    }


def _verify_gguf(reference: list[list[int]], gguf_file: Path, quant: str) -> Any:
    """Compare the GGUF file's answers on llama.cpp with the source's: identical for f32, reported for f16, bf16 and the
    quantized types."""
    from studio.export import verify as vf

    return vf.verify_export(
        reference, "llamacpp", lambda: vf.llamacpp_tokens(gguf_file), required_identical=quant in _lossless()
    )


def _lossless() -> frozenset[str]:
    from studio.export.gguf import LOSSLESS_QUANTS

    return LOSSLESS_QUANTS


def _make_gguf(
    config: ExportConfig,
    source: ExportSource,
    partial: Path,
    out_dir: Path,
    quant: str,
    report: Any,
    reporter: JobReporter,
    merged_dir: Path | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Convert the source (merged with its adapter first) to GGUF in ``out_dir``, quantized to ``quant``.
    Returns the file and the converter's description."""
    from studio.export import gguf

    assert config.name is not None
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_dir = merged_dir
    if hf_dir is None:
        if source.adapter_dir is None:
            hf_dir = source.model_dir  # nothing to merge: the converter reads the source folder itself
        else:
            hf_dir = partial / HF_STAGING
            from studio.export.merge import merge_to_folder

            merge_to_folder(source.model_dir, source.adapter_dir, hf_dir, report, "float32")
    folder = gguf.converter_dir()
    outtype = quant if quant in gguf.CONVERTER_TYPES else "f16"
    converted = out_dir / gguf.gguf_file_name(config.name, outtype)
    report(f"converting to GGUF {outtype} with llama.cpp's {gguf.CONVERTER_SCRIPT}")
    if not gguf.convert_to_gguf(hf_dir, converted, outtype, report, reporter.should_stop):
        raise ExportStopped("stopped while converting")
    if quant == outtype:
        return converted, gguf.converter_info(folder)
    if reporter.should_stop():
        raise ExportStopped("stopped before quantizing")
    target = out_dir / gguf.gguf_file_name(config.name, quant)
    report(f"quantizing to {quant} with llama.cpp's quantizer")
    gguf.quantize_gguf(converted, target, quant, threads=os.cpu_count())
    converted.unlink()
    return target, gguf.converter_info(folder)


def run_export_job(config: ExportConfig, runtime: JobRuntime) -> dict[str, Any]:
    """The job body: :func:`run_export` under the worker (a stop between steps leaves nothing behind)."""
    try:
        return run_export(config, runtime.settings, runtime, runtime.job.id)
    except ExportStopped as exc:
        runtime.log(f"stopped ({exc}); the unfinished export was removed")
        return {"stopped": True, "name": config.name}


def _prepare(config: ExportConfig, settings: Settings, db: Database) -> ExportConfig:
    return prepare_export(config, settings, db)


register_kind(
    JobKind(
        name=KIND,
        config_model=ExportConfig,
        run=run_export_job,
        description="Export a model (with its adapter merged) as merged safetensors, GGUF, a Triton repository or "
        "a Docker context, verified before it is published",
        prepare=_prepare,
    )
)
