"use strict";
// Shows whether the detector is loaded and which ONNX Runtime provider really runs it.
fetch("/healthz").then(r => r.json()).then(h => {
  document.getElementById("status").textContent =
    h.ready ? `ready, detector on ${h.provider}` : `${h.status}${h.error ? ": " + h.error : ""}`;
}).catch(() => { document.getElementById("status").textContent = "unreachable"; });
