"""Dependency builds of deploys, and bundles going out: /api/functions/{name}/builds, /code."""
