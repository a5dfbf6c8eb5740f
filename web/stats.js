// The webcam view's statistics panel: GET /sessions/{id} (the server's side) and pc.getStats() (this browser's),
// every second. Each #stat-* shows its value as text and holds the raw number in data-value.

import { ApiError, getSession } from "./api.js";
import { $ } from "./dom.js";
import { fixed, num } from "./format.js";
import { decodeRate, inboundVideo } from "./webrtc.js";

const STATS_INTERVAL_MS = 1000;

export function setStat(id, value, text) {
  const el = $(id);
  if (!el) return;
  el.dataset.value = value === null || value === undefined ? "" : String(value);
  el.textContent = text === null || text === undefined || text === "" ? "—" : String(text);
}

export function resetStats() {
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
  const inbound = inboundVideo(report);
  let transport = null;
  let pair = null;
  report.forEach((r) => {
    if (r.type === "transport" && r.selectedCandidatePairId) transport = r;
  });
  if (transport) pair = report.get(transport.selectedCandidatePairId) || null;
  if (!pair) {
    report.forEach((r) => {
      if (r.type === "candidate-pair" && r.state === "succeeded" && (r.nominated || r.selected)) pair = r;
    });
  }

  const { fps, decoded, sample } = inbound
    ? decodeRate(inbound, s.prevDecoded) : { fps: null, decoded: null, sample: s.prevDecoded };
  s.prevDecoded = sample;
  setStat("stat-fps-received", fps, fixed(fps, 1));
  setStat("stat-frames-decoded", decoded, decoded);

  let w = inbound ? num(inbound.frameWidth) : null;
  let h = inbound ? num(inbound.frameHeight) : null;
  if (!w || !h) {
    const output = $("output");
    w = output.videoWidth || null;
    h = output.videoHeight || null;
  }
  const size = w && h ? `${w}x${h}` : null;
  setStat("stat-resolution", size, size && size.replace("x", " × "));

  const rtt = pair ? num(pair.currentRoundTripTime) : null;
  const rttMs = rtt === null ? null : Math.round(rtt * 10000) / 10;
  setStat("stat-rtt", rttMs, fixed(rttMs, 1));
}

async function pollStats(s, gone) {
  if (s.cancelled || s.statsBusy || !s.pc) return;
  s.statsBusy = true;
  try {
    const [server, report] = await Promise.allSettled([getSession(s.id), s.pc.getStats()]);
    if (s.cancelled) return;
    if (server.status === "fulfilled" && server.value) {
      renderServerStats(server.value);
    } else if (server.status === "rejected" && server.reason instanceof ApiError
               && server.reason.kind === "http" && server.reason.status === 404) {
      gone(s);
      return;
    }
    if (report.status === "fulfilled") renderBrowserStats(s, report.value);
  } finally {
    s.statsBusy = false;
  }
}

// Polls now and every second for session record `s` (session.js) until it is cancelled; gone(s) when the server no
// longer knows it. Returns the interval's id, for clearInterval.
export function followStats(s, gone) {
  const timer = setInterval(() => pollStats(s, gone), STATS_INTERVAL_MS);
  pollStats(s, gone);
  return timer;
}
