"""Shared fixtures: the location of ../shared (weights, LFW), skipping cleanly when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FACECLUSTER_SHARED", ROOT.parent / "shared"))

# Two cores: keep tests from oversubscribing them.
torch.set_num_threads(min(2, torch.get_num_threads()))


def shared_file(*parts: str) -> Path:
    """Path of a file under ../shared (or $FACECLUSTER_SHARED); skips the test when it is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared material not available: {path}")
    return path


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's catalog or cache: point both at a temp dir for every test."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("FACECLUSTER_HOME", str(home / "data"))
    monkeypatch.setenv("FACECLUSTER_CACHE", str(home / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))  # no settings file unless a test writes one
    # A developer's own settings must not leak in (FACECLUSTER_WEIGHTS_DIR would find real weights).
    for name in ("FACECLUSTER_DB", "FACECLUSTER_WEIGHTS", "FACECLUSTER_WEIGHTS_DIR", "FACECLUSTER_DEVICE",
                 "FACECLUSTER_DEBUG", "FACECLUSTER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FACECLUSTER_OFFLINE", "1")  # tests never touch the network


@pytest.fixture()
def enforced_permissions(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Skip the test where file permissions do not bind (root, CAP_DAC_OVERRIDE): chmod cannot stop it.

    Run such tests as a user, or as root with `setpriv --bounding-set -dac_override,-dac_read_search -- pytest`.
    """
    probe = tmp_path_factory.mktemp("permissions") / "read-only"
    probe.write_text("")
    probe.chmod(0o444)
    try:
        with open(probe, "a"):
            pass
    except PermissionError:
        return
    pytest.skip("file permissions are not enforced for this user (root): chmod cannot make a file read-only")
