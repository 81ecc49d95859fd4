"""A fast sample of the fuzz harness (issue 26; the full run is benchmarks/fuzz.py): mutated real
files of every kind upres reads, through the CLI, the Python API and the HTTP API. Every case
must end in a one-line error naming the file (or succeed), with no traceback, no hang, no
partial output and no temporary left; the server answers 200/413/415/422 only."""

from __future__ import annotations

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from fuzz import KINDS, MUTATIONS, run_all


def test_fuzz_sample_every_kind_and_mutation():
    n = len(KINDS) * len(MUTATIONS)  # every kind meets every mutation once
    r = run_all(n, seed=11, timeout=90)
    assert r["cases"] == n and all(v == len(MUTATIONS) for v in r["by_kind"].values())
    assert r["hangs"] == 0 and r["tracebacks"] == 0, r["fail_list"]
    assert r["failures"] == 0 and r["http_failures"] == 0, r["fail_list"]
    assert r["http_cases"] > 0 and 200 in r["http_statuses"]
