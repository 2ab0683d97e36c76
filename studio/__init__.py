"""Whetstone Studio core: settings, model registry, engines, API. Never imports gradio."""

import os as _os

# Must precede the first `import torch` anywhere in the process (see studio.inference.torch_setup).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
