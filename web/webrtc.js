// WebRTC helpers shared by the webcam view (app.js) and the cameras view (cameras.js).

// Resolves when ICE gathering is complete (no trickle ICE: the offer goes out with every candidate in it), or after
// timeoutMs with what has been gathered so far.
export function waitForIceGathering(pc, timeoutMs) {
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
    const timer = setTimeout(done, timeoutMs); // then send what has been gathered so far
    pc.addEventListener("icegatheringstatechange", onChange);
    pc.addEventListener("icecandidate", onCandidate);
  });
}
