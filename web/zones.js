// Privacy zones of the webcam view: polygons drawn over the anonymized video, always hidden by the server whatever
// the detector finds (docs/http-api.md, "zones"). They are kept as fractions of the frame (0..1), so a drawing fits
// every resolution the browser switches to. settings.js sends them with the offer and, while live, as a setting.
//
// Drawing: "Draw a zone" (#zone-draw), then a click on the video per corner; Enter, a double click or "Finish zone"
// closes the polygon (3 corners at least), Esc cancels it. "Clear zones" (#zone-clear) removes them all.
//
// Hooks for tests: #zone-overlay (an <svg> over the picture, data-drawing="true|false", one <polygon class="zone">
// per zone), #zone-count (data-count), #zone-draw, #zone-clear, #zone-hint.

import { $, setText } from "./dom.js";
import { onLangChange, t } from "./i18n.js";

const SVG = "http://www.w3.org/2000/svg";
const MAX_ZONES = 32; // the server's limits (streamer/zones.py)
const MAX_POINTS = 64;

const els = {
  video: $("output"),
  overlay: $("zone-overlay"),
  draw: $("zone-draw"),
  clear: $("zone-clear"),
  count: $("zone-count"),
  hint: $("zone-hint"),
};

let zones = [];
let drawing = null; // the corners of the zone being drawn, or null
let onChange = () => {};

export function getZones() {
  return zones.map((polygon) => polygon.map(([x, y]) => [x, y]));
}

// The zones in force (the server's answer, or the ones it kept after refusing a change).
export function setZones(value) {
  zones = Array.isArray(value) ? value.filter((p) => Array.isArray(p) && p.length >= 3) : [];
  render();
}

// Where the picture is inside the <video> box: object-fit: contain letterboxes it.
function pictureRect() {
  const box = els.video.getBoundingClientRect();
  const vw = els.video.videoWidth || 4;
  const vh = els.video.videoHeight || 3;
  const scale = Math.min(box.width / vw, box.height / vh);
  const width = vw * scale;
  const height = vh * scale;
  const frame = els.video.parentElement.getBoundingClientRect();
  return { left: box.left - frame.left + (box.width - width) / 2, top: box.top - frame.top + (box.height - height) / 2,
    width, height, screenLeft: box.left + (box.width - width) / 2, screenTop: box.top + (box.height - height) / 2 };
}

const round = (v) => Math.round(Math.min(1, Math.max(0, v)) * 10000) / 10000;

function pointOf(ev) {
  const r = pictureRect();
  return [round((ev.clientX - r.screenLeft) / r.width), round((ev.clientY - r.screenTop) / r.height)];
}

function svgPoints(polygon) {
  return polygon.map(([x, y]) => `${x * 1000},${y * 1000}`).join(" ");
}

function render() {
  const r = pictureRect();
  Object.assign(els.overlay.style, { left: `${r.left}px`, top: `${r.top}px`, width: `${r.width}px`,
    height: `${r.height}px` });
  els.overlay.replaceChildren();
  for (const polygon of zones) {
    const shape = document.createElementNS(SVG, "polygon");
    shape.setAttribute("class", "zone");
    shape.setAttribute("points", svgPoints(polygon));
    els.overlay.append(shape);
  }
  if (drawing) {
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("class", "zone-drawing");
    line.setAttribute("points", svgPoints(drawing));
    els.overlay.append(line);
    for (const [x, y] of drawing) {
      const dot = document.createElementNS(SVG, "circle");
      dot.setAttribute("class", "zone-corner");
      Object.entries({ cx: x * 1000, cy: y * 1000, r: 8 }).forEach(([k, v]) => dot.setAttribute(k, String(v)));
      els.overlay.append(dot);
    }
  }
  els.overlay.dataset.drawing = drawing ? "true" : "false";
  els.count.dataset.count = String(zones.length);
  setText(els.count, t("zones.count", { n: zones.length }));
  setText(els.draw, t(drawing ? "zones.finish" : "zones.draw"));
  els.draw.disabled = !drawing && zones.length >= MAX_ZONES;
  els.clear.disabled = !zones.length && !drawing;
  els.hint.hidden = !drawing;
}

function startDrawing() {
  drawing = [];
  render();
}

function finishDrawing() {
  const corners = drawing;
  drawing = null;
  if (corners && corners.length >= 3) {
    zones = zones.concat([corners]);
    onChange();
  }
  render();
}

function cancelDrawing() {
  drawing = null;
  render();
}

export function initZones({ changed }) {
  onChange = changed;
  els.draw.addEventListener("click", () => (drawing ? finishDrawing() : startDrawing()));
  els.clear.addEventListener("click", () => {
    const had = zones.length > 0;
    zones = [];
    drawing = null;
    render();
    if (had) onChange();
  });
  els.overlay.addEventListener("click", (ev) => {
    if (!drawing || drawing.length >= MAX_POINTS) return;
    drawing.push(pointOf(ev));
    render();
  });
  els.overlay.addEventListener("dblclick", (ev) => {
    ev.preventDefault();
    if (drawing) finishDrawing();
  });
  document.addEventListener("keydown", (ev) => {
    if (!drawing) return;
    if (ev.key === "Enter") { ev.preventDefault(); finishDrawing(); }
    if (ev.key === "Escape") { ev.preventDefault(); cancelDrawing(); }
  });
  for (const event of ["loadedmetadata", "resize"]) els.video.addEventListener(event, render);
  new ResizeObserver(render).observe(els.video);
  onLangChange(render);
  render();
}
