"""Supervised fine-tuning with TRL + PEFT: config schema, method mapping, the trainer and its callbacks.

``config`` (no torch) validates job configs; ``train`` runs them; ``launch`` runs them under
``accelerate launch`` on several GPUs. Import the submodules you need: this package imports nothing heavy.
"""
