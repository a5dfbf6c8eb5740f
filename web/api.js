// The HTTP side of docs/http-api.md. Every failure becomes an ApiError:
//   kind "network": the request never got an answer (server down, connection refused);
//   kind "http":    the server answered with an error status; `detail` is its JSON {"error": ...} text;
//   kind "format":  a 2xx answer whose body is not the JSON we expect.

export class ApiError extends Error {
  constructor(kind, { status = 0, detail = "", retryAfter = null } = {}) {
    super(detail || kind);
    this.name = "ApiError";
    this.kind = kind;
    this.status = status;
    this.detail = detail;
    this.retryAfter = retryAfter;
  }
}

// What went wrong, in a line: the server's text for an ApiError, else the exception's name and message.
export function detailOf(err) {
  if (err instanceof ApiError) return err.detail || err.kind;
  if (err && err.message) return err.name && err.name !== "Error" ? `${err.name}: ${err.message}` : err.message;
  return String(err);
}

async function errorFrom(response) {
  let detail = "";
  try {
    const body = await response.json();
    if (body && typeof body.error === "string") detail = body.error;
  } catch {
    // not JSON: fall back to the status text
  }
  if (!detail) detail = response.statusText || `HTTP ${response.status}`;
  const header = response.headers.get("Retry-After");
  const retryAfter = header !== null && /^\d+$/.test(header.trim()) ? Number(header.trim()) : null;
  return new ApiError("http", { status: response.status, detail, retryAfter });
}

export async function request(method, path, { body, signal, keepalive = false, expectJson = true } = {}) {
  const init = { method, signal, keepalive, cache: "no-store", credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError("network", { detail: err && err.message ? err.message : String(err) });
  }
  if (!response.ok) throw await errorFrom(response);
  if (!expectJson || response.status === 204) return null;
  try {
    return await response.json();
  } catch (err) {
    throw new ApiError("format", { status: response.status, detail: `not JSON (${err.message})` });
  }
}

export const getConfig = (signal) => request("GET", "/config", { signal });
export const postOffer = (offer, signal) => request("POST", "/offer", { body: offer, signal });
export const getSession = (id, signal) => request("GET", `/sessions/${encodeURIComponent(id)}`, { signal });
export const postSettings = (id, settings) =>
  request("POST", `/sessions/${encodeURIComponent(id)}/settings`, { body: settings });
// A session's enrolled faces (identity: keep them visible, or hide only them): embeddings in the session's memory.
const facesPath = (id) => `/sessions/${encodeURIComponent(id)}/faces`;
export const getFaces = (id) => request("GET", facesPath(id));
export const enrollLive = (id, name) => request("POST", facesPath(id), { body: { name, from: "live" } });
export const removeFace = (id, name) => request("DELETE", `${facesPath(id)}/${encodeURIComponent(name)}`);
export async function enrollPhoto(id, name, file) {
  const form = new FormData();
  form.append("name", name);
  form.append("file", file, file.name);
  let response;
  try {
    response = await fetch(facesPath(id), { method: "POST", body: form, credentials: "same-origin" });
  } catch (err) {
    throw new ApiError("network", { detail: err && err.message ? err.message : String(err) });
  }
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}
export const deleteSession = (id) =>
  request("DELETE", `/sessions/${encodeURIComponent(id)}`, { keepalive: true, expectJson: false });

// Cameras (RTSP, pulled and anonymized by the server) ---------------------------------------------------------

export const listCameras = (signal) => request("GET", "/cameras", { signal });
// Managing cameras (a server with an access token only; see "manage" in GET /cameras): the body is a [[camera]]
// table as JSON. PUT replaces the settings; without "url" the camera keeps its own.
export const addCamera = (settings) => request("POST", "/cameras", { body: settings });
export const editCamera = (name, settings) =>
  request("PUT", `/cameras/${encodeURIComponent(name)}`, { body: settings });
export const removeCamera = (name) => request("DELETE", `/cameras/${encodeURIComponent(name)}`);

export const snapshotUrl = (name) =>
  `/cameras/${encodeURIComponent(name)}/snapshot.jpg?t=${Date.now().toString(36)}`; // never a cached picture

// WHEP (draft-ietf-wish-whep): POST the SDP offer as application/sdp; 201 Created with the answer SDP as the body
// and the viewer's resource URL in Location, which DELETE ends. A 2xx answer that cannot be used throws a "format"
// ApiError that carries `location` (when there was one) so that the caller can still delete the resource.
export async function postWhep(name, sdp) {
  const path = `/whep/${encodeURIComponent(name)}`;
  let response;
  try {
    response = await fetch(path, {
      method: "POST", cache: "no-store", credentials: "same-origin",
      headers: { "Content-Type": "application/sdp" }, body: sdp,
    });
  } catch (err) {
    throw new ApiError("network", { detail: err && err.message ? err.message : String(err) });
  }
  if (!response.ok) throw await errorFrom(response);
  const header = response.headers.get("Location");
  const location = header ? new URL(header, new URL(path, window.location.href)).href : null;
  let answer = "";
  try {
    answer = await response.text();
  } catch {
    answer = "";
  }
  const bad = (detail) => {
    const err = new ApiError("format", { status: response.status, detail });
    err.location = location;
    return err;
  };
  if (response.status !== 201) throw bad(`expected 201 Created, got ${response.status}`);
  if (!location) throw bad("no Location header");
  if (!answer.trimStart().startsWith("v=")) throw bad("the answer is not a session description");
  return { location, sdp: answer };
}

export async function deleteWhep(location) {
  let response;
  try {
    response = await fetch(location, {
      method: "DELETE", keepalive: true, cache: "no-store", credentials: "same-origin",
    });
  } catch (err) {
    throw new ApiError("network", { detail: err && err.message ? err.message : String(err) });
  }
  if (!response.ok && response.status !== 404) throw await errorFrom(response);
}

// The snapshot as a Blob; errors (404, 503 while the camera has no picture yet) as ApiError.
export async function fetchSnapshot(url) {
  let response;
  try {
    response = await fetch(url, { cache: "no-store", credentials: "same-origin" });
  } catch (err) {
    throw new ApiError("network", { detail: err && err.message ? err.message : String(err) });
  }
  if (!response.ok) throw await errorFrom(response);
  const blob = await response.blob();
  if (!blob.size || !blob.type.startsWith("image/")) {
    throw new ApiError("format", { status: response.status, detail: `not an image (${blob.type || "no type"})` });
  }
  return blob;
}

// Upload jobs ------------------------------------------------------------------------------------------------

function parseRetryAfter(header) {
  return header !== null && /^\d+$/.test(header.trim()) ? Number(header.trim()) : null;
}

// POST /jobs as multipart/form-data (mode, strength, then the file), through XMLHttpRequest because fetch reports
// no upload progress. Returns {promise, abort}: the promise resolves with the job object of the 202 answer and
// rejects with an ApiError ("http" with the server's {"error"} text and Retry-After, "network", "format") or, after
// abort(), with a DOMException named AbortError. onProgress(loaded, total) follows the bytes sent.
export function postJob(file, { mode, strength, audio, audit }, onProgress) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    const form = new FormData();
    if (mode) form.append("mode", String(mode));
    if (strength !== undefined && strength !== null) form.append("strength", String(strength));
    if (audio) form.append("audio", String(audio));
    if (audit !== undefined) form.append("audit", audit ? "true" : "false");
    form.append("file", file, file.name);
    xhr.open("POST", "/jobs");
    xhr.responseType = "text";
    xhr.upload.addEventListener("progress", (ev) => {
      if (onProgress) onProgress(ev.loaded, ev.lengthComputable ? ev.total : file.size);
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status === 202) {
        if (body && typeof body.id === "string") resolve(body);
        else reject(new ApiError("format", { status: xhr.status, detail: "the answer has no job id" }));
        return;
      }
      const detail = body && typeof body.error === "string" ? body.error : xhr.statusText || `HTTP ${xhr.status}`;
      reject(new ApiError("http", {
        status: xhr.status, detail, retryAfter: parseRetryAfter(xhr.getResponseHeader("Retry-After")),
      }));
    });
    xhr.addEventListener("error", () => {
      reject(new ApiError("network", { detail: "the connection failed or was closed during the upload" }));
    });
    xhr.addEventListener("timeout", () => reject(new ApiError("network", { detail: "timed out" })));
    xhr.addEventListener("abort", () => reject(new DOMException("upload aborted", "AbortError")));
    xhr.send(form);
  });
  return { promise, abort: () => xhr.abort() };
}

export const getJob = (id, signal) => request("GET", `/jobs/${encodeURIComponent(id)}`, { signal });
export const deleteJob = (id) => request("DELETE", `/jobs/${encodeURIComponent(id)}`, { expectJson: false });
export const jobEventsUrl = (id) => `/jobs/${encodeURIComponent(id)}/events`;
export const jobResultUrl = (id) => `/jobs/${encodeURIComponent(id)}/result`;
export const jobAuditUrl = (id) => `/jobs/${encodeURIComponent(id)}/audit`;
