// The webcam view's hiding settings (#settings: mode, strength, padding, threshold, debug, ellipse, and the privacy
// zones drawn over the video, zones.js). They go with the offer; while live, each change is sent as
// POST /sessions/{id}/settings, one request at a time, in order.

import { ApiError, detailOf, postSettings } from "./api.js";
import { $, messageSlot, renderModes, renderStrength } from "./dom.js";
import { onLangChange } from "./i18n.js";
import { applyFacesConfig, initFaces } from "./faces.js";
import { getZones, initZones, setZones } from "./zones.js";

const SLIDER_DEBOUNCE_MS = 200;
const FALLBACK_MODES = ["mosaic", "blur", "solid"];
const OPTION_FIELDS = ["mode", "strength", "padding", "threshold", "debug", "ellipse", "zones", "identity"];

// Values are numbers, booleans, strings or (zones) nested arrays: compared by what they send.
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

const els = {
  form: $("settings"),
  mode: $("mode"),
  strength: $("strength"),
  strengthValue: $("strength-value"),
  padding: $("padding"),
  threshold: $("threshold"),
  debug: $("debug"),
  ellipse: $("ellipse"),
  identity: $("identity"),
};

let modes = FALLBACK_MODES.slice();
const userTouched = new Set(); // controls changed by the user (config defaults do not override them)
const sliderTimers = new Map();
let session = null; // {current, gone}: see initSettings()

export const showSettingsMessage = messageSlot($("settings-error"));

// A number field that is empty is left out (the server default applies); anything else is sent as typed so that
// the server's own validation answers (400 with its message) for values out of range.
function numberField(el) {
  if (el.value.trim() === "") return undefined;
  const n = Number(el.value);
  return Number.isFinite(n) ? n : el.value;
}

function readOption(field) {
  switch (field) {
    case "mode": return els.mode.value || undefined;
    case "strength": return numberField(els.strength);
    case "padding": return numberField(els.padding);
    case "threshold": return numberField(els.threshold);
    case "debug": return els.debug.checked;
    case "ellipse": return els.ellipse.checked;
    case "zones": return getZones();
    case "identity": return els.identity.value || undefined;
    default: return undefined;
  }
}

export function readOptions() {
  const options = {};
  for (const field of OPTION_FIELDS) {
    const value = readOption(field);
    if (value !== undefined) options[field] = value;
  }
  return options;
}

function writeOption(field, value) {
  if (value === undefined || value === null) return;
  switch (field) {
    case "mode":
      if (!modes.includes(value)) {
        modes = modes.concat([value]);
        renderModes(els.mode, modes);
      }
      els.mode.value = value;
      break;
    case "strength": els.strength.value = String(value); renderStrength(els.strength, els.strengthValue); break;
    case "padding": els.padding.value = String(value); break;
    case "threshold": els.threshold.value = String(value); break;
    case "debug": els.debug.checked = Boolean(value); break;
    case "ellipse": els.ellipse.checked = Boolean(value); break;
    case "zones": setZones(value); break;
    case "identity": els.identity.value = String(value); break;
    default: break;
  }
}

export function applyConfig(config) {
  applyFacesConfig(config);
  if (Array.isArray(config.modes) && config.modes.length) {
    modes = config.modes.map(String);
    renderModes(els.mode, modes);
  }
  const defaults = config.defaults && typeof config.defaults === "object" ? config.defaults : {};
  for (const field of OPTION_FIELDS) {
    if (!userTouched.has(field) && field in defaults) writeOption(field, defaults[field]);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Live settings. `s` is the session record of session.js; s.applied holds the settings in force on the server and
// s.settingsQueue the requests in flight.

function queueSettings(s, patch) {
  s.settingsQueue = s.settingsQueue.then(() => sendSettings(s, patch));
}

// Settings that changed between reading the options for the offer (`sent`) and getting the answer.
export function sendChangesSince(s, sent) {
  const now = readOptions();
  const patch = {};
  for (const field of OPTION_FIELDS) if (now[field] !== undefined && !same(now[field], sent[field])) patch[field] = now[field];
  if (Object.keys(patch).length) queueSettings(s, patch);
}

async function sendSettings(s, patch) {
  if (s.cancelled || !s.id) return;
  try {
    const settings = await postSettings(s.id, patch);
    if (s.cancelled) return;
    s.applied = { ...s.applied, ...(settings && typeof settings === "object" ? settings : patch) };
    showSettingsMessage(null);
  } catch (err) {
    if (s.cancelled) return;
    if (err instanceof ApiError && err.kind === "http" && err.status === 404) {
      session.gone(s);
      return;
    }
    if (err instanceof ApiError && err.kind === "http") {
      showSettingsMessage({ key: "settings.refused", vars: { status: err.status, detail: err.detail } });
      // Nothing was changed on the server: show the settings that are really in force.
      for (const field of Object.keys(patch)) if (s.applied && field in s.applied) writeOption(field, s.applied[field]);
    } else {
      showSettingsMessage({ key: "settings.failed", vars: { detail: detailOf(err) } });
    }
  }
}

function onOptionChanged(field, { debounce = false } = {}) {
  userTouched.add(field);
  const s = session.current();
  if (!s || !s.id) return; // not live: the value goes with the next offer
  clearTimeout(sliderTimers.get(field));
  const send = () => {
    sliderTimers.delete(field);
    const value = readOption(field);
    if (value === undefined) return;
    if (s.applied && same(s.applied[field], value)) return;
    queueSettings(s, { [field]: value });
  };
  if (debounce) sliderTimers.set(field, setTimeout(send, SLIDER_DEBOUNCE_MS));
  else send();
}

// current(): the session being started or live, or null; gone(s): the server no longer knows session s.
export function initSettings({ current, gone }) {
  session = { current, gone };
  renderModes(els.mode, modes);
  renderStrength(els.strength, els.strengthValue);
  els.form.addEventListener("submit", (ev) => ev.preventDefault());
  els.mode.addEventListener("change", () => onOptionChanged("mode"));
  els.strength.addEventListener("input", () => {
    renderStrength(els.strength, els.strengthValue);
    onOptionChanged("strength", { debounce: true });
  });
  els.strength.addEventListener("change", () => {
    renderStrength(els.strength, els.strengthValue);
    onOptionChanged("strength");
  });
  for (const field of ["padding", "threshold", "debug", "ellipse"]) {
    els[field].addEventListener("change", () => onOptionChanged(field));
  }
  initZones({ changed: () => onOptionChanged("zones") });
  els.identity.addEventListener("change", () => onOptionChanged("identity"));
  initFaces({ current, identityChanged: () => onOptionChanged("identity") });
  onLangChange(() => renderModes(els.mode, modes));
}
