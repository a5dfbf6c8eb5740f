// The local camera of the webcam view: the device and resolution choices (#camera, #resolution), opening it, switching
// it while live, and the opt-in raw preview (#show-raw), which shows the camera only on this device.

import { detailOf } from "./api.js";
import { $ } from "./dom.js";
import { onLangChange, t } from "./i18n.js";
import { showSettingsMessage } from "./settings.js";

const els = {
  camera: $("camera"),
  resolution: $("resolution"),
  showRaw: $("show-raw"),
  rawContainer: $("raw-container"),
  rawPreview: $("raw-preview"),
};

let cameras = []; // MediaDeviceInfo of kind videoinput

export class CameraError extends Error {
  constructor(cause) {
    super(cause && cause.message ? cause.message : String(cause));
    this.name = "CameraError";
    this.cause = cause;
  }
}

export function describeCameraError(err) {
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

function describeCamera(err) {
  const msg = describeCameraError(new CameraError(err));
  return t(msg.key, msg.vars);
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

export async function refreshCameras() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  try {
    const devices = await navigator.mediaDevices.enumerateDevices();
    cameras = devices.filter((d) => d.kind === "videoinput");
  } catch {
    cameras = [];
  }
  renderCameras();
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

export async function openCamera(withAudio) {
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

// `stream`: the camera's stream while a session has it open, else null.
export function renderRawPreview(stream) {
  els.rawContainer.hidden = !els.showRaw.checked;
  if (els.showRaw.checked && stream) {
    const tracks = stream.getVideoTracks();
    const attached = els.rawPreview.srcObject;
    if (!attached || attached.getVideoTracks()[0] !== tracks[0]) els.rawPreview.srcObject = new MediaStream(tracks);
  } else {
    els.rawPreview.srcObject = null;
  }
}

// `s` is the session record of session.js: its camera stream and the sender that carries the camera's video.
async function switchCamera(s) {
  if (!s.localStream || !s.videoSender) return;
  const old = s.localStream.getVideoTracks()[0];
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: videoConstraints(), audio: false });
  } catch (err) {
    if (!s.cancelled) showSettingsMessage({ key: "settings.cameraSwitchFailed", vars: { detail: describeCamera(err) } });
    return;
  }
  const track = stream.getVideoTracks()[0];
  if (s.cancelled) {
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
  if (s.cancelled) { // stopped while the track was being swapped: teardown stopped the old track, not this one
    track.stop();
    return;
  }
  if (old) {
    s.localStream.removeTrack(old);
    old.stop();
  }
  s.localStream.addTrack(track);
  showSettingsMessage(null);
  renderRawPreview(s.localStream);
}

async function changeResolution(s) {
  const track = s.localStream.getVideoTracks()[0];
  if (!track) return;
  const { width, height } = resolutionOf();
  try {
    await track.applyConstraints({ width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: 30 } });
    showSettingsMessage(null);
  } catch (err) {
    showSettingsMessage({ key: "settings.cameraSwitchFailed", vars: { detail: describeCamera(err) } });
  }
}

// current(): the session being started or live, or null.
export function initWebcam(current) {
  const localStream = () => (current() ? current().localStream : null);
  renderCameras();
  els.showRaw.checked = false; // never restored from a previous visit: the raw preview is opt-in every time
  renderRawPreview(null);
  els.showRaw.addEventListener("change", () => renderRawPreview(localStream()));
  els.camera.addEventListener("change", () => { if (localStream()) switchCamera(current()); });
  els.resolution.addEventListener("change", () => { if (localStream()) changeResolution(current()); });
  if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
    navigator.mediaDevices.addEventListener("devicechange", refreshCameras);
  }
  onLangChange(renderCameras);
}
