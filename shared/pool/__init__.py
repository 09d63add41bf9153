"""Deployment pools: one logical deployment served by several model deployments, never paying twice.

- :mod:`~shared.pool.config`: ``IMAGES_BACKENDS`` parsed and checked (imported by the settings);
- :mod:`~shared.pool.throttle`: what every instance knows about each backend's quota, shared through storage;
- :mod:`~shared.pool.router`: which backend serves a call, and when a failed call may go to another;
- :mod:`~shared.pool.clients`: one upstream client per backend, opened by the runtime.

This package's ``__init__`` imports nothing: the settings import :mod:`~shared.pool.config`, and
the router imports the upstream client, which imports the settings.
"""
