"""Stop and Cancel: a secondary button, offered only while there is something to stop. A red Stop that was always
enabled looked as important as Send, and invited clicks that did nothing. A running action turns its Stop on
with :func:`offer` when it starts and off with :func:`withdraw` when it ends (finished, stopped or failed)."""

from __future__ import annotations

from typing import Any

import gradio as gr


def offer() -> Any:
    """The update that enables a Stop/Cancel button."""
    return gr.Button(interactive=True)


def withdraw() -> Any:
    """The update that disables a Stop/Cancel button."""
    return gr.Button(interactive=False)
