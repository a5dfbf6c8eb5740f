// DOM helpers shared by the page's modules (the webcam view, cameras.js, upload.js).

import { dictionaries, onLangChange, t } from "./i18n.js";

export const $ = (id) => document.getElementById(id);

export function element(tag, className, attrs = {}) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, value);
  return el;
}

export function setText(el, text) {
  if (el.textContent !== text) el.textContent = text; // live regions announce changes only
}

// The text of `${group}.${value}` where the dictionaries have it, else the value itself: a mode or camera state
// that this page does not know yet is still shown.
export function labelOf(group, value) {
  const key = `${group}.${value}`;
  return key in dictionaries.en ? t(key) : String(value);
}

// Fills a <select> with the hiding modes, keeping the choice while it is still one of them.
export function renderModes(select, modes) {
  const selected = select.value || "mosaic";
  select.replaceChildren(...modes.map((m) => new Option(labelOf("mode", m), m)));
  select.value = modes.includes(selected) ? selected : modes[0];
}

// The strength slider's value beside it, with two decimals.
export function renderStrength(input, output) {
  const v = Number(input.value);
  output.textContent = Number.isFinite(v) ? v.toFixed(2) : input.value;
}

// A message element (role=alert) that shows one {key, vars} message or nothing; the message is kept, not its text,
// so that a language switch shows it again in the new language. Returns show(msg | null).
export function messageSlot(el) {
  let msg = null;
  const render = () => {
    el.textContent = msg ? t(msg.key, msg.vars) : "";
    el.hidden = !msg;
  };
  onLangChange(render);
  return (next) => {
    msg = next;
    render();
  };
}
