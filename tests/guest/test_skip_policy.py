"""The guest tests may skip only when no accelerator boots the guest in time, and then the
session fails unless VPSNAP_ALLOW_GUEST_SKIP=1 accepts it: a CI run that has not seen the real
guest is not a pass. Checked on a pytest run of its own with a boot limit nobody can meet."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.guest.conftest import ALLOW_SKIP_ENV, BOOT_LIMIT_ENV, REPO, SKIP_PREFIX

pytestmark = [pytest.mark.guest, pytest.mark.qemu, pytest.mark.slow]

ONE_TEST = "tests/guest/test_real_guest.py::test_stop_is_immediate_and_not_a_shutdown"


def run_inner(*, allow_skip: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != ALLOW_SKIP_ENV}
    if allow_skip:
        env[ALLOW_SKIP_ENV] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", ONE_TEST, "-q", "-rs", "-p", "no:cacheprovider"],
        cwd=REPO,
        env={**env, BOOT_LIMIT_ENV: "0.5"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_a_guest_that_cannot_boot_skips_with_its_reason_and_fails_the_session() -> None:
    strict = run_inner(allow_skip=False)
    assert strict.returncode == 1, strict.stdout + strict.stderr
    assert SKIP_PREFIX in strict.stdout  # the reason is printed
    assert "did not answer within 0.5s" in strict.stdout
    assert "1 skipped" in strict.stdout
    assert "guest test(s) skipped because the real guest could not boot" in strict.stdout

    allowed = run_inner(allow_skip=True)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "1 skipped" in allowed.stdout
