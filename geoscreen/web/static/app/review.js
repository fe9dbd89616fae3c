// The review page: candidates by viewport on the map, a queue, and a side panel to decide.
// Keys: j/k next/previous, c confirm, r reject, n needs imagery, e escalate, ? the list of
// keys; in the reason box Enter sends the pending decision and Escape leaves it. A key whose
// button is disabled does nothing. Under the candidates, the imagery of every scene in view
// (tiles from this server, only inside each scene and at the zooms it is served). Times
// are shown in the browser's local time. Talks only to this server.
"use strict";

(() => {
  const config = JSON.parse(document.getElementById("config").textContent);
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const NEEDS_REASON = new Set(["confirmed", "rejected", "escalated"]);
  const LABELS = {
    new: "new", in_review: "in review", confirmed: "confirmed", rejected: "rejected",
    needs_imagery: "needs imagery", escalated: "escalated",
  };
  const PAGE = 200;
  // Below this zoom no scene is asked for (the server serves tiles from a few levels
  // below each scene's native resolution: 30 m imagery from zoom 8).
  const SCENE_ZOOM = 8;
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const $ = (id) => document.getElementById(id);
  const state = {
    queue: [], total: 0, pos: -1, order: "score", statuses: [], current: null,
    pending: null, viewRequest: null, rendered: false, imageryMap: null, imageryLayers: [],
    sceneRequest: null, sceneLayers: new Map(),
  };

  // -- talking to the server ------------------------------------------------------------
  async function api(path, options = {}) {
    const init = { credentials: "same-origin", headers: { Accept: "application/json" } };
    if (options.signal) init.signal = options.signal;
    if (options.method && options.method !== "GET") {
      init.method = options.method;
      init.headers["X-CSRF-Token"] = csrf;
      if (options.body !== undefined) {
        init.headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(options.body);
      }
    }
    const reply = await fetch(path, init);
    if (reply.status === 401) {
      window.location.assign("/login");
      throw new Error("logged out");
    }
    const data = await reply.json().catch(() => ({}));
    return { ok: reply.ok, status: reply.status, data };
  }

  function say(text, kind = "") {
    const box = $("message");
    box.textContent = text;
    box.className = "message " + kind;
  }

  // "2 Dec 2026 13:05" in local time; the stored value (UTC) stays in the tooltip
  function when(text) {
    if (!text) return null;
    let iso = String(text).replace(/(\.\d{3})\d+/, "$1");
    if (!/(Z|[+-]\d\d:?\d\d)$/i.test(iso) && iso.includes("T")) iso += "Z";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(text);
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getDate()} ${MONTHS[d.getMonth()]} ${d.getFullYear()} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
  }

  function errorText(data) {
    return data.error ? data.error + (data.fix ? " " + data.fix : "") : "The request failed.";
  }

  // -- the map --------------------------------------------------------------------------
  const map = L.map("map", { preferCanvas: true, minZoom: 1, maxZoom: 22, worldCopyJump: true });
  const renderer = L.canvas({ padding: 0.3 });
  const scenes = L.layerGroup().addTo(map);
  const marks = L.layerGroup().addTo(map);
  const selection = L.layerGroup().addTo(map);
  L.control.scale().addTo(map);

  function colour(status) {
    return config.colours[status] || "#000000";
  }

  function clamp(v, lo, hi) {
    return Math.min(hi, Math.max(lo, v));
  }

  async function loadView() {
    if (state.viewRequest) state.viewRequest.abort();
    const request = new AbortController();
    state.viewRequest = request;
    const b = map.getBounds();
    const bbox = [
      clamp(b.getWest(), -180, 180), clamp(b.getSouth(), -90, 90),
      clamp(b.getEast(), -180, 180), clamp(b.getNorth(), -90, 90),
    ].map((v) => v.toFixed(6)).join(",");
    const params = new URLSearchParams({ bbox, zoom: String(map.getZoom()) });
    state.statuses.forEach((s) => params.append("status", s));
    let reply;
    try {
      reply = await api("/api/candidates?" + params, { signal: request.signal });
    } catch (err) {
      return;
    }
    if (!reply.ok || state.viewRequest !== request) return;
    draw(reply.data);
  }

  function draw(view) {
    marks.clearLayers();
    const current = state.current ? state.current.candidate.id : null;
    if (view.kind === "points") {
      for (const [id, lon, lat, score, status] of view.points) {
        const mark = L.circleMarker([lat, lon], {
          renderer, radius: id === current ? 9 : 6, color: colour(status), weight: 2,
          fillOpacity: 0.55,
        });
        mark.bindTooltip(`#${id} · score ${score === null ? "?" : score} · ${LABELS[status]}`);
        mark.on("click", () => openCandidate(id, { pan: false }));
        marks.addLayer(mark);
      }
    } else {
      const first = view.columns.indexOf(config.statuses[0]);
      for (const row of view.clusters) {
        const [lon, lat, count] = row;
        const counts = row.slice(first);
        const top = config.statuses[counts.indexOf(Math.max(...counts))];
        const size = Math.round(24 + 8 * Math.log10(count));
        const icon = L.divIcon({
          className: "cluster",
          html: `<span style="background:${colour(top)}">${count}</span>`,
          iconSize: [size, size],
        });
        const mark = L.marker([lat, lon], { icon, keyboard: false, title: `${count} candidates` });
        mark.on("click", () => map.setView([lat, lon], Math.min(map.getZoom() + 2, 22)));
        marks.addLayer(mark);
      }
    }
    $("counts").textContent = `${view.total} in view` + (view.kind === "clusters" ? " (grouped)" : "");
    document.body.dataset.viewKind = view.kind;
    document.body.dataset.viewTotal = String(view.total);
    if (!state.rendered) {
      state.rendered = true;
      performance.mark("geoscreen-first-render");
      document.body.dataset.map = "rendered";
    }
  }

  // -- imagery of the scenes in view ---------------------------------------------------
  async function loadScenes() {
    if (state.sceneRequest) state.sceneRequest.abort();
    const request = new AbortController();
    state.sceneRequest = request;
    if (map.getZoom() < SCENE_ZOOM) {
      scenes.clearLayers();
      state.sceneLayers.clear();
      document.body.dataset.scenes = "0";
      return;
    }
    const b = map.getBounds();
    const bbox = [
      clamp(b.getWest(), -180, 180), clamp(b.getSouth(), -90, 90),
      clamp(b.getEast(), -180, 180), clamp(b.getNorth(), -90, 90),
    ].map((v) => v.toFixed(6)).join(",");
    let reply;
    try {
      reply = await api("/api/scenes?" + new URLSearchParams({ bbox }), { signal: request.signal });
    } catch (err) {
      return;
    }
    if (!reply.ok || state.sceneRequest !== request) return;
    const wanted = new Set(reply.data.scenes.map((scene) => scene.id));
    for (const [id, layer] of state.sceneLayers) {
      if (!wanted.has(id)) {
        scenes.removeLayer(layer);
        state.sceneLayers.delete(id);
      }
    }
    for (const scene of reply.data.scenes) {
      if (state.sceneLayers.has(scene.id)) continue;
      const [w, s, e, n] = scene.bounds;
      // only tiles inside the scene, only at zooms the server has: no requests for nothing
      const layer = L.tileLayer(scene.tiles, {
        minZoom: scene.minzoom, maxNativeZoom: scene.maxzoom, maxZoom: 22, noWrap: true,
        bounds: L.latLngBounds([s, w], [n, e]), className: "scene-imagery",
        attribution: escapeHtml(scene.name),
      });
      scenes.addLayer(layer);
      layer.getContainer().dataset.scene = scene.name;
      state.sceneLayers.set(scene.id, layer);
    }
    document.body.dataset.scenes = String(state.sceneLayers.size);
  }

  let viewTimer = null;
  map.on("moveend", () => {
    clearTimeout(viewTimer);
    viewTimer = setTimeout(() => {
      loadView();
      loadScenes();
    }, 120);
  });

  // -- the queue ------------------------------------------------------------------------
  async function loadQueue(offset = 0) {
    const params = new URLSearchParams({ order: state.order, limit: String(PAGE), offset: String(offset) });
    state.statuses.forEach((s) => params.append("status", s));
    const reply = await api("/api/queue?" + params);
    if (!reply.ok) {
      say(errorText(reply.data), "error");
      return;
    }
    state.queue = offset === 0 ? reply.data.items : state.queue.concat(reply.data.items);
    state.total = reply.data.total;
    showQueueLine();
  }

  function showQueueLine() {
    const where = state.pos >= 0 ? `${state.pos + 1} of ${state.total}` : `${state.total} candidates`;
    $("queue-line").textContent = `Queue (${$("order").selectedOptions[0].textContent}): ${where}`;
  }

  async function step(delta) {
    let pos = state.pos + delta;
    if (pos < 0) pos = 0;
    if (pos >= state.queue.length && state.queue.length < state.total) await loadQueue(state.queue.length);
    if (pos >= state.queue.length) {
      say("End of the queue.");
      return;
    }
    state.pos = pos;
    await openCandidate(state.queue[pos].id, { pan: true });
  }

  // -- one candidate --------------------------------------------------------------------
  async function openCandidate(id, { pan }) {
    const reply = await api(`/api/candidates/${id}`);
    if (!reply.ok) {
      say(errorText(reply.data), "error");
      return;
    }
    const inQueue = state.queue.findIndex((item) => item.id === id);
    if (inQueue >= 0) state.pos = inQueue;
    $("conflict").hidden = true;
    say("");
    show(reply.data, { pan, fresh: true });
    history.replaceState(null, "", `#candidate=${id}`);
  }

  function fact(list, name, value, detail = null) {
    if (value === null || value === undefined || value === "") return;
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = String(value);
    if (detail) dd.title = String(detail);
    list.append(dt, dd);
  }

  function show(data, { pan, fresh }) {
    state.current = data;
    const c = data.candidate;
    $("empty").hidden = true;
    $("detail").hidden = false;
    $("title").textContent = `#${c.id} ${c.match}` + (c.profile_version ? ` v${c.profile_version}` : "");
    const facts = $("facts");
    facts.replaceChildren();
    fact(facts, "status", LABELS[c.status]);
    fact(facts, "score", c.score === null ? "?" : `${c.score.toFixed(3)} (threshold ${data.threshold})`);
    fact(facts, "version", c.version);
    fact(facts, "site", c.site_id);
    fact(facts, "scene", data.scene_name, c.scene_id);
    fact(facts, "acquired", when(c.acquired), c.acquired);
    fact(facts, "first seen", when(c.first_seen), c.first_seen);
    fact(facts, "last seen", when(c.last_seen), c.last_seen);
    fact(facts, "area m²", c.area_m2 === null ? null : Math.round(c.area_m2));
    fact(facts, "model", c.model_sha256 ? c.model_sha256.slice(0, 12) : null, c.model_sha256);
    fact(facts, "flag", c.below_threshold, "kept; decisions unchanged");
    // what the scan that found it warned: a scene unlike the training data, a model
    // no better than its baselines; each line says which
    for (const line of data.scene_warnings || []) fact(facts, "warning", line, line);
    fact(facts, "changed by", c.status_changed_by);
    fact(facts, "changed", when(c.status_changed_at), c.status_changed_at);
    $("detail").dataset.status = c.status;
    $("detail").dataset.version = String(c.version);
    const list = $("history");
    list.replaceChildren();
    for (const event of data.history) {
      const item = document.createElement("li");
      const what = event.kind === "status"
        ? `${event.from_status} -> ${event.to_status}` + (event.text ? ` (${event.text})` : "")
        : `note: ${event.text}`;
      item.textContent = `${when(event.at)} ${event.user_name}: ${what}`;
      item.title = `${event.at} (UTC)`;
      list.append(item);
    }
    showScores(data);
    showRetrain(data.since_model);
    $("decide").hidden = !config.canReview;
    $("read-only").hidden = config.canReview;
    allowEscalation();
    if (fresh) {
      showChip(data);
      showImagery(data);
    }
    selection.clearLayers();  // the imagery under it is the scene's layer
    const outline = L.geoJSON(c.geometry, { style: { color: "#ffd400", weight: 3, fill: false } });
    selection.addLayer(outline);
    if (pan) {
      // close enough to see the site; with imagery, close enough for its tiles to show
      let zoom = Math.max(map.getZoom(), 15);
      if (data.imagery) zoom = Math.min(Math.max(zoom, data.imagery.minzoom), data.imagery.maxzoom);
      map.setView([c.lat, c.lon], zoom);
    }
    const item = state.queue[state.pos];
    if (item && item.id === c.id) item.status = c.status;
    showQueueLine();
  }

  // each run's score with the model (short hash) and profile version that gave it
  function showScores(data) {
    const list = $("scores");
    list.replaceChildren();
    for (const entry of data.scores) {
      const item = document.createElement("li");
      const score = entry.score === null ? "?" : entry.score.toFixed(3);
      const version = entry.profile_version ? ` (profile v${entry.profile_version})` : "";
      item.textContent = `${score} with model ${entry.model_short || "?"}${version}, ${when(entry.loaded_at)}`;
      item.title = `run ${entry.run_id}; model ${entry.model_sha256 || "unknown"}; ${entry.loaded_at} (UTC)`;
      list.append(item);
    }
    if (!data.scores.length) {
      const item = document.createElement("li");
      item.textContent = "none recorded";
      list.append(item);
    }
  }

  // supervisors only: decisions the current model has not learned from, and how to retrain
  function showRetrain(since) {
    $("retrain").hidden = !since;
    if (!since) return;
    const model = since.model_short
      ? `trained from this store: ${since.model_short}`
      : "none trained from this store yet";
    $("retrain-line").textContent =
      `${since.decisions} decisions since the current model for ${since.profile} (${model})`;
    $("retrain-command").textContent = since.command;
  }

  function showChip(data) {
    const chip = $("chip");
    chip.hidden = !data.evidence;
    $("no-chip").hidden = Boolean(data.evidence);
    if (data.evidence) chip.src = data.evidence;
    else chip.removeAttribute("src");
  }

  function imageryLayer(imagery) {
    const [w, s, e, n] = imagery.window;
    return L.tileLayer(imagery.tiles, {
      minZoom: imagery.minzoom, maxZoom: imagery.maxzoom + 2, maxNativeZoom: imagery.maxzoom,
      bounds: L.latLngBounds([s, w], [n, e]), noWrap: true,
    });
  }

  function showImagery(data) {
    const box = $("imagery");
    const imagery = data.imagery;
    box.hidden = !imagery;
    $("no-imagery").hidden = Boolean(imagery);
    if (!imagery) return;
    if (!state.imageryMap) {
      state.imageryMap = L.map(box, { attributionControl: false, zoomSnap: 1 });
    }
    const small = state.imageryMap;
    small.invalidateSize();
    state.imageryLayers.forEach((layer) => small.removeLayer(layer));
    const [w, s, e, n] = imagery.window;
    const bounds = L.latLngBounds([s, w], [n, e]);
    const tiles = imageryLayer(imagery);
    const outline = L.geoJSON(data.candidate.geometry, {
      style: { color: "#ffd400", weight: 2, fill: false },
    });
    state.imageryLayers = [tiles.addTo(small), outline.addTo(small)];
    small.setMinZoom(imagery.minzoom);
    small.setMaxZoom(imagery.maxzoom + 2);
    small.setMaxBounds(bounds.pad(0.2));
    small.fitBounds(outline.getBounds().pad(1.5), { maxZoom: imagery.maxzoom });
  }

  // -- decisions ------------------------------------------------------------------------
  function allowEscalation() {
    const button = document.querySelector('button[data-status="escalated"]');
    button.disabled = !config.canEscalate;
    if (!config.canEscalate) button.title = "Only supervisors can escalate";
  }

  async function decide(status) {
    const button = document.querySelector(`button[data-status="${status}"]`);
    if (button && button.disabled) return;  // a disabled action never fires, from keys either
    if (!state.current) {
      say("Open a candidate first (j).");
      return;
    }
    if (!config.canReview) {
      say("Viewers can look but cannot change a status.", "error");
      return;
    }
    const reasonBox = $("reason");
    const reason = reasonBox.value.trim();
    if (NEEDS_REASON.has(status) && !reason) {
      state.pending = status;
      reasonBox.focus();
      say(`Type the reason to mark it "${LABELS[status]}", then press Enter.`);
      return;
    }
    const c = state.current.candidate;
    const reply = await api(`/api/candidates/${c.id}/status`, {
      method: "POST",
      body: { status, reason: reason || null, expected_version: c.version },
    });
    state.pending = null;
    if (reply.status === 409) {
      showConflict(reply.data);
      return;
    }
    if (!reply.ok) {
      say(errorText(reply.data), "error");
      return;
    }
    reasonBox.value = "";
    reasonBox.blur();
    show(reply.data, { pan: false, fresh: false });
    say(`Saved: ${LABELS[reply.data.candidate.status]}.`, "ok");
    loadView();
  }

  function showConflict(data) {
    const now = data.current ? data.current.candidate : null;
    const box = $("conflict");
    box.hidden = false;
    box.textContent = now
      ? `Someone else changed this candidate: it is now "${LABELS[now.status]}" (version ${now.version}` +
        (now.status_changed_by ? `, by ${now.status_changed_by}` : "") +
        "). Your decision was not saved and your reason is still in the box: look again and decide."
      : errorText(data);
    if (data.current) show(data.current, { pan: false, fresh: false });
    say("");
    loadView();
  }

  async function addNote() {
    const text = $("reason").value.trim();
    if (!state.current || !text) {
      say("Type the note in the box first.");
      return;
    }
    const reply = await api(`/api/candidates/${state.current.candidate.id}/notes`, {
      method: "POST", body: { text },
    });
    if (!reply.ok) {
      say(errorText(reply.data), "error");
      return;
    }
    $("reason").value = "";
    show(reply.data, { pan: false, fresh: false });
    say("Note added.", "ok");
  }

  // -- keys and buttons -----------------------------------------------------------------
  function showKeys(open) {
    const help = $("help");
    help.hidden = !open;
    if (open) $("close-keys").focus();
    else if (document.activeElement === $("close-keys")) $("close-keys").blur();
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (!$("help").hidden) {  // the list of keys is open: only ? and Escape
      if (event.key === "Escape" || event.key === "?") {
        event.preventDefault();
        showKeys(false);
      }
      return;
    }
    if (target === $("reason")) {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        if (state.pending) decide(state.pending);
        else say("Press a decision button (or leave the box with Escape and press c, r, n or e).");
      } else if (event.key === "Escape") {
        state.pending = null;
        target.blur();
      }
      return;
    }
    if (["INPUT", "SELECT", "TEXTAREA"].includes(target.tagName)) return;
    if (event.key === "?") {
      event.preventDefault();
      showKeys(true);
      return;
    }
    const action = config.keys[event.key];
    if (!action) return;
    event.preventDefault();
    if (action === "next") step(1);
    else if (action === "previous") step(-1);
    else decide(action);
  });
  document.querySelectorAll("button[data-status]").forEach((button) => {
    button.addEventListener("click", () => decide(button.dataset.status));
  });
  $("add-note").addEventListener("click", addNote);
  $("show-keys").addEventListener("click", () => showKeys(true));
  $("close-keys").addEventListener("click", () => showKeys(false));
  $("help").addEventListener("click", (event) => {
    if (event.target === $("help")) showKeys(false);
  });
  $("next").addEventListener("click", () => step(1));
  $("prev").addEventListener("click", () => step(-1));
  $("order").addEventListener("change", async (event) => {
    state.order = event.target.value;
    state.pos = -1;
    await loadQueue();
  });
  $("filter").addEventListener("change", async (event) => {
    state.statuses = event.target.value ? event.target.value.split(",") : [];
    state.pos = -1;
    loadView();
    await loadQueue();
  });
  $("logout").addEventListener("click", async () => {
    await api("/api/logout", { method: "POST" }).catch(() => null);
    window.location.assign("/login");
  });

  // -- start ----------------------------------------------------------------------------
  async function start() {
    allowEscalation();
    const reply = await api("/api/summary");
    const bounds = reply.ok ? reply.data.bounds : null;
    if (bounds) map.fitBounds([[bounds[1], bounds[0]], [bounds[3], bounds[2]]], { padding: [20, 20] });
    else map.setView([0, 0], 2);
    await loadQueue();
    const match = /candidate=(\d+)/.exec(window.location.hash);
    if (match) await openCandidate(Number(match[1]), { pan: true });
  }
  start();
})();
