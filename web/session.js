// The webcam view's WebRTC session and its state machine (docs/http-api.md): GET /config, the camera, an offer with
// every ICE candidate in it (POST /offer), then the anonymized video back in #output; DELETE /sessions/{id} when it
// ends. <body data-state="idle|connecting|live|error" data-connection="<pc.connectionState>" data-session="<id>">.
//
// The session record (see start()) is shared with settings.js, stats.js and webcam.js. It is the current session
// from start() until teardown(), which sets s.cancelled: `s.cancelled` is true exactly when s is no longer current.

import { ApiError, deleteSession, detailOf, getConfig, postOffer } from "./api.js";
import { setCaptureSource, showCaptureMessage } from "./capture.js";
import { $, messageSlot } from "./dom.js";
import { onLangChange, t } from "./i18n.js";
import { applyConfig, readOptions, sendChangesSince, showSettingsMessage } from "./settings.js";
import { followStats, resetStats, setStat } from "./stats.js";
import { checkHealth } from "./status.js";
import { closeAfterDelete, waitForIceGathering, watchConnection } from "./webrtc.js";
import { CameraError, describeCameraError, openCamera, refreshCameras, renderRawPreview } from "./webcam.js";

const CANCELLED = Symbol("cancelled");

const els = {
  body: document.body,
  output: $("output"),
  placeholder: $("output-placeholder"),
  start: $("start"),
  stop: $("stop"),
  connStatus: $("connection-status"),
};

let state = "idle";
let current = null; // the session being started or live; see start()

const showError = messageSlot($("error"));

export function currentSession() {
  return current;
}

function setState(next) {
  if (next !== state && next !== "connecting") checkHealth(); // the header's session count follows at once
  state = next;
  els.body.dataset.state = next;
  const busy = next === "connecting" || next === "live";
  els.start.disabled = busy;
  els.stop.disabled = !busy;
  els.placeholder.hidden = next === "live";
  renderConnStatus();
}

function renderConnStatus() {
  const text = t(`state.${state}`);
  if (els.connStatus.textContent !== text) els.connStatus.textContent = text; // role=status: announce changes only
  els.connStatus.dataset.state = state;
  els.placeholder.textContent = t(state === "connecting" ? "output.connecting" : "output.idle");
}

function describe(err) {
  if (err instanceof CameraError) return describeCameraError(err);
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
    id: null, config: null, applied: null, connection: null, statsTimer: null, statsBusy: false,
    prevDecoded: null, settingsQueue: Promise.resolve(),
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
    renderRawPreview(s.localStream);

    // 3. The peer connection, with exactly the server's ICE servers.
    const iceServers = Array.isArray(config.iceServers) ? config.iceServers : [];
    const pc = new RTCPeerConnection({ iceServers });
    s.pc = pc;
    pc.addEventListener("track", (ev) => onTrack(s, ev));
    s.connection = watchConnection(pc, () => s.cancelled, (cs) => onConnectionState(s, cs),
      (reason, vars) => fail(s, { key: `err.${reason}`, vars }));

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
    await waitForIceGathering(pc);
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
    s.statsTimer = followStats(s, sessionGone);
    sendChangesSince(s, options);
    s.connection.answered();
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

function onConnectionState(s, cs) {
  els.body.dataset.connection = cs;
  if (cs === "connected" && state !== "live") {
    setState("live");
    setCaptureSource(s.remoteStream);
  }
}

function fail(s, msg) {
  if (s !== current) return;
  teardown(s);
  showError(msg);
  setState("error");
}

// The server no longer knows session s (404): it ended there.
export function sessionGone(s) {
  fail(s, { key: "err.sessionGone" });
}

function stop() {
  const s = current;
  if (!s) return;
  teardown(s);
  setState("idle");
}

// The camera goes off and the picture goes at once; the peer connection closes after the server's DELETE answer.
function teardown(s, { leaving = false } = {}) {
  s.cancelled = true;
  if (current === s) current = null;
  if (s.connection) s.connection.stop();
  clearInterval(s.statsTimer);
  setCaptureSource(null);
  if (s.localStream) for (const track of s.localStream.getTracks()) track.stop();
  for (const track of s.remoteStream.getTracks()) track.stop();
  els.output.srcObject = null;
  renderRawPreview(null);
  // best effort: the server also closes it when ICE fails
  const deleted = s.id ? deleteSession(s.id).catch(() => {}) : null;
  closeAfterDelete(s.pc, deleted, leaving);
  delete els.body.dataset.session;
  els.body.dataset.connection = "closed";
}

export function initSession() {
  setState("idle");
  els.start.addEventListener("click", () => { start(); });
  els.stop.addEventListener("click", stop);
  window.addEventListener("pagehide", () => {
    if (current) teardown(current, { leaving: true });
  });
  onLangChange(renderConnStatus);
}
