"""The repository's root, for tests that read its files (the CRDs, the chart, docs, the fake images)."""

from __future__ import annotations

import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
