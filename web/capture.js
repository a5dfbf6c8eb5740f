// Recording and snapshots of the webcam view: only the anonymized stream that came back from the server, never the
// camera. <body data-recording="true|false">; the results are offered as links (#record-download,
// #snapshot-download) to blob: URLs.

import { detailOf } from "./api.js";
import { $, messageSlot } from "./dom.js";
import { formatBytes, stamp } from "./format.js";
import { onLangChange, t } from "./i18n.js";

const els = {
  body: document.body,
  output: $("output"),
  recordStart: $("record-start"),
  recordStop: $("record-stop"),
  recordStatus: $("record-status"),
  recordDownload: $("record-download"),
  snapshot: $("snapshot"),
  snapshotDownload: $("snapshot-download"),
};

let source = null; // the anonymized stream while the session is live, else null
let recording = null; // {recorder, chunks, startedAt, timer, mime}
const downloads = { record: null, snapshot: null }; // {url, size}

export const showCaptureMessage = messageSlot($("capture-error"));

// The session went live with this stream from the server (null: it ended; a recording stops).
export function setCaptureSource(stream) {
  source = stream;
  if (!source && recording) stopRecording();
  renderCaptureButtons();
}

function renderCaptureButtons() {
  els.recordStart.disabled = !source || recording !== null;
  els.recordStop.disabled = recording === null;
  els.snapshot.disabled = !source;
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
  if (!source || recording) return;
  showCaptureMessage(null);
  if (typeof window.MediaRecorder !== "function") {
    showCaptureMessage({ key: "record.unsupported" });
    return;
  }
  const tracks = source.getTracks().filter((tr) => tr.readyState === "live");
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
  if (!source || !v.videoWidth || !v.videoHeight) {
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

export function initCapture() {
  renderCaptureButtons();
  els.recordStart.addEventListener("click", startRecording);
  els.recordStop.addEventListener("click", stopRecording);
  els.snapshot.addEventListener("click", takeSnapshot);
  onLangChange(() => {
    renderRecordTime();
    renderDownloads();
  });
}
