// Live webcam anonymizer client (docs/http-api.md). The browser sends its camera over WebRTC and shows only the
// anonymized video the server sends back. The raw camera preview is opt-in and never recorded.
//
// Hooks for tests: <body data-state="idle|connecting|live|error" data-connection="<pc.connectionState>"
// data-session="<id>" data-recording="true|false">, #start, #stop, #output, #error, stat values #stat-* with the
// raw number in data-value. The Cameras view (network cameras over WHEP) is cameras.js; the webcam view stays the
// default. The Upload view (photos and videos as server jobs) is upload.js.

import { LANGUAGES, dictionaries, getLang, onLangChange, setLang, t, translatePage } from "./i18n.js";
import { ApiError, deleteSession, getConfig, getSession, postOffer, postSettings } from "./api.js";
import { checkHealth, startHealthPolling } from "./status.js";
import { waitForIceGathering } from "./webrtc.js";
import { initCameras } from "./cameras.js";
import { initUpload } from "./upload.js";

const ICE_GATHER_TIMEOUT_MS = 5000;
const CONNECT_TIMEOUT_MS = 20000;
const DISCONNECT_GRACE_MS = 5000;
const STATS_INTERVAL_MS = 1000;
const SLIDER_DEBOUNCE_MS = 200;
const FALLBACK_MODES = ["mosaic", "blur", "solid"];
const OPTION_FIELDS = ["mode", "strength", "padding", "threshold", "debug", "ellipse"];

const $ = (id) => document.getElementById(id);
const els = {
  body: document.body,
  lang: $("lang"),
  output: $("output"),
  placeholder: $("output-placeholder"),
  error: $("error"),
  start: $("start"),
  stop: $("stop"),
  connStatus: $("connection-status"),
  recordStart: $("record-start"),
  recordStop: $("record-stop"),
  recordStatus: $("record-status"),
  recordDownload: $("record-download"),
  snapshot: $("snapshot"),
  snapshotDownload: $("snapshot-download"),
  captureError: $("capture-error"),
  form: $("settings"),
  camera: $("camera"),
  resolution: $("resolution"),
  mode: $("mode"),
  strength: $("strength"),
  strengthValue: $("strength-value"),
  padding: $("padding"),
  threshold: $("threshold"),
  debug: $("debug"),
  ellipse: $("ellipse"),
  settingsError: $("settings-error"),
  showRaw: $("show-raw"),
  rawContainer: $("raw-container"),
  rawPreview: $("raw-preview"),
};

// ---------------------------------------------------------------------------------------------------------------
// Page state and messages (kept as {key, vars} so that a language switch re-renders them)

let state = "idle";
let current = null; // the session being started or live; see start()
let modes = FALLBACK_MODES.slice();
let cameras = []; // MediaDeviceInfo of kind videoinput
let messages = { error: null, settings: null, capture: null };
let recording = null; // {recorder, chunks, startedAt, timer, mime}
let downloads = { record: null, snapshot: null }; // {url, size}
let userTouched = new Set(); // controls changed by the user (config defaults do not override them)

const CANCELLED = Symbol("cancelled");

function setState(next) {
  if (next !== state && next !== "connecting") checkHealth(); // the header's session count follows at once
  state = next;
  els.body.dataset.state = next;
  const busy = next === "connecting" || next === "live";
  els.start.disabled = busy;
  els.stop.disabled = !busy;
  els.placeholder.hidden = next === "live";
  renderConnStatus();
  renderCaptureButtons();
}

function renderConnStatus() {
  const text = t(`state.${state}`);
  if (els.connStatus.textContent !== text) els.connStatus.textContent = text; // role=status: announce changes only
  els.connStatus.dataset.state = state;
  els.placeholder.textContent = t(state === "connecting" ? "output.connecting" : "output.idle");
}

function renderMessage(el, msg) {
  el.textContent = msg ? t(msg.key, msg.vars) : "";
  el.hidden = !msg;
}

function showError(msg) {
  messages.error = msg;
  renderMessage(els.error, msg);
}

function showSettingsMessage(msg) {
  messages.settings = msg;
  renderMessage(els.settingsError, msg);
}

function showCaptureMessage(msg) {
  messages.capture = msg;
  renderMessage(els.captureError, msg);
}

function detailOf(err) {
  if (err instanceof ApiError) return err.detail || err.kind;
  if (err && err.message) return err.name && err.name !== "Error" ? `${err.name}: ${err.message}` : err.message;
  return String(err);
}

class CameraError extends Error {
  constructor(cause) {
    super(cause && cause.message ? cause.message : String(cause));
    this.name = "CameraError";
    this.cause = cause;
  }
}

function describe(err) {
  if (err instanceof CameraError) {
    const cause = err.cause || {};
    const detail = cause.message || cause.name || String(cause);
    switch (cause.name) {
      case "NotAllowedError":
      case "PermissionDeniedError":
      case "SecurityError":
        return { key: "err.cameraDenied" };
      case "NotFoundError":
      case "DevicesNotFoundError":
        return { key: "err.noCamera" };
      case "NotReadableError":
      case "TrackStartError":
      case "AbortError":
        return { key: "err.cameraBusy", vars: { detail } };
      case "OverconstrainedError":
        return { key: "err.cameraConstraints", vars: { detail: cause.constraint || detail } };
      default:
        return { key: "err.camera", vars: { detail } };
    }
  }
  if (err instanceof ApiError) {
    if (err.kind === "network") return { key: "err.unreachable", vars: { detail: err.detail } };
    if (err.kind === "format") return { key: "err.badAnswer", vars: { detail: err.detail } };
    if (err.status === 503) {
      return err.retryAfter !== null
        ? { key: "err.busy", vars: { detail: err.detail, seconds: err.retryAfter } }
        : { key: "err.busyNoRetry", vars: { detail: err.detail } };
    }
    return { key: "err.http", vars: { status: err.status, detail: err.detail } };
  }
  return { key: "err.webrtc", vars: { detail: detailOf(err) } };
}

// ---------------------------------------------------------------------------------------------------------------
// Controls

function modeLabel(mode) {
  const key = `mode.${mode}`;
  return key in dictionaries.en ? t(key) : mode;
}

function renderModes() {
  const selected = els.mode.value || "mosaic";
  els.mode.replaceChildren(...modes.map((m) => new Option(modeLabel(m), m)));
  els.mode.value = modes.includes(selected) ? selected : modes[0];
}

function renderCameras() {
  const selected = els.camera.value;
  const options = [new Option(t("settings.cameraDefault"), "")];
  cameras.forEach((cam, i) => {
    if (cam.deviceId) options.push(new Option(cam.label || t("settings.cameraN", { n: i + 1 }), cam.deviceId));
  });
  els.camera.replaceChildren(...options);
  els.camera.value = options.some((o) => o.value === selected) ? selected : "";
}

async function refreshCameras() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  try {
    const devices = await navigator.mediaDevices.enumerateDevices();
    cameras = devices.filter((d) => d.kind === "videoinput");
  } catch {
    cameras = [];
  }
  renderCameras();
}

function renderStrength() {
  const v = Number(els.strength.value);
  els.strengthValue.textContent = Number.isFinite(v) ? v.toFixed(2) : els.strength.value;
}

function renderLanguages() {
  els.lang.replaceChildren(...LANGUAGES.map((l) => new Option(l.name, l.code)));
  els.lang.value = getLang();
}

// A number field that is empty is left out (the server default applies); anything else is sent as typed so that
// the server's own validation answers (400 with its message) for values out of range.
function numberField(el) {
  if (el.value.trim() === "") return undefined;
  const n = Number(el.value);
  return Number.isFinite(n) ? n : el.value;
}

function readOption(field) {
  switch (field) {
    case "mode": return els.mode.value || undefined;
    case "strength": return numberField(els.strength);
    case "padding": return numberField(els.padding);
    case "threshold": return numberField(els.threshold);
    case "debug": return els.debug.checked;
    case "ellipse": return els.ellipse.checked;
    default: return undefined;
  }
}

function readOptions() {
  const options = {};
  for (const field of OPTION_FIELDS) {
    const value = readOption(field);
    if (value !== undefined) options[field] = value;
  }
  return options;
}

function writeOption(field, value) {
  if (value === undefined || value === null) return;
  switch (field) {
    case "mode":
      if (!modes.includes(value)) {
        modes = modes.concat([value]);
        renderModes();
      }
      els.mode.value = value;
      break;
    case "strength": els.strength.value = String(value); renderStrength(); break;
    case "padding": els.padding.value = String(value); break;
    case "threshold": els.threshold.value = String(value); break;
    case "debug": els.debug.checked = Boolean(value); break;
    case "ellipse": els.ellipse.checked = Boolean(value); break;
    default: break;
  }
}

function applyConfig(config) {
  if (Array.isArray(config.modes) && config.modes.length) {
    modes = config.modes.map(String);
    renderModes();
  }
  const defaults = config.defaults && typeof config.defaults === "object" ? config.defaults : {};
  for (const field of OPTION_FIELDS) {
    if (!userTouched.has(field) && field in defaults) writeOption(field, defaults[field]);
  }
}

function resolutionOf() {
  const [w, h] = els.resolution.value.split("x").map(Number);
  return { width: w || 640, height: h || 480 };
}

function videoConstraints() {
  const { width, height } = resolutionOf();
  const c = { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: 30 } };
  if (els.camera.value) c.deviceId = { exact: els.camera.value };
  return c;
}

// ---------------------------------------------------------------------------------------------------------------
// Camera

async function openCamera(withAudio) {
  const video = videoConstraints();
  try {
    return await navigator.mediaDevices.getUserMedia({ video, audio: withAudio });
  } catch (err) {
    if (withAudio && err && (err.name === "NotFoundError" || err.name === "NotAllowedError"
        || err.name === "NotReadableError")) {
      // No usable microphone: the server passes audio through, but video alone is still valid.
      try {
        return await navigator.mediaDevices.getUserMedia({ video, audio: false });
      } catch (err2) {
        throw new CameraError(err2);
      }
    }
    throw new CameraError(err);
  }
}

function renderRawPreview() {
  const s = current;
  const want = els.showRaw.checked && s && s.localStream;
  els.rawContainer.hidden = !els.showRaw.checked;
  if (want) {
    const tracks = s.localStream.getVideoTracks();
    const attached = els.rawPreview.srcObject;
    if (!attached || attached.getVideoTracks()[0] !== tracks[0]) els.rawPreview.srcObject = new MediaStream(tracks);
  } else {
    els.rawPreview.srcObject = null;
  }
}

async function switchCamera() {
  const s = current;
  if (!s || !s.localStream || !s.videoSender) return;
  const old = s.localStream.getVideoTracks()[0];
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: videoConstraints(), audio: false });
  } catch (err) {
    if (s === current) showSettingsMessage({ key: "settings.cameraSwitchFailed", vars: { detail: describeCamera(err) } });
    return;
  }
  const track = stream.getVideoTracks()[0];
  if (s !== current || s.cancelled) {
    track.stop();
    return;
  }
  try {
    await s.videoSender.replaceTrack(track);
  } catch (err) {
    track.stop();
    showSettingsMessage({ key: "settings.cameraSwitchFailed", vars: { detail: detailOf(err) } });
    return;
  }
  if (old) {
    s.localStream.removeTrack(old);
    old.stop();
  }
  s.localStream.addTrack(track);
  showSettingsMessage(null);
  renderRawPreview();
}

function describeCamera(err) {
  const msg = describe(new CameraError(err));
  return t(msg.key, msg.vars);
}

async function changeResolution() {
  const s = current;
  const track = s && s.localStream ? s.localStream.getVideoTracks()[0] : null;
  if (!track) return;
  const { width, height } = resolutionOf();
  try {
    await track.applyConstraints({ width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: 30 } });
    showSettingsMessage(null);
  } catch (err) {
    showSettingsMessage({ key: "settings.cameraSwitchFailed", vars: { detail: describeCamera(err) } });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Connection

function check(s) {
  if (s.cancelled) throw CANCELLED;
}

function validateAnswer(answer) {
  if (!answer || typeof answer !== "object") throw new ApiError("format", { detail: "empty answer" });
  if (answer.type !== "answer" || typeof answer.sdp !== "string" || !answer.sdp) {
    throw new ApiError("format", { detail: "missing sdp or type \"answer\"" });
  }
  if (typeof answer.session !== "string" || !answer.session) {
    throw new ApiError("format", { detail: "missing session id" });
  }
}

async function start() {
  if (current) return;
  showError(null);
  showSettingsMessage(null);
  showCaptureMessage(null);
  resetStats();

  if (typeof window.RTCPeerConnection !== "function") {
    showError({ key: "err.noWebrtc" });
    setState("error");
    return;
  }
  if (!navigator.mediaDevices || typeof navigator.mediaDevices.getUserMedia !== "function") {
    showError({ key: "err.insecure" });
    setState("error");
    return;
  }

  const s = {
    cancelled: false, pc: null, localStream: null, remoteStream: new MediaStream(), videoSender: null,
    id: null, config: null, applied: null, connectTimer: null, graceTimer: null, statsTimer: null,
    statsBusy: false, prevDecoded: null, settingsQueue: Promise.resolve(), everConnected: false,
  };
  current = s;
  setState("connecting");

  try {
    // 1. What the server wants: ICE servers (used exactly, [] when empty), audio policy, modes, defaults.
    const config = await getConfig();
    check(s);
    if (!config || typeof config !== "object") throw new ApiError("format", { detail: "/config is not an object" });
    s.config = config;
    applyConfig(config);
    const audio = config.audio === "passthrough";

    // 2. The camera.
    s.localStream = await openCamera(audio);
    if (s.cancelled) {
      for (const track of s.localStream.getTracks()) track.stop();
      throw CANCELLED;
    }
    refreshCameras();
    renderRawPreview();

    // 3. The peer connection, with exactly the server's ICE servers.
    const iceServers = Array.isArray(config.iceServers) ? config.iceServers : [];
    const pc = new RTCPeerConnection({ iceServers });
    s.pc = pc;
    pc.addEventListener("track", (ev) => onTrack(s, ev));
    pc.addEventListener("connectionstatechange", () => onConnectionState(s));

    const videoTrack = s.localStream.getVideoTracks()[0];
    if (!videoTrack) throw new CameraError({ name: "NotFoundError", message: "no video track" });
    s.videoSender = pc.addTransceiver(videoTrack, { direction: "sendrecv", streams: [s.localStream] }).sender;
    if (audio) {
      for (const track of s.localStream.getAudioTracks()) {
        pc.addTransceiver(track, { direction: "sendrecv", streams: [s.localStream] });
      }
    }

    // 4. Offer, full ICE gathering (no trickle), POST /offer.
    const offer = await pc.createOffer();
    check(s);
    await pc.setLocalDescription(offer);
    check(s);
    await waitForIceGathering(pc, ICE_GATHER_TIMEOUT_MS);
    check(s);
    const options = readOptions();
    // Not aborted on Stop: if the server creates the session we learn its id and delete it.
    const answer = await postOffer({ sdp: pc.localDescription.sdp, type: pc.localDescription.type, options });
    if (answer && typeof answer.session === "string" && answer.session) {
      s.id = answer.session;
      els.body.dataset.session = s.id;
      setStat("stat-session", s.id, s.id);
    }
    check(s);
    validateAnswer(answer);
    s.applied = { ...options };

    // 5. The answer, then wait for the connection.
    await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
    check(s);
    const video = pc.getTransceivers().find((tr) => tr.sender === s.videoSender);
    if (video && (video.currentDirection === "inactive" || video.currentDirection === "sendonly")) {
      throw new ApiError("format", { detail: t("err.noVideo") });
    }
    s.connectTimer = setTimeout(() => {
      if (s === current && !s.everConnected) {
        fail(s, { key: "err.iceTimeout", vars: { seconds: Math.round(CONNECT_TIMEOUT_MS / 1000) } });
      }
    }, CONNECT_TIMEOUT_MS);
    s.statsTimer = setInterval(() => pollStats(s), STATS_INTERVAL_MS);
    pollStats(s);
    syncChangedSettings(s, options);
    onConnectionState(s);
  } catch (err) {
    if (err === CANCELLED || s.cancelled || s !== current) return;
    fail(s, describe(err));
  }
}

function onTrack(s, ev) {
  if (s.cancelled) return;
  s.remoteStream.addTrack(ev.track);
  if (ev.track.kind === "video") {
    els.output.srcObject = s.remoteStream;
    const play = els.output.play();
    if (play && play.catch) play.catch(() => {}); // autoplay (muted) normally covers this
  }
}

function onConnectionState(s) {
  if (!s.pc || s.cancelled) return;
  const cs = s.pc.connectionState;
  els.body.dataset.connection = cs;
  if (cs === "connected") {
    s.everConnected = true;
    clearTimeout(s.graceTimer);
    s.graceTimer = null;
    clearTimeout(s.connectTimer);
    s.connectTimer = null;
    if (state !== "live") setState("live");
  } else if (cs === "failed") {
    fail(s, { key: "err.iceFailed" });
  } else if (s.everConnected && s.graceTimer === null) {
    // disconnected (or the transport closed from the far end): give it a few seconds to come back
    s.graceTimer = setTimeout(() => {
      s.graceTimer = null;
      if (s === current && s.pc && s.pc.connectionState !== "connected") {
        fail(s, { key: "err.disconnected", vars: { seconds: Math.round(DISCONNECT_GRACE_MS / 1000) } });
      }
    }, DISCONNECT_GRACE_MS);
  }
}

// Settings that changed between reading the options for the offer and getting the answer.
function syncChangedSettings(s, sent) {
  const now = readOptions();
  const patch = {};
  for (const field of OPTION_FIELDS) if (now[field] !== undefined && now[field] !== sent[field]) patch[field] = now[field];
  if (Object.keys(patch).length) queueSettings(s, patch);
}

function fail(s, msg) {
  if (s !== current) return;
  teardown(s);
  showError(msg);
  setState("error");
}

function stop() {
  const s = current;
  if (!s) return;
  teardown(s);
  setState("idle");
}

function teardown(s) {
  s.cancelled = true;
  if (current === s) current = null;
  clearTimeout(s.connectTimer);
  clearTimeout(s.graceTimer);
  clearInterval(s.statsTimer);
  if (recording) stopRecording();
  if (s.pc) {
    try {
      s.pc.close();
    } catch {
      // already closed
    }
  }
  if (s.localStream) for (const track of s.localStream.getTracks()) track.stop();
  for (const track of s.remoteStream.getTracks()) track.stop();
  els.output.srcObject = null;
  els.rawPreview.srcObject = null;
  if (s.id) deleteSession(s.id).catch(() => {}); // best effort: the server also closes it when ICE fails
  delete els.body.dataset.session;
  els.body.dataset.connection = "closed";
}

// ---------------------------------------------------------------------------------------------------------------
// Live settings: POST /sessions/{id}/settings, one request at a time, in order

function queueSettings(s, patch) {
  s.settingsQueue = s.settingsQueue.then(() => sendSettings(s, patch));
}

async function sendSettings(s, patch) {
  if (s !== current || !s.id) return;
  try {
    const settings = await postSettings(s.id, patch);
    if (s !== current) return;
    s.applied = { ...s.applied, ...(settings && typeof settings === "object" ? settings : patch) };
    showSettingsMessage(null);
  } catch (err) {
    if (s !== current) return;
    if (err instanceof ApiError && err.kind === "http" && err.status === 404) {
      fail(s, { key: "err.sessionGone" });
      return;
    }
    if (err instanceof ApiError && err.kind === "http") {
      showSettingsMessage({ key: "settings.refused", vars: { status: err.status, detail: err.detail } });
      // Nothing was changed on the server: show the settings that are really in force.
      for (const field of Object.keys(patch)) if (s.applied && field in s.applied) writeOption(field, s.applied[field]);
    } else {
      showSettingsMessage({ key: "settings.failed", vars: { detail: detailOf(err) } });
    }
  }
}

const sliderTimers = new Map();

function onOptionChanged(field, { debounce = false } = {}) {
  userTouched.add(field);
  const s = current;
  if (!s || !s.id) return; // not live: the value goes with the next offer
  clearTimeout(sliderTimers.get(field));
  const send = () => {
    sliderTimers.delete(field);
    const value = readOption(field);
    if (value === undefined) return;
    if (s.applied && s.applied[field] === value) return;
    queueSettings(s, { [field]: value });
  };
  if (debounce) sliderTimers.set(field, setTimeout(send, SLIDER_DEBOUNCE_MS));
  else send();
}

// ---------------------------------------------------------------------------------------------------------------
// Stats: GET /sessions/{id} and pc.getStats(), every second

function setStat(id, value, text) {
  const el = $(id);
  if (!el) return;
  el.dataset.value = value === null || value === undefined ? "" : String(value);
  el.textContent = text === null || text === undefined || text === "" ? "—" : String(text);
}

const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
const fixed = (v, digits) => (num(v) === null ? null : v.toFixed(digits));

function resetStats() {
  for (const el of document.querySelectorAll("[id^='stat-']")) {
    el.dataset.value = "";
    el.textContent = "—";
  }
}

function renderServerStats(st) {
  setStat("stat-fps-in", num(st.fps_in), fixed(st.fps_in, 1));
  setStat("stat-fps-out", num(st.fps_out), fixed(st.fps_out, 1));
  setStat("stat-frames-in", num(st.frames_in), num(st.frames_in));
  setStat("stat-frames-out", num(st.frames_out), num(st.frames_out));
  setStat("stat-dropped", num(st.frames_dropped), num(st.frames_dropped));
  setStat("stat-hidden-whole", num(st.frames_hidden_whole), num(st.frames_hidden_whole));
  setStat("stat-processing-ms", num(st.processing_ms), fixed(st.processing_ms, 1));
  setStat("stat-inference-ms", num(st.inference_ms), fixed(st.inference_ms, 1));
  const size = num(st.width) && num(st.height) ? `${st.width}x${st.height}` : null;
  setStat("stat-server-resolution", size, size && size.replace("x", " × "));
  setStat("stat-provider", st.provider || null, st.provider || null);
}

function renderBrowserStats(s, report) {
  let inbound = null;
  let transport = null;
  let pair = null;
  report.forEach((r) => {
    if (r.type === "inbound-rtp" && (r.kind === "video" || r.mediaType === "video")) inbound = r;
    else if (r.type === "transport" && r.selectedCandidatePairId) transport = r;
  });
  if (transport) pair = report.get(transport.selectedCandidatePairId) || null;
  if (!pair) {
    report.forEach((r) => {
      if (r.type === "candidate-pair" && r.state === "succeeded" && (r.nominated || r.selected)) pair = r;
    });
  }

  let fps = null;
  let decoded = null;
  if (inbound) {
    decoded = num(inbound.framesDecoded);
    fps = num(inbound.framesPerSecond);
    if (fps === null && decoded !== null && s.prevDecoded) {
      const dt = (inbound.timestamp - s.prevDecoded.timestamp) / 1000;
      if (dt > 0) fps = (decoded - s.prevDecoded.frames) / dt;
    }
    if (decoded !== null) s.prevDecoded = { frames: decoded, timestamp: inbound.timestamp };
  }
  setStat("stat-fps-received", fps, fixed(fps, 1));
  setStat("stat-frames-decoded", decoded, decoded);

  let w = inbound ? num(inbound.frameWidth) : null;
  let h = inbound ? num(inbound.frameHeight) : null;
  if (!w || !h) {
    w = els.output.videoWidth || null;
    h = els.output.videoHeight || null;
  }
  const size = w && h ? `${w}x${h}` : null;
  setStat("stat-resolution", size, size && size.replace("x", " × "));

  const rtt = pair ? num(pair.currentRoundTripTime) : null;
  const rttMs = rtt === null ? null : Math.round(rtt * 10000) / 10;
  setStat("stat-rtt", rttMs, fixed(rttMs, 1));
}

async function pollStats(s) {
  if (s.cancelled || s.statsBusy || !s.pc) return;
  s.statsBusy = true;
  try {
    const [server, report] = await Promise.allSettled([getSession(s.id), s.pc.getStats()]);
    if (s.cancelled) return;
    if (server.status === "fulfilled" && server.value) {
      renderServerStats(server.value);
    } else if (server.status === "rejected" && server.reason instanceof ApiError
               && server.reason.kind === "http" && server.reason.status === 404) {
      fail(s, { key: "err.sessionGone" });
      return;
    }
    if (report.status === "fulfilled") renderBrowserStats(s, report.value);
  } finally {
    s.statsBusy = false;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Recording and snapshots: only the anonymized stream that came back from the server

function renderCaptureButtons() {
  const live = state === "live" && current !== null;
  els.recordStart.disabled = !live || recording !== null;
  els.recordStop.disabled = recording === null;
  els.snapshot.disabled = !live;
  els.body.dataset.recording = recording ? "true" : "false";
  els.recordStatus.hidden = recording === null;
  renderDownloads();
}

function renderDownloads() {
  for (const [kind, el] of [["record", els.recordDownload], ["snapshot", els.snapshotDownload]]) {
    const d = downloads[kind];
    el.hidden = !d;
    if (!d) continue;
    el.textContent = kind === "record" ? t("record.download", { size: formatBytes(d.size) }) : t("snapshot.download");
  }
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function stamp() {
  const d = new Date();
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

function setDownload(kind, blob, filename) {
  const previous = downloads[kind];
  if (previous) URL.revokeObjectURL(previous.url);
  const url = URL.createObjectURL(blob);
  downloads[kind] = { url, size: blob.size };
  const el = kind === "record" ? els.recordDownload : els.snapshotDownload;
  el.href = url;
  el.download = filename;
  el.dataset.size = String(blob.size);
  el.type = blob.type;
  renderDownloads();
}

function pickMime() {
  const candidates = ["video/webm;codecs=vp9", "video/webm;codecs=vp8", "video/webm"];
  return candidates.find((m) => MediaRecorder.isTypeSupported(m)) || "";
}

function renderRecordTime() {
  if (!recording) return;
  const secs = Math.floor((performance.now() - recording.startedAt) / 1000);
  const time = `${String(Math.floor(secs / 60)).padStart(2, "0")}:${String(secs % 60).padStart(2, "0")}`;
  els.recordStatus.textContent = `● ${t("record.recording", { time })}`;
}

function startRecording() {
  const s = current;
  if (!s || state !== "live" || recording) return;
  showCaptureMessage(null);
  if (typeof window.MediaRecorder !== "function") {
    showCaptureMessage({ key: "record.unsupported" });
    return;
  }
  const tracks = s.remoteStream.getTracks().filter((tr) => tr.readyState === "live");
  if (!tracks.some((tr) => tr.kind === "video")) {
    showCaptureMessage({ key: "record.failed", vars: { detail: t("err.noVideo") } });
    return;
  }
  const mime = pickMime();
  let recorder;
  try {
    recorder = new MediaRecorder(new MediaStream(tracks), mime ? { mimeType: mime } : undefined);
  } catch (err) {
    showCaptureMessage({ key: "record.failed", vars: { detail: detailOf(err) } });
    return;
  }
  const rec = { recorder, chunks: [], startedAt: performance.now(), timer: null, mime: recorder.mimeType || mime };
  recorder.addEventListener("dataavailable", (ev) => { if (ev.data && ev.data.size) rec.chunks.push(ev.data); });
  recorder.addEventListener("stop", () => {
    const type = (rec.mime || "video/webm").split(";")[0];
    const blob = new Blob(rec.chunks, { type });
    if (blob.size) setDownload("record", blob, `face-streamer-${stamp()}.webm`);
  });
  recorder.addEventListener("error", (ev) => {
    showCaptureMessage({ key: "record.failed", vars: { detail: detailOf(ev.error || ev) } });
  });
  recorder.start(1000);
  rec.timer = setInterval(renderRecordTime, 500);
  recording = rec;
  renderRecordTime();
  renderCaptureButtons();
}

function stopRecording() {
  const rec = recording;
  if (!rec) return;
  recording = null;
  clearInterval(rec.timer);
  if (rec.recorder.state !== "inactive") rec.recorder.stop();
  renderCaptureButtons();
}

function takeSnapshot() {
  showCaptureMessage(null);
  const v = els.output;
  if (state !== "live" || !v.videoWidth || !v.videoHeight) {
    showCaptureMessage({ key: "snapshot.failed", vars: { detail: t("err.noVideo") } });
    return;
  }
  const canvas = document.createElement("canvas");
  canvas.width = v.videoWidth;
  canvas.height = v.videoHeight;
  canvas.getContext("2d").drawImage(v, 0, 0, canvas.width, canvas.height);
  canvas.toBlob((blob) => {
    if (!blob) {
      showCaptureMessage({ key: "snapshot.failed", vars: { detail: "toBlob" } });
      return;
    }
    setDownload("snapshot", blob, `face-streamer-${stamp()}.png`);
  }, "image/png");
}

// ---------------------------------------------------------------------------------------------------------------
// Wiring

function init() {
  renderLanguages();
  translatePage();
  renderModes();
  renderCameras();
  renderStrength();
  els.showRaw.checked = false; // never restored from a previous visit: the raw preview is opt-in every time
  renderRawPreview();
  setState("idle");

  els.start.addEventListener("click", () => { start(); });
  els.stop.addEventListener("click", stop);
  els.recordStart.addEventListener("click", startRecording);
  els.recordStop.addEventListener("click", stopRecording);
  els.snapshot.addEventListener("click", takeSnapshot);
  els.showRaw.addEventListener("change", renderRawPreview);
  els.lang.addEventListener("change", () => setLang(els.lang.value));

  els.form.addEventListener("submit", (ev) => ev.preventDefault());
  els.mode.addEventListener("change", () => onOptionChanged("mode"));
  els.strength.addEventListener("input", () => { renderStrength(); onOptionChanged("strength", { debounce: true }); });
  els.strength.addEventListener("change", () => { renderStrength(); onOptionChanged("strength"); });
  els.padding.addEventListener("change", () => onOptionChanged("padding"));
  els.threshold.addEventListener("change", () => onOptionChanged("threshold"));
  els.debug.addEventListener("change", () => onOptionChanged("debug"));
  els.ellipse.addEventListener("change", () => onOptionChanged("ellipse"));
  els.camera.addEventListener("change", () => { if (current && current.localStream) switchCamera(); });
  els.resolution.addEventListener("change", () => { if (current && current.localStream) changeResolution(); });

  if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
    navigator.mediaDevices.addEventListener("devicechange", refreshCameras);
  }
  window.addEventListener("pagehide", () => {
    if (current) teardown(current);
  });

  onLangChange(() => {
    els.lang.value = getLang();
    renderConnStatus();
    renderModes();
    renderCameras();
    renderMessage(els.error, messages.error);
    renderMessage(els.settingsError, messages.settings);
    renderMessage(els.captureError, messages.capture);
    renderRecordTime();
    renderDownloads();
  });

  startHealthPolling();
  initUpload(); // before initCameras: the Upload tab reads #upload in the address before the Cameras view resets it
  initCameras();
  refreshCameras();
  getConfig().then(applyConfig).catch(() => {}); // defaults and modes; Start asks again and reports errors
}

init();
