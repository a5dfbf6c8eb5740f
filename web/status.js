// Service status in the header line, from GET /healthz: whether the detector is loaded and which ONNX Runtime
// provider really runs it. Polls every 2 s while the detector is starting, every 10 s otherwise.
// #service-status gets data-ready="true|false" and data-status="ok|starting|error|unreachable".

import { onLangChange, t } from "./i18n.js";

let last = null; // {status, ready, provider, error, sessions} or {status: "unreachable"}
let timer = null;

function render() {
  const el = document.getElementById("service-status");
  if (!el) return;
  if (last === null) {
    el.textContent = t("service.checking");
    el.dataset.status = "checking";
    el.dataset.ready = "false";
    return;
  }
  el.dataset.status = last.status;
  el.dataset.ready = last.ready ? "true" : "false";
  el.dataset.provider = last.provider || "";
  let text;
  if (last.status === "unreachable") text = t("service.unreachable");
  else if (last.ready) text = t("service.ready", { provider: last.provider || "?" });
  else if (last.status === "error") text = t("service.error", { error: last.error || "?" });
  else text = t("service.starting");
  if (last.ready && typeof last.sessions === "number") text += ` · ${t("service.sessions", { count: last.sessions })}`;
  if (el.textContent !== text) el.textContent = text; // role=status: announce changes only
}

export async function checkHealth() {
  try {
    const response = await fetch("/healthz", { cache: "no-store" });
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (body && typeof body === "object") {
      last = { status: String(body.status || (response.ok ? "ok" : "error")), ready: body.ready === true,
        provider: body.provider || null, error: body.error || null, sessions: body.sessions };
    } else {
      last = { status: "error", ready: false, provider: null, error: `HTTP ${response.status}` };
    }
  } catch {
    last = { status: "unreachable", ready: false };
  }
  render();
  return last;
}

export function startHealthPolling() {
  const tick = async () => {
    const health = await checkHealth();
    timer = window.setTimeout(tick, health.status === "starting" ? 2000 : 10000);
  };
  if (timer === null) tick();
}

onLangChange(render);
render();
