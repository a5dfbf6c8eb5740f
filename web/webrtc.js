// WebRTC helpers shared by the webcam view (session.js, stats.js) and the cameras view (cameras.js).

import { num } from "./format.js";

const ICE_GATHER_TIMEOUT_MS = 5000;
const CONNECT_TIMEOUT_MS = 20000;
const DISCONNECT_GRACE_MS = 5000;

// Resolves when ICE gathering is complete (no trickle ICE: the offer goes out with every candidate in it), or after
// ICE_GATHER_TIMEOUT_MS with what has been gathered so far.
export function waitForIceGathering(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", onChange);
      pc.removeEventListener("icecandidate", onCandidate);
      resolve();
    };
    const onChange = () => { if (pc.iceGatheringState === "complete") done(); };
    const onCandidate = (ev) => { if (!ev.candidate) done(); };
    const timer = setTimeout(done, ICE_GATHER_TIMEOUT_MS); // then send what has been gathered so far
    pc.addEventListener("icegatheringstatechange", onChange);
    pc.addEventListener("icecandidate", onCandidate);
  });
}

// Follows pc.connectionState for a caller that ends it on its own (cancelled() is then true, and nothing more is
// reported). onState(state) on every change. onLost(reason, vars) when the connection is given up: "iceTimeout" (it
// did not come up within CONNECT_TIMEOUT_MS of the answer), "iceFailed", or "disconnected" (it dropped and did not
// come back within DISCONNECT_GRACE_MS); vars.seconds is that time. Returns {answered(): call once the answer is set,
// stop(): ends the timers}.
export function watchConnection(pc, cancelled, onState, onLost) {
  let everConnected = false;
  let connectTimer = null;
  let graceTimer = null;
  const update = () => {
    if (cancelled()) return;
    const state = pc.connectionState;
    if (state === "connected") {
      everConnected = true;
      clearTimeout(graceTimer);
      graceTimer = null;
      clearTimeout(connectTimer);
      connectTimer = null;
    }
    onState(state);
    if (state === "failed") {
      onLost("iceFailed", {});
    } else if (state !== "connected" && everConnected && graceTimer === null) {
      // disconnected (or the transport closed from the far end): give it a few seconds to come back
      graceTimer = setTimeout(() => {
        graceTimer = null;
        if (!cancelled() && pc.connectionState !== "connected") {
          onLost("disconnected", { seconds: Math.round(DISCONNECT_GRACE_MS / 1000) });
        }
      }, DISCONNECT_GRACE_MS);
    }
  };
  pc.addEventListener("connectionstatechange", update);
  return {
    answered() {
      connectTimer = setTimeout(() => {
        if (!cancelled() && !everConnected) onLost("iceTimeout", { seconds: Math.round(CONNECT_TIMEOUT_MS / 1000) });
      }, CONNECT_TIMEOUT_MS);
      update();
    },
    stop() {
      clearTimeout(connectTimer);
      clearTimeout(graceTimer);
    },
  };
}

// The received video's inbound-rtp entry in a getStats() report, or null.
export function inboundVideo(report) {
  let inbound = null;
  report.forEach((r) => {
    if (r.type === "inbound-rtp" && (r.kind === "video" || r.mediaType === "video")) inbound = r;
  });
  return inbound;
}

// Frames decoded and frames/s of an inbound-rtp entry. Where the browser gives no framesPerSecond, the rate is
// counted since `previous`, the `sample` of the last call (null the first time).
export function decodeRate(inbound, previous) {
  const decoded = num(inbound.framesDecoded);
  let fps = num(inbound.framesPerSecond);
  if (fps === null && decoded !== null && previous) {
    const dt = (inbound.timestamp - previous.timestamp) / 1000;
    if (dt > 0) fps = (decoded - previous.frames) / dt;
  }
  const sample = decoded === null ? previous : { frames: decoded, timestamp: inbound.timestamp };
  return { decoded, fps, sample };
}

const CLOSE_AFTER_DELETE_MS = 3000;

function closePc(pc) {
  try {
    pc.close();
  } catch {
    // already closed
  }
}

// Ends a peer connection whose server side is being deleted: after the DELETE's answer (at most
// CLOSE_AFTER_DELETE_MS), since closing first makes the server end it on its own and the DELETE then finds nothing.
// `deleted` is that request's promise, or null when there is none; leaving the page closes at once (the DELETE
// still goes out, keepalive).
export function closeAfterDelete(pc, deleted, leaving) {
  if (!pc) return;
  if (!deleted || leaving) {
    closePc(pc);
    return;
  }
  const late = new Promise((resolve) => { setTimeout(resolve, CLOSE_AFTER_DELETE_MS); });
  Promise.race([deleted.catch(() => {}), late]).then(() => closePc(pc));
}
