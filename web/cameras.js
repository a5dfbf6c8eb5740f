// The Cameras view: the network (RTSP) cameras that the server pulls and anonymizes (GET /cameras, every 2 s while
// the view is shown), each watched over WHEP (POST /whep/{name}, DELETE on the Location) and saved as a JPEG
// snapshot (GET /cameras/{name}/snapshot.jpg). Several cameras may be watched at once; each has its own Stop.
// The webcam view (app.js and the modules it wires) is untouched by this module except that the two views share
// the page.
//
// Hooks for tests:
//   #tab-webcam, #tab-cameras (role=tab, aria-selected) and <body data-view="webcam|cameras">; #view-webcam and
//   #view-cameras are the panels. #camera-list holds one <li data-camera="NAME"> per camera with
//   data-state="stopped|connecting|live|reconnecting" (the camera's state on the server) and
//   data-watch="idle|connecting|live|error" (this page's viewer); inside it button.watch, button.stop and
//   a.snapshot. While a camera is watched: <video data-camera-video="NAME" data-playing="false|true"> (true once
//   a frame has arrived). #cameras-error (role=alert) holds one <p data-error="list|NAME|snapshot:NAME"> per
//   problem. #cameras-empty is shown when the server has no cameras, #cameras-loading until the first answer.
//   Adding, editing and removing cameras is camera_admin.js (its own hooks are listed there).

import { onLangChange, t } from "./i18n.js";
import { ApiError, deleteWhep, detailOf, fetchSnapshot, getConfig, listCameras, postWhep, snapshotUrl } from "./api.js";
import { addCardControls, initCameraAdmin, renderCardControls, setManage, setModes } from "./camera_admin.js";
import { $, element, labelOf, setText } from "./dom.js";
import { formatBytes, num, stamp } from "./format.js";
import { closeAfterDelete, decodeRate, inboundVideo, waitForIceGathering, watchConnection } from "./webrtc.js";

const REFRESH_MS = 2000; // while the view is shown or a camera is watched
const BACKGROUND_REFRESH_MS = 10000; // otherwise (keeps the tab's camera count current)
const STALL_MS = 2500; // no new frame for this long: say so over the video
const VIEWS = ["webcam", "cameras"];
const CANCELLED = Symbol("cancelled");

const els = {
  body: document.body,
  error: $("cameras-error"),
  loading: $("cameras-loading"),
  empty: $("cameras-empty"),
  list: $("camera-list"),
  count: $("tab-cameras-count"),
};

let view = "webcam";
let cameras = null; // the last GET /cameras answer's list; null until the first answer
const cards = new Map(); // name -> the card's elements
const watches = new Map(); // name -> the viewer being started or watched; see watch()
const errors = new Map(); // "list", NAME (watching) or "snapshot:NAME" -> {key, vars}
const notes = new Map(); // NAME -> {key, vars}: snapshot progress
let refreshTimer = null;
let refreshBusy = false;
let refreshAgain = false;

// ---------------------------------------------------------------------------------------------------------------
// Views: Webcam (the default) and Cameras; #cameras in the address opens the Cameras view

function setView(next, { focus = false } = {}) {
  if (!VIEWS.includes(next)) next = "webcam";
  const changed = next !== view;
  view = next;
  els.body.dataset.view = next;
  for (const name of VIEWS) {
    const on = name === next;
    const tab = $(`tab-${name}`);
    tab.setAttribute("aria-selected", on ? "true" : "false");
    tab.tabIndex = on ? 0 : -1;
    $(`view-${name}`).hidden = !on;
    if (on && focus) tab.focus();
  }
  const hash = next === "cameras" ? "#cameras" : "";
  if (window.location.hash !== hash) {
    window.history.replaceState(null, "", hash || window.location.pathname + window.location.search);
  }
  if (changed && next === "cameras") refreshSoon();
}

function onTabKey(ev) {
  const i = VIEWS.indexOf(view);
  let next = null;
  if (ev.key === "ArrowRight") next = VIEWS[(i + 1) % VIEWS.length];
  else if (ev.key === "ArrowLeft") next = VIEWS[(i + VIEWS.length - 1) % VIEWS.length];
  else if (ev.key === "Home") next = VIEWS[0];
  else if (ev.key === "End") next = VIEWS[VIEWS.length - 1];
  if (next === null) return;
  ev.preventDefault();
  setView(next, { focus: true });
}

// ---------------------------------------------------------------------------------------------------------------
// The camera list

function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, 0);
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, view === "cameras" || watches.size ? REFRESH_MS : BACKGROUND_REFRESH_MS);
}

async function refresh() {
  clearTimeout(refreshTimer);
  refreshTimer = null;
  if (refreshBusy) {
    refreshAgain = true;
    return;
  }
  refreshBusy = true;
  try {
    if (!document.hidden || watches.size) {
      const body = await listCameras();
      if (!body || !Array.isArray(body.cameras)) {
        throw new ApiError("format", { detail: "GET /cameras: no \"cameras\" list" });
      }
      cameras = body.cameras.filter((c) => c && typeof c.name === "string" && c.name);
      setError("list", null);
      renderList();
      setManage(body.manage); // adding, editing and removing cameras (camera_admin.js)
    }
  } catch (err) {
    setError("list", { key: "cameras.listFailed", vars: { detail: detailOf(err) } });
  } finally {
    refreshBusy = false;
    if (refreshAgain) {
      refreshAgain = false;
      refreshSoon();
    } else {
      scheduleRefresh();
    }
  }
  pollWatchStats();
}

function renderList() {
  els.loading.hidden = cameras !== null;
  els.empty.hidden = !(cameras && cameras.length === 0);
  els.count.hidden = cameras === null;
  if (cameras !== null) setText(els.count, String(cameras.length));
  if (cameras === null) return;

  const names = new Set(cameras.map((c) => c.name));
  for (const [name, card] of cards) {
    if (names.has(name)) continue;
    const w = watches.get(name);
    if (w) teardown(w);
    card.root.remove();
    cards.delete(name);
    // Removed on the server: what this page said about it is history.
    setError(name, null);
    setError(`snapshot:${name}`, null);
    notes.delete(name);
  }
  cameras.forEach((cam, i) => {
    let card = cards.get(cam.name);
    if (!card) {
      card = createCard(cam.name);
      cards.set(cam.name, card);
    }
    // Moves only when the order changed: moving a <video> pauses it.
    const at = els.list.children[i] || null;
    if (at !== card.root) els.list.insertBefore(card.root, at);
    card.cam = cam;
    renderCard(card);
  });
}

function createCard(name) {
  const root = element("li", "camera-card");
  root.dataset.camera = name;
  root.dataset.state = "stopped";
  root.dataset.watch = "idle";

  const head = element("div", "camera-head");
  const title = element("h3", "camera-name");
  title.textContent = name;
  const badge = element("span", "badge");
  head.append(title, badge);

  const meta = element("p", "camera-meta");
  const details = element("p", "camera-details");
  const problem = element("p", "camera-error");
  problem.hidden = true;

  const videoBox = element("div", "camera-video");
  videoBox.hidden = true;
  const overlay = element("p", "camera-overlay");
  videoBox.append(overlay);
  const watchStatus = element("p", "watch-status");
  watchStatus.hidden = true;

  const toolbar = element("div", "toolbar");
  const watchBtn = element("button", "watch primary", { type: "button" });
  const stopBtn = element("button", "stop", { type: "button" });
  stopBtn.disabled = true;
  const snapshot = element("a", "snapshot button-link", { href: snapshotUrl(name), target: "_blank", rel: "noopener" });
  toolbar.append(watchBtn, stopBtn, snapshot);
  const snapshotStatus = element("p", "snapshot-status note", { role: "status" });
  snapshotStatus.hidden = true;

  root.append(head, meta, details, problem, videoBox, watchStatus, toolbar, snapshotStatus);
  watchBtn.addEventListener("click", () => { watch(name); });
  stopBtn.addEventListener("click", () => stopWatch(name));
  snapshot.addEventListener("click", (ev) => { takeSnapshot(name, ev); });
  const card = { name, root, badge, meta, details, problem, videoBox, overlay, watchStatus, watchBtn, stopBtn,
    snapshot, snapshotStatus, snapshotBusy: false, cam: null };
  addCardControls(card, toolbar); // Edit and Remove, shown where the server allows them
  return card;
}

function renderCard(card) {
  const cam = card.cam || { name: card.name, state: "stopped" };
  const state = typeof cam.state === "string" && cam.state ? cam.state : "stopped";
  card.root.dataset.state = state;
  card.badge.dataset.state = state;
  setText(card.badge, labelOf("cameras.state", state));

  const meta = [];
  const fps = num(cam.fps);
  if (fps !== null && (state === "live" || fps > 0)) meta.push(t("cameras.fps", { fps: fps.toFixed(1) }));
  const age = num(cam.last_frame_age_s);
  if (age === null) meta.push(t("cameras.noFrame"));
  else meta.push(t("cameras.age", { age: age < 10 ? age.toFixed(1) : Math.round(age) }));
  if (num(cam.width) && num(cam.height)) meta.push(`${cam.width} × ${cam.height}`);
  setText(card.meta, meta.join(" · "));
  card.meta.dataset.stale = age !== null && age > 5 ? "true" : "false";

  const details = [];
  if (num(cam.viewers) !== null) details.push(t("cameras.viewers", { count: cam.viewers }));
  if (typeof cam.mode === "string") details.push(labelOf("mode", cam.mode));
  if (typeof cam.transport === "string") {
    details.push(t("cameras.transport", { transport: cam.transport.toUpperCase() }));
  }
  details.push(t(cam.always_on ? "cameras.alwaysOn" : "cameras.onDemand"));
  setText(card.details, details.join(" · "));

  // The reader's last error, while it retries (once the camera is stopped or live again it is history).
  const problem = state === "reconnecting" && cam.error ? t("cameras.lastError", { error: cam.error }) : "";
  card.problem.hidden = !problem;
  setText(card.problem, problem);

  setText(card.watchBtn, t("cameras.watch"));
  setText(card.stopBtn, t("cameras.stop"));
  setText(card.snapshot, t("cameras.snapshot"));
  card.snapshot.title = t("cameras.snapshotTitle", { name: card.name });
  if (!card.snapshotBusy) card.snapshot.href = snapshotUrl(card.name);
  card.snapshot.setAttribute("aria-busy", card.snapshotBusy ? "true" : "false");
  const note = notes.get(card.name);
  card.snapshotStatus.hidden = !note;
  setText(card.snapshotStatus, note ? t(note.key, note.vars) : "");
  renderCardControls(card);
  renderWatch(card);
}

function renderWatch(card) {
  if (!card) return;
  const w = watches.get(card.name);
  card.root.dataset.watch = w ? w.status : errors.has(card.name) ? "error" : "idle";
  card.watchBtn.disabled = Boolean(w);
  card.stopBtn.disabled = !w;
  card.videoBox.hidden = !w;
  card.watchStatus.hidden = !w;
  if (!w) {
    setText(card.watchStatus, "");
    return;
  }
  w.video.setAttribute("aria-label", t("cameras.videoLabel", { name: card.name }));
  if (w.video.paused && w.video.srcObject && w.playing) w.video.play().catch(() => {});

  // Frozen picture: measured by the frames this page presents where the browser can tell, else the camera's state.
  const state = card.root.dataset.state;
  const stalled = w.playing
    && (w.lastFrameAt !== null ? performance.now() - w.lastFrameAt > STALL_MS : state !== "live");
  w.video.dataset.stalled = stalled ? "true" : "false";
  let overlay = "";
  if (!w.playing) overlay = t(w.status === "connecting" ? "cameras.overlayConnecting" : "cameras.watchWaiting");
  else if (stalled && state === "live") overlay = t("cameras.overlayStalled");
  else if (stalled && state === "stopped") overlay = t("cameras.overlayStopped");
  else if (stalled) overlay = t("cameras.overlayReconnecting");
  card.overlay.hidden = !overlay;
  card.overlay.dataset.kind = w.playing ? "camera" : "connecting";
  setText(card.overlay, overlay);

  let status;
  if (w.status === "connecting") status = t("cameras.watchConnecting");
  else if (!w.playing) status = t("cameras.watchWaiting");
  else if (w.received && w.received.fps !== null) {
    status = t("cameras.watchReceiving", { fps: w.received.fps.toFixed(1), size: w.received.size || "?" });
  } else status = t("cameras.watchLive");
  setText(card.watchStatus, status);
}

// ---------------------------------------------------------------------------------------------------------------
// Errors: #cameras-error, one line per problem, kept as {key, vars} so that a language switch re-renders them

function setError(id, msg) {
  const before = errors.get(id);
  if (!msg && !before) return;
  if (msg && before && before.key === msg.key && JSON.stringify(before.vars) === JSON.stringify(msg.vars)) return;
  if (msg) errors.set(id, msg);
  else errors.delete(id);
  renderErrors();
}

function renderErrors() {
  const ordered = [...errors.entries()].sort(([a], [b]) => (a === "list" ? -1 : b === "list" ? 1 : 0));
  const lines = ordered.map(([id, msg]) => {
    const p = element("p");
    p.dataset.error = id;
    p.textContent = t(msg.key, msg.vars);
    return p;
  });
  els.error.replaceChildren(...lines);
  els.error.hidden = lines.length === 0;
  for (const card of cards.values()) renderWatch(card);
}

// The server's error text without its final full stop: the messages around it add their own.
const clause = (detail) => String(detail || "").replace(/[\s.]+$/, "");

function describe(name, err) {
  if (err instanceof ApiError) {
    const detail = clause(err.detail);
    if (err.kind === "network") return { key: "cameras.err.unreachable", vars: { name, detail: err.detail } };
    if (err.kind === "format") return { key: "cameras.err.badAnswer", vars: { name, detail: err.detail } };
    if (err.status === 404) return { key: "cameras.err.notFound", vars: { name, detail } };
    if (err.status === 503) {
      return err.retryAfter !== null
        ? { key: "cameras.err.busy", vars: { name, detail, seconds: err.retryAfter } }
        : { key: "cameras.err.busyNoRetry", vars: { name, detail: err.detail } };
    }
    return { key: "cameras.err.http", vars: { name, status: err.status, detail: err.detail } };
  }
  return { key: "cameras.err.webrtc", vars: { name, detail: detailOf(err) } };
}

// ---------------------------------------------------------------------------------------------------------------
// Watching a camera: WHEP, receive-only, no trickle ICE

function check(w) {
  if (w.cancelled) throw CANCELLED;
}

function createVideo(name, w) {
  const video = element("video", "camera-stream");
  video.autoplay = true;
  video.muted = true;
  video.playsInline = true;
  video.dataset.cameraVideo = name;
  video.dataset.playing = "false";
  video.addEventListener("playing", () => markPlaying(w));
  if (typeof video.requestVideoFrameCallback === "function") {
    const onFrame = () => {
      if (w.cancelled) return;
      const wasStalled = video.dataset.stalled === "true";
      w.lastFrameAt = performance.now();
      markPlaying(w);
      if (wasStalled) renderWatch(cards.get(w.name));
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }
  return video;
}

function markPlaying(w) {
  if (w.cancelled || w.playing) return;
  w.playing = true;
  w.video.dataset.playing = "true";
  renderWatch(cards.get(w.name));
}

async function watch(name) {
  if (watches.has(name)) return;
  setError(name, null);
  if (typeof window.RTCPeerConnection !== "function") {
    setError(name, { key: "cameras.err.noWebrtc" });
    return;
  }
  const w = {
    name, status: "connecting", cancelled: false, pc: null, location: null, video: null, playing: false,
    lastFrameAt: null, received: null, prevDecoded: null, connection: null,
  };
  w.video = createVideo(name, w);
  watches.set(name, w);
  const card = cards.get(name);
  if (card) card.videoBox.prepend(w.video);
  renderWatch(card);

  try {
    // The server's ICE servers, exactly: [] when it has none (never a public STUN server).
    const config = await getConfig();
    check(w);
    const iceServers = config && Array.isArray(config.iceServers) ? config.iceServers : [];
    const pc = new RTCPeerConnection({ iceServers });
    w.pc = pc;
    pc.addEventListener("track", (ev) => onTrack(w, ev));
    w.connection = watchConnection(pc, () => w.cancelled, (cs) => onConnectionState(w, cs),
      (reason, vars) => fail(w, { key: `cameras.err.${reason}`, vars: { name, ...vars } }));
    pc.addTransceiver("video", { direction: "recvonly" });

    const offer = await pc.createOffer();
    check(w);
    await pc.setLocalDescription(offer);
    check(w);
    await waitForIceGathering(pc);
    check(w);

    // Not aborted on Stop: if the server creates the viewer we learn its Location and delete it.
    let answer;
    try {
      answer = await postWhep(name, pc.localDescription.sdp);
    } catch (err) {
      if (err instanceof ApiError && err.location) {
        if (w.cancelled) deleteWhep(err.location).catch(() => {});
        else w.location = err.location;
      }
      throw err;
    }
    if (w.cancelled) {
      deleteWhep(answer.location).catch(() => {});
      throw CANCELLED;
    }
    w.location = answer.location;
    w.video.dataset.location = new URL(answer.location).pathname;

    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    check(w);
    w.connection.answered();
    refreshSoon(); // the camera starts for us, and its viewer count changes
  } catch (err) {
    if (err === CANCELLED || w.cancelled) return;
    fail(w, describe(name, err));
  }
}

function onTrack(w, ev) {
  if (w.cancelled || ev.track.kind !== "video") return;
  w.video.srcObject = ev.streams && ev.streams[0] ? ev.streams[0] : new MediaStream([ev.track]);
  const play = w.video.play();
  if (play && play.catch) play.catch(() => {}); // muted autoplay normally covers this
}

function onConnectionState(w, cs) {
  w.video.dataset.connection = cs;
  if (cs === "connected") w.status = "live";
  renderWatch(cards.get(w.name));
}

function fail(w, msg) {
  if (watches.get(w.name) !== w) return;
  teardown(w);
  setError(w.name, msg);
}

function stopWatch(name) {
  const w = watches.get(name);
  if (w) teardown(w);
}

// Ends a viewer: the picture goes at once; the server's viewer is deleted first and the peer connection closed
// after that answer (closing first would make the server end the viewer itself, and the DELETE would find none).
// Leaving the page closes at once; the DELETE still goes out (keepalive).
function teardown(w, { leaving = false } = {}) {
  w.cancelled = true;
  if (watches.get(w.name) === w) watches.delete(w.name);
  if (w.connection) w.connection.stop();
  const stream = w.video.srcObject;
  if (stream) for (const track of stream.getTracks()) track.stop();
  w.video.srcObject = null;
  w.video.remove();
  // best effort: the server also ends the viewer when its connection fails
  const deleted = w.location ? deleteWhep(w.location).catch(() => {}) : null;
  closeAfterDelete(w.pc, deleted, leaving);
  w.location = null;
  renderWatch(cards.get(w.name));
  if (!leaving) refreshSoon();
}

async function pollWatchStats() {
  for (const w of watches.values()) {
    if (w.cancelled || !w.pc || w.status !== "live") continue;
    let report;
    try {
      report = await w.pc.getStats();
    } catch {
      continue;
    }
    if (w.cancelled) continue;
    const inbound = inboundVideo(report);
    if (!inbound) continue;
    const { fps, decoded, sample } = decodeRate(inbound, w.prevDecoded);
    w.prevDecoded = sample;
    const width = num(inbound.frameWidth) || w.video.videoWidth || null;
    const height = num(inbound.frameHeight) || w.video.videoHeight || null;
    w.received = { fps: fps === null ? 0 : fps, size: width && height ? `${width} × ${height}` : null };
    w.video.dataset.framesDecoded = decoded === null ? "" : String(decoded);
    renderWatch(cards.get(w.name));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Snapshots: the latest anonymized frame as JPEG, fetched first so that an error is shown here, not saved

function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = element("a", null, { href: url, download: filename });
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

async function takeSnapshot(name, ev) {
  const card = cards.get(name);
  if (!card) return;
  if (!card.snapshotBusy) card.snapshot.href = snapshotUrl(name); // a fresh picture, whatever opens it
  // A middle, Ctrl-, Shift- or Cmd-click opens the picture itself, as for any link.
  if (ev.button !== 0 || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.altKey) return;
  ev.preventDefault();
  if (card.snapshotBusy) return;
  card.snapshotBusy = true;
  setError(`snapshot:${name}`, null);
  notes.set(name, { key: "cameras.snapshotBusy" });
  renderCard(card);
  try {
    const blob = await fetchSnapshot(card.snapshot.href);
    saveBlob(blob, `${name}-${stamp()}.jpg`);
    notes.set(name, { key: "cameras.snapshotSaved", vars: { size: formatBytes(blob.size) } });
  } catch (err) {
    notes.delete(name);
    const busy = err instanceof ApiError && err.status === 503 && err.retryAfter !== null;
    setError(`snapshot:${name}`, busy
      ? { key: "cameras.err.snapshotBusy", vars: { name, detail: clause(err.detail), seconds: err.retryAfter } }
      : { key: "cameras.err.snapshot", vars: { name, detail: err instanceof ApiError && err.status
        ? `${err.status}: ${detailOf(err)}` : detailOf(err) } });
  } finally {
    card.snapshotBusy = false;
    if (cards.get(name) === card) renderCard(card);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Wiring

export function initCameras() {
  for (const name of VIEWS) $(`tab-${name}`).addEventListener("click", () => setView(name));
  document.querySelector(".tabs").addEventListener("keydown", onTabKey);
  window.addEventListener("hashchange", () => setView(window.location.hash === "#cameras" ? "cameras" : "webcam"));
  setView(window.location.hash === "#cameras" ? "cameras" : "webcam");

  document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshSoon(); });
  window.addEventListener("pagehide", () => {
    for (const w of [...watches.values()]) teardown(w, { leaving: true });
  });
  onLangChange(() => {
    for (const card of cards.values()) renderCard(card);
    renderErrors();
  });
  initCameraAdmin({ onChanged: refreshSoon, cards: () => [...cards.values()] });
  getConfig().then((config) => setModes(config && config.modes)).catch(() => {});
  refreshSoon(); // the tab shows how many cameras there are, even before the view is opened
}
