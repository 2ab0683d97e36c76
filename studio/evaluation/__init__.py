"""Evaluation: a metric registry with plugins, eval runs as jobs, and experiment tracking and comparison.

- :mod:`studio.evaluation.config` — :class:`EvalConfig`, the one schema of an eval run (YAML, UI, CLI, job row)
- :mod:`studio.evaluation.metrics` — built-in metrics and the :class:`MetricRegistry`
- :mod:`studio.evaluation.plugins` — Python / YAML / entry-point metric plugins (``load_registry``)
- :mod:`studio.evaluation.job` — the ``eval`` job kind; :mod:`studio.evaluation.tables` its ``eval_sample`` rows
- :mod:`studio.evaluation.results` — results tables, worst-first drill-down, bar charts, submitting runs
- :mod:`studio.evaluation.experiments` — training and eval runs compared; tags, favourites, archive
"""
