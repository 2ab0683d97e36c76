"""Deployments: a model, alias, adapter or export served by its own process on a port, or a cloud-hosted
OpenAI-compatible endpoint registered by URL -- each a row in the ``deployment`` table, with health checks, logs
and re-attachment after a studio restart.

- :mod:`studio.deploy.config`   the request shapes (``DeploymentCreate``, ``RemoteDeploymentCreate``) and checks
- :mod:`studio.deploy.targets`  what a TARGET names (model, alias, ``adapter:NAME``, ``export:NAME``)
- :mod:`studio.deploy.process`  ports, spawning, process identity, stopping a process group
- :mod:`studio.deploy.health`   HTTP health checks and the requests-served counter read from ``/metrics``
- :mod:`studio.deploy.records`  the row as callers see it (``DeploymentPublic``), finding rows, log paths
- :mod:`studio.deploy.checks`   what a check finds and writes: healthy, unhealthy, failed, lost; reattach
- :mod:`studio.deploy.service`  the lifecycle: start, stop, restart, delete, logs, alias (and re-exports)
- :mod:`studio.deploy.serve`    ``studio serve-model``: the studio's own OpenAI API serving just one model
- :mod:`studio.deploy.cli`      ``studio deploy ...`` and ``studio serve-model``

This package's ``__init__`` imports nothing: the migration imports :mod:`studio.deploy.tables` on its own.
"""
