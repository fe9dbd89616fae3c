"""The review server's routes, one by one, on a seeded SQLite store."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import morecantile
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from geoscreen.review import audit
from geoscreen.review.loader import load_sites
from geoscreen.review.spatial import BBox
from geoscreen.review.store import Store, open_store
from geoscreen.review.testing import PG_ENV, make_sites, pg_base_url, pg_schema
from geoscreen.review.trainlabels import TRAIN_ACTION, decisions_since
from geoscreen.review.users import add_user
from geoscreen.review.workflow import set_status
from geoscreen.web.app import create_app
from geoscreen.web.candidate_index import CandidateIndex
from geoscreen.web.guard import CSP
from geoscreen.web.model_history import ModelWatch
from geoscreen.web.testing import IMAGERY_PROFILE, PASSWORD, Seeded, log_in

Login = Callable[[str], tuple[TestClient, str]]
WORLD = "-180,-90,180,90"
OLD, NEW = "ab" * 32, "cd" * 32  # the seeded run's model, a retrained one


def _store(app: FastAPI) -> Store:
    store: Store = app.state.geoscreen.store
    return store


def _decide(
    client: TestClient, csrf: str, cid: int, status: str, version: int, reason: str | None = None
) -> dict[str, Any]:
    reply = client.post(
        f"/api/candidates/{cid}/status",
        json={"status": status, "reason": reason, "expected_version": version},
        headers={"X-CSRF-Token": csrf},
    )
    return {"code": reply.status_code, **reply.json()}


def _imagery_candidate(client: TestClient) -> dict[str, Any]:
    item = client.get("/api/queue", params={"profile": IMAGERY_PROFILE}).json()["items"][0]
    detail: dict[str, Any] = client.get(f"/api/candidates/{item['id']}").json()
    return detail


# -- reading --------------------------------------------------------------------------------
def test_summary(login: Login) -> None:
    client, _ = login("vic")
    summary = client.get("/api/summary").json()
    assert summary["total"] == 203
    assert summary["by_status"]["new"] == 203 and summary["by_status"]["confirmed"] == 0
    assert set(summary["profiles"]) == {"brick_kilns_s2", IMAGERY_PROFILE}
    west, south, east, north = summary["bounds"]
    assert west < -81 and east > 70 and 20 <= south < north <= 30


def test_viewport_points_match_a_brute_force_count(login: Login, app: FastAPI) -> None:
    client, _ = login("vic")
    frame = _store(app).frame()
    lon = np.array([c.x for c in frame.geometry.representative_point()])
    box = (72.0, 22.0, 76.0, 27.0)
    reply = client.get("/api/candidates", params={"bbox": ",".join(map(str, box)), "zoom": 7})
    view = reply.json()
    assert reply.headers["cache-control"] == "no-store"
    expected = frame[
        (frame["lon"] >= box[0]) & (frame["lon"] <= box[2])
        & (frame["lat"] >= box[1]) & (frame["lat"] <= box[3])
    ]  # fmt: skip
    assert view["kind"] == "points" and view["total"] == len(expected) > 10
    assert sorted(p[0] for p in view["points"]) == sorted(expected["id"])
    first = view["points"][0]
    row = frame.set_index("id").loc[first[0]]
    assert first[1:] == [round(row["lon"], 6), round(row["lat"], 6), row["score"], "new"]
    assert lon.size == 203


def test_viewport_clusters_when_crowded(login: Login) -> None:
    client, _ = login("vic")
    view = client.get("/api/candidates", params={"bbox": WORLD, "zoom": 3, "max_points": 50})
    found = view.json()
    assert found["kind"] == "clusters" and found["total"] == 203
    columns = found["columns"]
    counts = [row[columns.index("count")] for row in found["clusters"]]
    assert sum(counts) == 203
    news = [row[columns.index("new")] for row in found["clusters"]]
    assert news == counts  # all new
    florida = [r for r in found["clusters"] if r[0] < -80]
    assert len(florida) == 1 and florida[0][columns.index("count")] == 3
    assert found["cell_deg"] == pytest.approx(360 / 2**3 / 4)


def test_wide_views_come_from_cell_tables(app: FastAPI) -> None:
    store = _store(app)
    index = CandidateIndex(store, wide_view=0)  # every view from the per-zoom tables
    frame = store.frame()
    box = BBox(60, 10, 90, 35)
    view = index.view(box, zoom=5, max_points=10)
    assert view["kind"] == "clusters"
    cell = view["cell_deg"]
    cells = {
        (math.floor(x / cell), math.floor(y / cell))
        for x, y in zip(frame["lon"], frame["lat"], strict=True)
    }
    assert len(view["clusters"]) == len(cells) - 1  # all but the Florida cell
    assert view["total"] == 200
    first = max(view["clusters"], key=lambda row: row[2])
    mine = frame[
        (frame["lon"] // cell == first[0] // cell) & (frame["lat"] // cell == first[1] // cell)
    ]
    assert first[2] == len(mine) and first[0] == pytest.approx(mine["lon"].mean(), abs=1e-6)
    assert first[3] == pytest.approx(mine["score"].mean(), abs=1e-4)
    cid = int(mine["id"].iloc[0])
    set_status(store, cid, "rejected", user="bob", reason="a field", claim=True)
    index.sync(force=True)
    again = max(index.view(box, zoom=5, max_points=10)["clusters"], key=lambda row: row[2])
    columns = view["columns"]
    assert again[columns.index("rejected")] == 1 and again[columns.index("new")] == first[2] - 1
    assert index.view(box, zoom=5, statuses=("rejected",))["points"][0][0] == cid


def test_viewport_filters_and_bad_boxes(login: Login) -> None:
    client, csrf = login("ann")
    only = client.get("/api/candidates", params={"bbox": WORLD, "profile": IMAGERY_PROFILE}).json()
    assert only["total"] == 3
    cid = only["points"][0][0]
    _decide(client, csrf, cid, "rejected", 1, "a shadow")
    rejected = client.get("/api/candidates", params={"bbox": WORLD, "status": "rejected"}).json()
    assert [p[0] for p in rejected["points"]] == [cid] and rejected["points"][0][4] == "rejected"
    for bad in ("1,2,3", "a,b,c,d", "10,0,0,10", "nan,0,1,1", ""):
        reply = client.get("/api/candidates", params={"bbox": bad})
        assert reply.status_code == 422, bad
        assert "error" in reply.json() or "detail" in reply.json()
    assert client.get("/api/candidates", params={"bbox": WORLD, "zoom": 99}).status_code == 422
    assert client.get("/api/candidates", params={"bbox": WORLD, "status": "x"}).status_code == 422


def test_queue_orders(login: Login, app: FastAPI) -> None:
    client, _ = login("vic")
    frame = _store(app).frame()
    by_score = client.get("/api/queue", params={"limit": 500}).json()
    assert by_score["total"] == 203
    ids = [i["id"] for i in by_score["items"]]
    expected = frame.sort_values(["score", "id"], ascending=[False, True])["id"].tolist()
    assert ids == expected
    page = client.get("/api/queue", params={"limit": 10, "offset": 20}).json()
    assert [i["id"] for i in page["items"]] == expected[20:30]
    uncertain = client.get("/api/queue", params={"order": "uncertainty", "limit": 5}).json()
    gaps = [abs(i["score"] - i["threshold"]) for i in uncertain["items"]]
    assert gaps == sorted(gaps) and gaps[0] == pytest.approx((frame["score"] - 0.5).abs().min())
    newest = client.get("/api/queue", params={"order": "newest", "limit": 500}).json()["items"]
    assert [i["id"] for i in newest[:3]] == [1, 2, 3]  # one acquisition date: by id
    assert {i["profile"] for i in newest[-3:]} == {IMAGERY_PROFILE}  # no date: last
    assert client.get("/api/queue", params={"order": "random"}).status_code == 422


def test_uncertainty_uses_profile_thresholds(seeded: Seeded) -> None:
    app = create_app(seeded.db, thresholds={"brick_kilns_s2": 0.9})
    client = TestClient(app)
    log_in(client, "vic", seeded.password)
    items = client.get(
        "/api/queue", params={"order": "uncertainty", "profile": "brick_kilns_s2"}
    ).json()["items"]
    assert items[0]["threshold"] == 0.9
    gaps = [abs(i["score"] - 0.9) for i in items]
    assert gaps == sorted(gaps)
    assert client.get("/api/summary").json()["profiles"]["brick_kilns_s2"] == 0.9
    app.state.geoscreen.store.close()


def test_candidate_detail(login: Login) -> None:
    client, _ = login("vic")
    detail = client.get("/api/candidates/1").json()
    candidate = detail["candidate"]
    assert candidate["id"] == 1 and candidate["match"] == "matches profile brick_kilns_s2"
    assert candidate["geometry"]["type"] == "Polygon"
    assert detail["history"] == [] and detail["threshold"] == 0.5
    assert detail["evidence"] == "/api/candidates/1/evidence"
    assert detail["imagery"] is None  # its scene was not given to the server
    assert client.get("/api/candidates/150").json()["evidence"] is None  # no chip file
    missing = client.get("/api/candidates/99999")
    assert missing.status_code == 404 and missing.json()["error"] == "no candidate with id 99999"
    assert client.get("/api/candidates/0").status_code == 422
    assert client.get("/api/candidates/abc").status_code == 422


# -- deciding -------------------------------------------------------------------------------
def test_decision_goes_through_the_workflow_and_audit_log(login: Login, app: FastAPI) -> None:
    client, csrf = login("ann")
    done = _decide(client, csrf, 5, "confirmed", 1, "kiln rows and stacks")
    assert done["code"] == 200
    assert done["candidate"]["status"] == "confirmed" and done["candidate"]["version"] == 3
    lines = [h["text_line"][20:] for h in done["history"]]
    assert lines == ["ann: new -> in_review", "ann: in_review -> confirmed (kiln rows and stacks)"]
    entries = [e for e in audit.entries(_store(app), entity="candidate", entity_id=5)]
    assert [(e.action, e.actor) for e in entries] == [("status", "ann"), ("status", "ann")]
    assert audit.verify(_store(app)).ok
    summary = client.get("/api/summary").json()
    assert summary["by_status"]["confirmed"] == 1  # the index saw it at once
    view = client.get("/api/candidates", params={"bbox": WORLD, "status": "confirmed"}).json()
    assert [p[0] for p in view["points"]] == [5]


def test_stale_version_is_a_conflict_and_writes_nothing(login: Login, app: FastAPI) -> None:
    ann, ann_csrf = login("ann")
    bob, bob_csrf = login("bob")
    assert _decide(bob, bob_csrf, 7, "rejected", 1, "a field")["code"] == 200
    before = len(list(audit.entries(_store(app))))
    clash = _decide(ann, ann_csrf, 7, "confirmed", 1, "kiln")
    assert clash["code"] == 409
    assert "conflict" in clash["error"] and "nothing was written" in clash["error"]
    assert clash["current"]["candidate"]["status"] == "rejected"
    assert clash["current"]["candidate"]["status_changed_by"] == "bob"
    assert len(list(audit.entries(_store(app)))) == before
    assert ann.get("/api/candidates/7").json()["candidate"]["status"] == "rejected"


def test_refused_decisions(login: Login) -> None:
    client, csrf = login("ann")
    no_reason = _decide(client, csrf, 8, "confirmed", 1)
    assert no_reason["code"] == 422 and "reason" in no_reason["error"]
    assert client.get("/api/candidates/8").json()["candidate"]["version"] == 1  # rolled back
    assert _decide(client, csrf, 8, "escalated", 1, "share")["code"] == 422  # not confirmed yet
    assert _decide(client, csrf, 99999, "rejected", 1, "x")["code"] == 404
    reply = client.post(
        "/api/candidates/8/status",
        json={"status": "confirmed", "reason": "x", "expected_version": 1, "extra": 1},
        headers={"X-CSRF-Token": csrf},
    )
    assert reply.status_code == 422


def test_escalation_needs_a_second_supervisor(login: Login) -> None:
    sue, sue_csrf = login("sue")
    sam, sam_csrf = login("sam")
    ann, ann_csrf = login("ann")
    assert _decide(sue, sue_csrf, 9, "confirmed", 1, "kilns")["code"] == 200
    own = _decide(sue, sue_csrf, 9, "escalated", 3, "share it")
    assert own["code"] == 422 and "second reviewer" in own["error"]
    assert _decide(ann, ann_csrf, 9, "escalated", 3, "share it")["code"] == 403
    done = _decide(sam, sam_csrf, 9, "escalated", 3, "share with partner")
    assert done["code"] == 200 and done["candidate"]["status"] == "escalated"


def test_notes(login: Login) -> None:
    client, csrf = login("ann")
    reply = client.post("/api/candidates/3/notes", json={"text": "two kilns?"},
                        headers={"X-CSRF-Token": csrf})  # fmt: skip
    assert reply.status_code == 200
    assert reply.json()["history"][-1]["text_line"].endswith("ann: note: two kilns?")
    assert reply.json()["candidate"]["version"] == 1
    empty = client.post("/api/candidates/3/notes", json={"text": ""},
                        headers={"X-CSRF-Token": csrf})  # fmt: skip
    assert empty.status_code == 422


def test_score_history_newest_first_with_model_and_below_threshold_flag(
    login: Login, app: FastAPI, seeded: Seeded
) -> None:
    store = _store(app)
    first = gpd.read_parquet(seeded.folder / "sites.parquet")
    scene = first[first["scene_id"] == "S2_0"]
    dropped, kept = scene.iloc[0], scene.iloc[1]
    second = scene.iloc[1:].copy()  # a retrained model re-screens S2_0 and misses one site
    second["run_id"], second["model_sha256"], second["profile_version"] = "run-2", NEW, "0.2.0"
    second["score_max"] = 0.61
    load_sites(store, second, actor="test", rescreened=["S2_0"], model_sha256=NEW)
    by_site = {c.site_id: c for c in store.candidates()}
    client, _ = login("ann")

    detail = client.get(f"/api/candidates/{by_site[kept['site_id']].id}").json()
    scores = detail["scores"]
    assert [(s["run_id"], s["model_sha256"], s["profile_version"]) for s in scores] == [
        ("run-2", NEW, "0.2.0"),
        ("run-1", OLD, "0.1.0"),
    ]
    assert [s["model_short"] for s in scores] == [NEW[:12], OLD[:12]]
    assert scores[0]["score"] == 0.61 and scores[1]["score"] == float(kept["score_max"])
    assert f"with model {NEW[:12]} (profile v0.2.0)" in scores[0]["text_line"]
    assert detail["candidate"]["below_threshold"] is None

    flagged = client.get(f"/api/candidates/{by_site[dropped['site_id']].id}").json()
    assert flagged["candidate"]["below_threshold"] == f"below threshold with model {NEW[:12]}"
    assert [s["run_id"] for s in flagged["scores"]] == ["run-1"]  # kept, never deleted


def test_decisions_since_the_current_model_for_supervisors_only(
    login: Login, app: FastAPI, seeded: Seeded
) -> None:
    store = _store(app)
    analyst, csrf = login("ann")
    assert analyst.get("/api/candidates/5").json()["since_model"] is None
    supervisor, _ = login("sue")
    since = supervisor.get("/api/candidates/5").json()["since_model"]
    assert since["profile"] == "brick_kilns_s2" and since["decisions"] == 0
    assert since["model_sha256"] is None and since["model_audit_seq"] is None
    assert since["command"] == (
        f"geoscreen train PROFILE.yaml --from-store {seeded.db} --out NEW_MODEL_DIR"
    )

    decided = _decide(analyst, csrf, 5, "confirmed", 1, "a kiln")
    assert decided["code"] == 200 and decided["since_model"] is None
    _decide(analyst, csrf, 6, "rejected", 1, "a road")
    _decide(analyst, csrf, 7, "needs_imagery", 1)
    # as in `geoscreen review list`: decisions that make a label (confirmed, rejected);
    # claims (new -> in_review) and needs_imagery teach the model nothing
    assert supervisor.get("/api/candidates/5").json()["since_model"]["decisions"] == 2
    other = supervisor.get(f"/api/candidates/{_imagery_candidate(supervisor)['candidate']['id']}")
    assert other.json()["since_model"]["decisions"] == 0  # counted per profile

    trained = audit.log(store, actor="sue", action=TRAIN_ACTION, entity="model", entity_id=NEW,
                        profile="brick_kilns_s2", model_sha256=NEW)  # fmt: skip
    _decide(analyst, csrf, 8, "rejected", 1, "a quarry")
    since = supervisor.get("/api/candidates/5").json()["since_model"]
    assert since["decisions"] == 1 and since["model_audit_seq"] == trained.seq
    assert since["model_sha256"] == NEW and since["model_short"] == NEW[:12]
    assert since["decisions"] == decisions_since(store, "brick_kilns_s2", trained.seq)


def test_model_watch_starts_over_when_the_store_goes_back(
    app: FastAPI, seeded_template: Seeded
) -> None:
    store, watch = _store(app), ModelWatch()
    assert watch.since_model(store, "brick_kilns_s2")["decisions"] == 0
    set_status(store, 9, "rejected", user="bob", reason="a quarry", claim=True)
    assert watch.since_model(store, "brick_kilns_s2")["decisions"] == 1
    restored = open_store(seeded_template.db)  # the store as it was before (a lower head)
    try:
        assert watch.since_model(restored, "brick_kilns_s2")["decisions"] == 0
    finally:
        restored.close()


def test_index_catches_up_with_changes_made_elsewhere(app: FastAPI, seeded: Seeded) -> None:
    store = _store(app)
    index: CandidateIndex = app.state.geoscreen.index
    set_status(store, 11, "rejected", user="bob", reason="a quarry", claim=True)
    index.sync(force=True)
    assert index.summary()["by_status"]["rejected"] == 1
    more = make_sites(seeded.folder / "more.parquet", 5, run_id="run-2", first_site=5000)
    load_sites(store, more, actor="test")
    index.sync(force=True)
    assert index.summary()["total"] == 208


# -- evidence and imagery -------------------------------------------------------------------
def test_evidence_chip_is_served_and_audited(login: Login, app: FastAPI) -> None:
    client, _ = login("vic")
    reply = client.get("/api/candidates/2/evidence")
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(reply.content)).size == (48, 48)
    assert reply.headers["cache-control"] == "no-store"
    client.get("/api/candidates/2/evidence")
    views = [e for e in audit.entries(_store(app), entity_id=2) if e.action == "view"]
    seen = [(v.actor, v.to_dict()["after"]) for v in views]
    assert seen == [("vic", {"what": "evidence chip"})] * 2
    assert client.get("/api/candidates/150/evidence").status_code == 404


def test_imagery_tiles_near_the_site(login: Login, app: FastAPI) -> None:
    client, _ = login("vic")
    detail = _imagery_candidate(client)
    imagery, candidate = detail["imagery"], detail["candidate"]
    assert imagery["maxzoom"] >= 20 and imagery["minzoom"] < imagery["maxzoom"]
    tms = morecantile.tms.get("WebMercatorQuad")
    tile = tms.tile(candidate["lon"], candidate["lat"], imagery["maxzoom"] - 1)
    url = f"/api/candidates/{candidate['id']}/tiles/{tile.z}/{tile.x}/{tile.y}.png"
    reply = client.get(url)
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(reply.content)).convert("RGBA"))
    assert image.shape == (256, 256, 4)
    assert image[..., 3].max() == 255 and image[..., :3].std() > 5  # real imagery, not blank
    client.get(url)
    views = [e for e in audit.entries(_store(app), entity_id=candidate["id"]) if e.action == "view"]
    assert [v.to_dict()["after"] for v in views] == [{"what": "imagery"}]  # once per session
    far = f"/api/candidates/{candidate['id']}/tiles/{tile.z}/{tile.x + 40}/{tile.y}.png"
    empty = client.get(far)  # nothing there: no content, cheaply, and the browser may keep it
    assert empty.status_code == 204 and empty.content == b"" and "max-age" in empty.headers[
        "cache-control"]  # fmt: skip
    west, south, east, north = imagery["window"]  # cut to the scene: no empty tiles asked for
    assert west <= candidate["lon"] <= east and south <= candidate["lat"] <= north
    assert detail["scene_name"] == "OSBS_029.tif"  # the file name, not the content id
    low = tms.tile(candidate["lon"], candidate["lat"], imagery["minzoom"] - 1)
    assert client.get(f"/api/candidates/{candidate['id']}/tiles/{low.z}/{low.x}/{low.y}.png"
                      ).status_code == 404  # fmt: skip
    assert client.get("/api/candidates/1/tiles/10/1/1.png").status_code == 404  # no scene


def test_scenes_in_view_and_their_tiles(login: Login, app: FastAPI) -> None:
    client, _ = login("vic")
    everywhere = client.get("/api/scenes", params={"bbox": "-180,-90,180,90"}).json()["scenes"]
    assert [s["name"] for s in everywhere] == ["OSBS_029.tif"]  # synthetic scenes have no file
    scene = everywhere[0]
    west, south, east, north = scene["bounds"]
    assert -82.0 < west < east < -81.9 and 29.6 < south < north < 29.7
    elsewhere = client.get("/api/scenes", params={"bbox": "10,10,11,11"}).json()
    assert elsewhere == {"scenes": []}
    tms = morecantile.tms.get("WebMercatorQuad")
    tile = tms.tile((west + east) / 2, (south + north) / 2, scene["maxzoom"] - 1)
    url = scene["tiles"].format(z=tile.z, x=tile.x, y=tile.y)
    reply = client.get(url)
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/png"
    client.get(url)
    views = [e for e in audit.entries(_store(app), entity="scene") if e.action == "view"]
    assert [v.to_dict()["after"] for v in views] == [
        {"what": "scene imagery", "scene": "OSBS_029.tif"}
    ]  # once per session
    outside = scene["tiles"].format(z=tile.z, x=tile.x + 40, y=tile.y)
    assert client.get(outside).status_code == 204
    assert client.get(scene["tiles"].format(z=3, x=1, y=1)).status_code == 404  # zoom not served
    assert client.get("/api/scenes/999/tiles/20/1/1.png").status_code == 404
    assert client.get("/api/scenes", params={"bbox": "1,2,3"}).status_code == 422


# -- pages ----------------------------------------------------------------------------------
def test_review_page_is_local_and_locked_down(login: Login) -> None:
    client, csrf = login("ann")
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == CSP
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    html = page.text
    assert csrf in html
    assert "trafficking" not in html.lower()
    for url in ("/static/vendor/leaflet/leaflet.js", "/static/app/review.js",
                "/static/vendor/leaflet/leaflet.css", "/static/app/review.css"):  # fmt: skip
        assert f'"{url}"' in html
        assert client.get(url).status_code == 200
    assert "http:" not in html and "https:" not in html and '="//' not in html
    schema = client.get("/api/openapi.json").json()
    assert "/api/candidates/{candidate_id}/status" in schema["paths"]
    assert client.get("/docs").status_code == 404  # no interactive docs (they use a CDN)
    assert client.get("/openapi.json").status_code == 404


# -- PostgreSQL + PostGIS -------------------------------------------------------------------
@pytest.mark.skipif(pg_base_url() is None, reason=f"needs {PG_ENV} (.ci/run starts PostGIS)")
def test_review_server_on_postgis(tmp_path: Path) -> None:
    base = pg_base_url()
    assert base is not None
    with pg_schema(base) as url:
        store = open_store(url, create=True)
        try:
            add_user(store, "ann", "analyst", password=PASSWORD, actor="test")
            load_sites(store, make_sites(tmp_path / "sites.parquet", 40), actor="test")
            app = create_app(store)
            client = TestClient(app)
            csrf = log_in(client, "ann", PASSWORD)
            assert client.get("/api/summary").json()["total"] == 40
            view = client.get("/api/candidates", params={"bbox": WORLD}).json()
            assert view["kind"] == "points" and view["total"] == 40
            newest = client.get("/api/queue", params={"order": "newest"}).json()["items"]
            assert len(newest) == 40
            done = _decide(client, csrf, newest[0]["id"], "rejected", 1, "a quarry")
            assert done["code"] == 200 and done["candidate"]["status"] == "rejected"
            clash = _decide(client, csrf, newest[0]["id"], "confirmed", 1, "kiln")
            assert clash["code"] == 409
            set_status(store, newest[1]["id"], "needs_imagery", user="ann", claim=True)
            app.state.geoscreen.index.sync(force=True)
            by_status = client.get("/api/summary").json()["by_status"]
            assert by_status["rejected"] == 1 and by_status["needs_imagery"] == 1
            assert audit.verify(store).ok
        finally:
            store.close()
