"""Scene ids remembered between scans: reused for unchanged files only."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from geoscreen.batch.idcache import SceneIdCache
from geoscreen.imagery.scene import open_scene
from geoscreen.samples import make_synthetic_scene


def test_ids_are_reused_only_while_the_file_is_unchanged(tmp_path: Path) -> None:
    scene = make_synthetic_scene(tmp_path / "a.tif", 256, 256, seed=1)
    true_id = open_scene(scene).id
    with SceneIdCache(tmp_path / "work" / "ids.sqlite") as ids:
        assert ids.get(str(scene)) is None
        ids.put(str(scene), true_id)
        assert ids.get(str(scene)) == true_id
        # A file rewritten in place (other pixels, new modification time) is read again.
        make_synthetic_scene(tmp_path / "b.tif", 256, 256, seed=2)
        shutil.copyfile(tmp_path / "b.tif", scene)
        stat = scene.stat()
        os.utime(scene, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        assert ids.get(str(scene)) is None
        assert open_scene(scene).id != true_id
        # Never for GDAL virtual paths or missing files.
        ids.put("/vsicurl/https://example.org/x.tif", "x")
        assert ids.get("/vsicurl/https://example.org/x.tif") is None
        assert ids.get(str(tmp_path / "missing.tif")) is None
    with SceneIdCache(tmp_path / "work" / "ids.sqlite") as again:  # kept on disk
        again.put(str(scene), "rewritten")
        assert again.get(str(scene)) == "rewritten"


def test_open_scene_takes_a_known_id_without_reading_samples(tmp_path: Path) -> None:
    scene = make_synthetic_scene(tmp_path / "a.tif", 128, 128, seed=3)
    read = open_scene(scene)
    given = open_scene(scene, scene_id=read.id)
    assert given == read
    assert open_scene(scene, scene_id="cached-id").id == "cached-id"
