"""Getting a model out of the studio: exports (merged, GGUF, ONNX, Triton repository, Docker context) and Hub push.

Each export runs as a job (kind ``export``, :mod:`studio.export.job`) into ``STUDIO_HOME/exports/<name>/``, built
in a hidden partial folder and renamed into place only once it is verified (:mod:`studio.export.verify`: greedy
answers of the export in its own engine against the source's) and its ``manifest.json`` is written
(:mod:`studio.export.manifest`: source, lineage, package versions, sha256 of every file). Merged, GGUF and ONNX
exports are registered as models (:mod:`studio.export.exporter`).

Formats and the packages doing the work:

- ``merged``: PEFT ``merge_and_unload`` + transformers ``save_pretrained`` (safetensors) -- :mod:`.merge`;
- ``gguf``: llama.cpp's ``convert_hf_to_gguf.py`` (from llama-cpp-python's sdist, same llama.cpp commit as the
  engine) and llama.cpp's quantizer through llama-cpp-python -- :mod:`.gguf`;
- ``onnx``: Optimum's ONNX exporter (optimum-onnx, run from its own venv ``.venv-onnx``: it needs transformers 4),
  served by ONNX Runtime (:mod:`studio.inference.onnx_backend`) -- :mod:`.onnx`;
- ``triton``: a model repository for Triton's vLLM backend around the merged weights -- :mod:`.triton`;
- ``docker``: a build context with CPU (llama.cpp or transformers) and GPU (vLLM) Dockerfiles -- :mod:`.docker`.

Hub push (``huggingface_hub``, a generated model card) lives in :mod:`.push` and :mod:`.model_card`.
"""
