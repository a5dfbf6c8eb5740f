// The Upload view: photos and videos anonymized by the server as jobs (docs/http-api.md, "Upload jobs"). Each file
// is sent with POST /jobs (multipart: mode, strength, file; XMLHttpRequest for upload progress), then followed with
// GET /jobs/{id}/events (Server-Sent Events, a `progress` event with the job object on every change). A finished
// job shows a preview of the result and a download link; its button cancels it or removes it (DELETE /jobs/{id}).
//
// Hooks for tests:
//   #tab-upload (role=tab) and <body data-view="upload">; #view-upload is the panel, /#upload opens it.
//   #drop-zone (data-dragging="true|false"), #upload-input (type=file, multiple), #upload-mode, #upload-strength,
//   #upload-audio (keep the sound, checked by default), #upload-audit (ask for the audit trail).
//   #job-list holds one <li class="job"> per file, with data-file (the file's name), data-kind="image|video" and
//   data-state="uploading|queued|running|done|failed|cancelled"; data-job-id="ID" once the server accepted it.
//   Inside: a <progress> (max 100; no value while the amount is unknown) with data-percent, .job-status (bytes or
//   frames, frames/s, time left), .job-error (role=alert), .job-preview (an <img> or <video> of the result),
//   a.job-download (href /jobs/ID/result, with a download name), a.job-audit (href /jobs/ID/audit, when the job was
//   asked for its audit trail), button.job-cancel (Cancel, then Remove) and
//   button.job-retry (after a failed upload that may work later: 429, 503, a lost connection).
//
// The Webcam and Cameras views are switched by cameras.js; this module adds the third tab beside them without
// changing how they work (see "Views" below).

import { getLang, onLangChange, t } from "./i18n.js";
import {
  ApiError, deleteJob, detailOf, getConfig, getJob, jobAuditUrl, jobEventsUrl, jobResultUrl, postJob,
} from "./api.js";
import { $, element, labelOf, renderModes, renderStrength, setText } from "./dom.js";
import { num } from "./format.js";

const FALLBACK_MODES = ["mosaic", "blur", "solid"];
const IMAGE_EXTENSIONS = ["jpg", "jpeg", "png", "webp", "bmp"];
const VIDEO_EXTENSIONS = ["mp4", "mov", "m4v", "mkv", "webm", "avi", "mpg", "mpeg", "ts", "3gp"];
const PARALLEL_UPLOADS = 2;
const TERMINAL = ["done", "failed", "cancelled"];
const ACTIVE = ["uploading", "queued", "running"];
const EVENTS_RETRY_MS = 1000;
const EVENTS_MAX_RETRIES = 30;

const els = {
  body: document.body,
  tab: $("tab-upload"),
  count: $("tab-upload-count"),
  view: $("view-upload"),
  dropZone: $("drop-zone"),
  input: $("upload-input"),
  mode: $("upload-mode"),
  strength: $("upload-strength"),
  strengthValue: $("upload-strength-value"),
  audio: $("upload-audio"),
  audit: $("upload-audit"),
  list: $("job-list"),
  empty: $("upload-empty"),
};

let shown = false;
let modes = FALLBACK_MODES.slice();
const userTouched = new Set(); // "mode", "strength": the server's defaults do not override a choice
let nextKey = 1;
const entries = new Map(); // local key -> entry; see addFile()

function numberFormat(value, digits = 0) {
  return new Intl.NumberFormat(getLang(), { maximumFractionDigits: digits, minimumFractionDigits: digits })
    .format(value);
}

function formatBytes(n) {
  if (n < 1024) return t("upload.bytes", { n: numberFormat(n) });
  if (n < 1024 * 1024) return t("upload.kib", { n: numberFormat(n / 1024) });
  if (n < 1024 * 1024 * 1024) return t("upload.mib", { n: numberFormat(n / 1024 / 1024, 1) });
  return t("upload.gib", { n: numberFormat(n / 1024 / 1024 / 1024, 2) });
}

function formatDuration(seconds) {
  const s = Math.max(1, Math.ceil(seconds));
  if (s < 60) return t("upload.seconds", { s });
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (h) return t("upload.hoursMinutes", { h, m });
  return t("upload.minutesSeconds", { m, s: s % 60 });
}

function extensionOf(name) {
  const dot = name.lastIndexOf(".");
  return dot > 0 ? name.slice(dot + 1).toLowerCase() : "";
}

function kindOf(file) {
  const ext = extensionOf(file.name);
  if (IMAGE_EXTENSIONS.includes(ext)) return "image";
  if (VIDEO_EXTENSIONS.includes(ext)) return "video";
  return null;
}

// The name the browser saves the result under (the server's Content-Disposition says much the same).
function resultName(entry) {
  const name = entry.file.name;
  const dot = name.lastIndexOf(".");
  const stem = (dot > 0 ? name.slice(0, dot) : name).replace(/[\\/:*?"<>|\u0000-\u001f]+/g, "_") || "upload";
  const ext = entry.kind === "video" ? "mp4" : (extensionOf(name) === "bmp" ? "png" : extensionOf(name) || "jpg");
  return `${stem}-anonymized.${ext}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Views: a third tab beside Webcam and Cameras. cameras.js owns those two (setView on their tabs' clicks, on
// hashchange, and on arrow keys); this module shows the Upload panel and hides theirs, and gives the view back when
// cameras.js switches (it always writes <body data-view>, which is watched here). Listeners here are added before
// cameras.js adds its own, so that #upload in the address and the arrow keys across three tabs are handled here.

function tabs() {
  return [...document.querySelectorAll('.tabs [role="tab"]')];
}

function showUpload({ focus = false } = {}) {
  shown = true;
  els.body.dataset.view = "upload";
  for (const tab of tabs()) {
    const on = tab === els.tab;
    tab.setAttribute("aria-selected", on ? "true" : "false");
    tab.tabIndex = on ? 0 : -1;
  }
  for (const panel of document.querySelectorAll('[role="tabpanel"]')) panel.hidden = panel !== els.view;
  if (window.location.hash !== "#upload") window.history.replaceState(null, "", "#upload");
  if (focus) els.tab.focus();
}

function hideUpload() {
  shown = false;
  els.view.hidden = true;
  els.tab.setAttribute("aria-selected", "false");
  els.tab.tabIndex = -1;
}

function onTabKey(ev) {
  const all = tabs();
  const i = all.findIndex((tab) => tab.getAttribute("aria-selected") === "true");
  let next = null;
  if (ev.key === "ArrowRight") next = all[(i + 1) % all.length];
  else if (ev.key === "ArrowLeft") next = all[(i + all.length - 1) % all.length];
  else if (ev.key === "Home") next = all[0];
  else if (ev.key === "End") next = all[all.length - 1];
  if (!next) return;
  ev.preventDefault();
  ev.stopImmediatePropagation(); // cameras.js knows only two tabs
  if (next === els.tab) {
    showUpload({ focus: true });
  } else {
    next.click(); // cameras.js switches to that view
    next.focus();
  }
}

function initView() {
  const openAtStart = window.location.hash === "#upload"; // read before cameras.js resets the address
  els.tab.addEventListener("click", () => showUpload());
  document.querySelector(".tabs").addEventListener("keydown", onTabKey);
  window.addEventListener("hashchange", (ev) => {
    if (window.location.hash === "#upload") {
      ev.stopImmediatePropagation(); // cameras.js would take any other address for the webcam view
      showUpload();
    }
  });
  new MutationObserver(() => {
    if (shown && els.body.dataset.view !== "upload") hideUpload();
  }).observe(els.body, { attributes: true, attributeFilter: ["data-view"] });
  if (openAtStart) queueMicrotask(() => showUpload()); // after cameras.js has set up its default view
}

// ---------------------------------------------------------------------------------------------------------------
// Settings for the next files

function applyConfig(config) {
  if (Array.isArray(config.modes) && config.modes.length) {
    modes = config.modes.map(String);
    renderModes(els.mode, modes);
  }
  const defaults = config.defaults && typeof config.defaults === "object" ? config.defaults : {};
  if (!userTouched.has("mode") && modes.includes(defaults.mode)) els.mode.value = defaults.mode;
  if (!userTouched.has("strength") && num(defaults.strength) !== null) {
    els.strength.value = String(defaults.strength);
    renderStrength(els.strength, els.strengthValue);
  }
}

function currentSettings() {
  const strength = Number(els.strength.value);
  return { mode: els.mode.value || "mosaic", strength: Number.isFinite(strength) ? strength : 0.5,
    audio: els.audio.checked ? "keep" : "drop", audit: els.audit.checked };
}

// ---------------------------------------------------------------------------------------------------------------
// Jobs
//
// entry: {key, file, kind, settings, state, id, job (the server's last job object), loaded, total (upload bytes),
//         upload ({abort} while sending), events (EventSource), eventRetries, error ({key, vars} | null),
//         retry (true when sending again may work), previewFailed, removing, card (its elements)}

function addFiles(files) {
  for (const file of files) addFile(file);
  pump();
}

function addFile(file) {
  const entry = {
    key: String(nextKey++), file, kind: kindOf(file) || "video", settings: currentSettings(), state: "uploading",
    id: null, job: null, loaded: 0, total: file.size, upload: null, waiting: true, events: null, eventRetries: 0,
    error: null, retry: false, previewFailed: false, removing: false, card: null,
  };
  entries.set(entry.key, entry);
  entry.card = makeCard(entry);
  els.list.append(entry.card.li);
  if (kindOf(file) === null) {
    fail(entry, { key: "upload.err.type", vars: { name: file.name } });
  } else if (file.size === 0) {
    fail(entry, { key: "upload.err.empty" });
  }
  render(entry);
}

// Starts waiting uploads, PARALLEL_UPLOADS at a time, in the order the files were given.
function pump() {
  let sending = [...entries.values()].filter((e) => e.state === "uploading" && !e.waiting).length;
  for (const entry of entries.values()) {
    if (sending >= PARALLEL_UPLOADS) break;
    if (entry.state === "uploading" && entry.waiting) {
      sending += 1;
      send(entry);
    }
  }
  renderCount();
}

async function send(entry) {
  entry.waiting = false;
  entry.loaded = 0;
  entry.error = null;
  entry.retry = false;
  const upload = postJob(entry.file, entry.settings, (loaded, total) => {
    entry.loaded = loaded;
    entry.total = total || entry.file.size;
    render(entry);
  });
  entry.upload = upload;
  render(entry);
  try {
    const job = await upload.promise;
    entry.upload = null;
    if (entry.state !== "uploading") { // cancelled or removed while the answer was on its way
      deleteJob(job.id).catch(() => {});
      return;
    }
    entry.id = job.id;
    applyJob(entry, job);
    if (!TERMINAL.includes(entry.state)) follow(entry);
  } catch (err) {
    entry.upload = null;
    if (err && err.name === "AbortError") return; // cancel() has set the state
    uploadFailed(entry, err);
  } finally {
    pump();
  }
}

// The server's refusals of an upload by status: [message, message without Retry-After, whether sending again may
// work]; any other status is "upload.err.http", worth a retry from 500 on.
const REFUSALS = {
  400: ["upload.err.rejected"],
  413: ["upload.err.tooLarge"],
  415: ["upload.err.unsupported"],
  429: ["upload.err.queueFull", "upload.err.queueFullNoRetry", true],
  503: ["upload.err.busy", "upload.err.busyNoRetry", true],
};

function uploadFailed(entry, err) {
  let msg;
  let retry = false;
  if (err instanceof ApiError && err.kind === "http") {
    const vars = { status: err.status, detail: err.detail, seconds: err.retryAfter };
    const [key, keyNoRetry = key, retryable = err.status >= 500] = REFUSALS[err.status] || ["upload.err.http"];
    msg = { key: err.retryAfter !== null ? key : keyNoRetry, vars };
    retry = retryable;
  } else if (err instanceof ApiError && err.kind === "format") {
    msg = { key: "upload.err.badAnswer", vars: { detail: err.detail } };
  } else {
    msg = { key: "upload.err.network", vars: { detail: detailOf(err) } };
    retry = true;
  }
  fail(entry, msg, retry);
}

function fail(entry, msg, retry = false) {
  entry.state = "failed";
  entry.error = msg;
  entry.retry = retry;
  closeEvents(entry);
  render(entry);
  renderCount();
}

function applyJob(entry, job) {
  if (!job || typeof job !== "object") return;
  entry.job = job;
  if (typeof job.kind === "string") entry.kind = job.kind;
  if (typeof job.state === "string" && entry.state !== "cancelled") entry.state = job.state;
  if (entry.state === "failed") {
    entry.error = { key: "upload.err.failed", vars: { error: job.error || t("upload.err.unknown") } };
  }
  if (TERMINAL.includes(entry.state)) closeEvents(entry);
  render(entry);
  renderCount();
}

// Follows the job over Server-Sent Events. The server ends the stream after the job ends (the stream is closed here
// first, so EventSource does not reconnect); on any other break the job is asked for once and followed again.
function follow(entry) {
  closeEvents(entry);
  const events = new EventSource(jobEventsUrl(entry.id));
  entry.events = events;
  events.addEventListener("progress", (ev) => {
    let job;
    try {
      job = JSON.parse(ev.data);
    } catch {
      return;
    }
    entry.eventRetries = 0;
    applyJob(entry, job);
  });
  events.addEventListener("error", () => {
    if (entry.events !== events) return;
    closeEvents(entry);
    if (TERMINAL.includes(entry.state) || entry.removing) return;
    recheck(entry);
  });
}

async function recheck(entry) {
  try {
    const job = await getJob(entry.id);
    applyJob(entry, job);
    if (TERMINAL.includes(entry.state) || entry.removing) return;
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      if (entry.state !== "cancelled") fail(entry, { key: "upload.err.gone" });
      return;
    }
  }
  entry.eventRetries += 1;
  if (entry.eventRetries > EVENTS_MAX_RETRIES) {
    fail(entry, { key: "upload.err.lost" }, false);
    return;
  }
  setTimeout(() => {
    if (!TERMINAL.includes(entry.state) && !entry.removing && entries.has(entry.key)) follow(entry);
  }, EVENTS_RETRY_MS);
}

function closeEvents(entry) {
  if (entry.events) {
    entry.events.close();
    entry.events = null;
  }
}

// Cancel while the job works (the upload is aborted, or DELETE /jobs/{id}); Remove once it has ended (DELETE too,
// so that the server frees the result at once, then the card goes).
async function cancelOrRemove(entry) {
  if (entry.removing) return;
  const active = ACTIVE.includes(entry.state);
  if (entry.state === "uploading" && !entry.id) {
    entry.state = "cancelled";
    entry.waiting = false;
    if (entry.upload) entry.upload.abort();
    entry.upload = null;
    render(entry);
    pump();
    return;
  }
  if (!active && (!entry.id || entry.state === "cancelled")) {
    removeCard(entry);
    return;
  }
  entry.removing = true;
  render(entry);
  try {
    await deleteJob(entry.id);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) {
      entry.removing = false;
      entry.error = { key: "upload.err.cancel", vars: { detail: detailOf(err) } };
      render(entry);
      return;
    }
  }
  closeEvents(entry);
  entry.removing = false;
  if (active) {
    entry.state = "cancelled";
    entry.error = null;
    render(entry);
    renderCount();
  } else {
    removeCard(entry);
  }
}

function removeCard(entry) {
  closeEvents(entry);
  if (entry.upload) entry.upload.abort();
  entries.delete(entry.key);
  entry.card.li.remove();
  renderCount();
}

function retry(entry) {
  if (entry.state !== "failed" || !entry.retry) return;
  entry.state = "uploading";
  entry.waiting = true;
  entry.error = null;
  entry.retry = false;
  entry.id = null;
  entry.job = null;
  render(entry);
  pump();
}

// ---------------------------------------------------------------------------------------------------------------
// Rendering

function makeCard(entry) {
  const li = element("li", "job", { "data-file": entry.file.name, "data-kind": entry.kind });
  const head = element("div", "job-head");
  const name = element("h3", "job-name");
  name.textContent = entry.file.name;
  name.title = entry.file.name; // long names are cut short with an ellipsis
  const badge = element("span", "badge job-state");
  head.append(name, badge);
  const meta = element("p", "job-meta");
  const progress = element("progress", "job-progress", { max: "100" });
  const status = element("p", "job-status", { role: "status" });
  const error = element("p", "job-error", { role: "alert" });
  error.hidden = true;
  const preview = element("div", "job-preview");
  preview.hidden = true;
  const previewNote = element("p", "note job-preview-note");
  previewNote.hidden = true;
  const bar = element("div", "toolbar");
  const download = element("a", "button-link job-download");
  download.hidden = true;
  const audit = element("a", "button-link job-audit");
  audit.hidden = true;
  const retryButton = element("button", "job-retry", { type: "button" });
  retryButton.hidden = true;
  const cancel = element("button", "job-cancel", { type: "button" });
  bar.append(download, audit, retryButton, cancel);
  li.append(head, meta, progress, status, error, preview, previewNote, bar);
  cancel.addEventListener("click", () => cancelOrRemove(entry));
  retryButton.addEventListener("click", () => retry(entry));
  return { li, name, badge, meta, progress, status, error, preview, previewNote, download, audit, retryButton,
    cancel, media: null };
}

function progressOf(entry) {
  const job = entry.job || {};
  if (entry.state === "uploading") {
    if (entry.waiting) return { percent: 0, text: t("upload.waiting") };
    const total = entry.total || entry.file.size || 1;
    const percent = Math.min(100, (100 * entry.loaded) / total);
    return {
      percent,
      text: t("upload.uploading", {
        percent: numberFormat(percent), loaded: formatBytes(entry.loaded), total: formatBytes(total),
      }),
    };
  }
  if (entry.state === "queued") return { percent: null, text: t("upload.queued") };
  if (entry.state === "running") {
    const done = num(job.frames_done) ?? 0;
    const total = num(job.frames_total);
    const parts = [];
    if (entry.kind === "image") {
      parts.push(t("upload.processingImage"));
    } else if (!done && !total) {
      parts.push(t("upload.starting")); // the first frame is on its way
    } else if (total) {
      parts.push(t("upload.frames", { done: numberFormat(done), total: numberFormat(total) }));
    } else {
      parts.push(t("upload.framesNoTotal", { done: numberFormat(done) }));
    }
    if (num(job.fps) && job.fps > 0) parts.push(t("upload.fps", { fps: numberFormat(job.fps, 1) }));
    if (num(job.eta_s) !== null) parts.push(t("upload.eta", { time: formatDuration(job.eta_s) }));
    return { percent: num(job.percent), text: parts.join(" · ") };
  }
  if (entry.state === "done") {
    const frames = num(job.frames_done);
    const text = entry.kind === "video" && frames !== null
      ? t("upload.doneVideo", { frames: numberFormat(frames) })
      : t("upload.doneImage");
    return { percent: 100, text };
  }
  if (entry.state === "cancelled") return { percent: null, text: t("upload.cancelledText"), hide: true };
  return { percent: null, text: "", hide: true };
}

function render(entry) {
  const c = entry.card;
  if (!c) return;
  c.li.dataset.state = entry.state;
  c.li.dataset.kind = entry.kind;
  if (entry.id) c.li.dataset.jobId = entry.id;
  else delete c.li.dataset.jobId;
  setText(c.badge, t(`upload.state.${entry.state}`));
  c.badge.dataset.state = entry.state;
  const settings = t("upload.settingsUsed", {
    mode: labelOf("mode", entry.settings.mode), strength: entry.settings.strength.toFixed(2),
  });
  setText(c.meta, `${formatBytes(entry.file.size)} · ${settings}`);

  const { percent, text, hide } = progressOf(entry);
  c.progress.hidden = Boolean(hide);
  if (percent === null) {
    c.progress.removeAttribute("value"); // indeterminate
    delete c.progress.dataset.percent;
    c.progress.setAttribute("aria-valuetext", text || t(`upload.state.${entry.state}`));
  } else {
    const rounded = Math.round(percent * 10) / 10;
    c.progress.value = rounded;
    c.progress.dataset.percent = String(rounded);
    c.progress.setAttribute("aria-valuetext", `${numberFormat(rounded)}%`);
  }
  c.progress.setAttribute("aria-label", t("upload.progressLabel", { name: entry.file.name }));
  const statusText = percent !== null && entry.state !== "uploading" && text
    ? `${numberFormat(Math.round(percent))}% · ${text}` : text;
  setText(c.status, statusText);
  c.status.hidden = !statusText;

  c.error.hidden = !entry.error;
  setText(c.error, entry.error ? t(entry.error.key, entry.error.vars) : "");

  renderResult(entry);

  c.retryButton.hidden = !(entry.state === "failed" && entry.retry);
  setText(c.retryButton, t("upload.retry"));
  const active = ACTIVE.includes(entry.state);
  setText(c.cancel, t(active ? "upload.cancel" : "upload.remove"));
  c.cancel.disabled = entry.removing;
  c.cancel.setAttribute("aria-label", t(active ? "upload.cancelLabel" : "upload.removeLabel",
    { name: entry.file.name }));
}

function renderResult(entry) {
  const c = entry.card;
  const done = entry.state === "done" && entry.id && entry.job && entry.job.result;
  if (!done) {
    if (c.media) {
      c.media.remove();
      c.media = null;
    }
    c.preview.hidden = true;
    c.previewNote.hidden = true;
    c.download.hidden = true;
    c.download.removeAttribute("href");
    c.audit.hidden = true;
    c.audit.removeAttribute("href");
    return;
  }
  const url = jobResultUrl(entry.id);
  if (!c.media) {
    const alt = t("upload.previewLabel", { name: entry.file.name });
    if (entry.kind === "image") {
      c.media = element("img", "job-media", { src: url, alt });
    } else {
      c.media = element("video", "job-media", { src: url, controls: "", muted: "", playsinline: "",
        preload: "metadata", "aria-label": alt });
      c.media.muted = true;
    }
    c.media.addEventListener("error", () => {
      entry.previewFailed = true;
      render(entry);
    });
    c.preview.replaceChildren(c.media);
  }
  c.media.setAttribute(entry.kind === "image" ? "alt" : "aria-label", t("upload.previewLabel",
    { name: entry.file.name }));
  c.preview.hidden = entry.previewFailed;
  c.previewNote.hidden = !entry.previewFailed;
  setText(c.previewNote, entry.previewFailed ? t("upload.err.preview") : "");
  c.download.hidden = false;
  c.download.href = url;
  c.download.download = resultName(entry);
  setText(c.download, t("upload.download"));
  c.download.setAttribute("aria-label", t("upload.downloadLabel", { name: resultName(entry) }));
  c.audit.hidden = !entry.job.audit;
  if (entry.job.audit) {
    c.audit.href = jobAuditUrl(entry.id);
    c.audit.download = resultName(entry).replace(/\.[^.]+$/, "-audit.jsonl");
    setText(c.audit, t("upload.downloadAudit"));
  }
}

function renderCount() {
  const working = [...entries.values()].filter((e) => ACTIVE.includes(e.state)).length;
  els.count.hidden = working === 0;
  setText(els.count, working ? String(working) : "");
  els.count.setAttribute("aria-label", t("upload.working", { count: working }));
  els.empty.hidden = entries.size > 0;
}

// ---------------------------------------------------------------------------------------------------------------
// Files in: the picker and dropping (onto the drop zone, or anywhere while this view is shown)

function hasFiles(ev) {
  return Boolean(ev.dataTransfer && [...ev.dataTransfer.types].includes("Files"));
}

function setDragging(on) {
  els.dropZone.dataset.dragging = on ? "true" : "false";
}

function initDrop() {
  let depth = 0; // dragenter/dragleave fire for every child element
  els.dropZone.addEventListener("dragenter", (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    depth += 1;
    setDragging(true);
  });
  els.dropZone.addEventListener("dragover", (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    ev.dataTransfer.dropEffect = "copy";
  });
  els.dropZone.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) setDragging(false);
  });
  els.dropZone.addEventListener("drop", (ev) => {
    ev.preventDefault();
    ev.stopPropagation();
    depth = 0;
    setDragging(false);
    if (ev.dataTransfer && ev.dataTransfer.files.length) addFiles([...ev.dataTransfer.files]);
  });
  // A file dropped beside the zone would make the browser open it in place of this page: take it as an upload.
  window.addEventListener("dragover", (ev) => {
    if (shown && hasFiles(ev)) {
      ev.preventDefault();
      ev.dataTransfer.dropEffect = "copy";
    }
  });
  window.addEventListener("drop", (ev) => {
    if (!shown || !hasFiles(ev)) return;
    ev.preventDefault();
    depth = 0;
    setDragging(false);
    if (ev.dataTransfer.files.length) addFiles([...ev.dataTransfer.files]);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Wiring

export function initUpload() {
  initView();
  renderModes(els.mode, modes);
  renderStrength(els.strength, els.strengthValue);
  renderCount();
  initDrop();
  els.input.addEventListener("change", () => {
    const files = [...els.input.files];
    els.input.value = ""; // choosing the same file again is a new job
    if (files.length) addFiles(files);
  });
  els.mode.addEventListener("change", () => userTouched.add("mode"));
  els.strength.addEventListener("input", () => {
    userTouched.add("strength");
    renderStrength(els.strength, els.strengthValue);
  });
  document.getElementById("upload-settings").addEventListener("submit", (ev) => ev.preventDefault());
  onLangChange(() => {
    renderModes(els.mode, modes);
    for (const entry of entries.values()) render(entry);
    renderCount();
  });
  getConfig().then(applyConfig).catch(() => {}); // the modes and defaults; the fallbacks serve meanwhile
}
