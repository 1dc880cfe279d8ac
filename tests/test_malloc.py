"""The allocator tuning: applied once, recorded with results, and the opt-out is honoured."""

import os
import platform
import subprocess
import sys

import pytest

CODE = "from cnnlab import _malloc, provenance; print(_malloc.tune()); print(provenance.environment()['allocator'])"


def _run(env_extra):
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout.splitlines()
    return out


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the tuning applies to glibc only")
def test_tune_sets_both_thresholds_and_is_recorded():
    tuned, recorded = _run({"CNNLAB_MALLOC": ""})
    assert tuned == recorded
    assert tuned in (f"glibc tuned: M_MMAP_THRESHOLD={t}, M_TRIM_THRESHOLD=2147483647"
                     for t in (2**30, 32 * 2**20))


def test_opt_out_keeps_the_defaults():
    tuned, recorded = _run({"CNNLAB_MALLOC": "default"})
    assert tuned == recorded == "glibc defaults (CNNLAB_MALLOC=default)"
