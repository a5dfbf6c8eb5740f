// Managing cameras from the Cameras view: add one (POST /cameras), edit one (PUT /cameras/{name}: the form sends
// the camera's settings as GET /cameras showed them, with the fields changed here, and the URL only when a new one
// was typed, since the page only ever sees it redacted), remove one (DELETE /cameras/{name}, after an inline
// confirmation). Shown only when GET /cameras says {"manage": {"enabled": true}} (a server with an access token);
// otherwise #camera-manage-off says why. Cameras given with --camera ("fixed") get no Edit or Remove.
//
// Hooks for tests: #camera-manage (the Add button #camera-add and #camera-manage-note), #camera-manage-off,
// form#camera-form (data-mode="add|edit", data-camera=NAME while editing) with #camera-form-name, -url, -mode,
// -transport, -always-on, -zones (JSON), -faces (off|keep|hide-only) with -gallery (a path on the server),
// -restream, -save, -cancel and #camera-form-error (role=alert). On each card: button.edit,
// button.remove, div.camera-confirm with button.confirm-remove and button.cancel-remove, p.camera-admin-error.

import { onLangChange, t } from "./i18n.js";
import { addCamera, ApiError, detailOf, editCamera, removeCamera } from "./api.js";
import { $, element, messageSlot, renderModes, setText } from "./dom.js";

const FALLBACK_MODES = ["mosaic", "blur", "solid"];

const els = {
  manage: $("camera-manage"),
  off: $("camera-manage-off"),
  note: $("camera-manage-note"),
  add: $("camera-add"),
  form: $("camera-form"),
  title: $("camera-form-title"),
  name: $("camera-form-name"),
  url: $("camera-form-url"),
  urlHint: $("camera-form-url-hint"),
  mode: $("camera-form-mode"),
  transport: $("camera-form-transport"),
  alwaysOn: $("camera-form-always-on"),
  zones: $("camera-form-zones"),
  faces: $("camera-form-faces"),
  gallery: $("camera-form-gallery"),
  restream: $("camera-form-restream"),
  restreamHint: $("camera-form-restream-hint"),
  save: $("camera-form-save"),
  cancel: $("camera-form-cancel"),
};
const showFormError = messageSlot($("camera-form-error"));

let manage = { enabled: false, persisted: false, reason: null };
let editing = null; // the camera being edited (its last GET /cameras entry), or null while adding
let busy = false;
let changed = () => {};
let cardsNow = () => [];

// The server's error text, for the messages of this module.
function failure(err) {
  if (err instanceof ApiError && err.kind === "http") {
    return { key: "cameras.manage.failed", vars: { status: err.status, detail: err.detail } };
  }
  return { key: "cameras.manage.unreachable", vars: { detail: detailOf(err) } };
}

// ---------------------------------------------------------------------------------------------------------------
// Whether cameras may be managed here

export function setManage(next) {
  const m = next && typeof next === "object" ? next : {};
  manage = { enabled: m.enabled === true, persisted: m.persisted === true, reason: m.reason || null };
  renderManage();
  for (const card of cardsNow()) renderCardControls(card);
}

function renderManage() {
  els.manage.hidden = !manage.enabled;
  els.off.hidden = manage.enabled || (manage.reason !== "token" && manage.reason !== "shard");
  setText(els.off, t(manage.reason === "shard" ? "cameras.manage.sharded" : "cameras.manage.needsToken"));
  setText(els.note, t(manage.persisted ? "cameras.manage.persisted" : "cameras.manage.memoryOnly"));
  if (!manage.enabled && !els.form.hidden) closeForm();
  setText(els.title, editing ? t("cameras.form.editTitle", { name: editing.name }) : t("cameras.form.addTitle"));
  setText(els.urlHint, editing ? t("cameras.form.urlKeep", { url: editing.url || "" }) : "");
  els.urlHint.hidden = !editing;
  const restream = editing && editing.settings ? editing.settings.restream : null;
  setText(els.restreamHint, restream ? t("cameras.form.restreamKeep", { url: restream }) : "");
  els.restreamHint.hidden = !restream;
}

// ---------------------------------------------------------------------------------------------------------------
// The add / edit form

function openForm(cam) {
  editing = cam;
  els.form.dataset.mode = cam ? "edit" : "add";
  if (cam) els.form.dataset.camera = cam.name;
  else delete els.form.dataset.camera;
  const s = cam && cam.settings && typeof cam.settings === "object" ? cam.settings : {};
  els.name.value = cam ? cam.name : "";
  els.name.readOnly = Boolean(cam); // a camera cannot be renamed: remove it and add it again
  els.url.value = "";
  els.url.required = !cam;
  els.mode.value = typeof s.mode === "string" ? s.mode : "mosaic";
  if (!els.mode.value) els.mode.selectedIndex = 0;
  els.transport.value = s.transport === "udp" ? "udp" : "tcp";
  els.alwaysOn.checked = s.always_on === true;
  els.zones.value = Array.isArray(s.zones) && s.zones.length ? JSON.stringify(s.zones) : "";
  els.faces.value = s.keep_faces ? "keep" : s.hide_only_faces ? "hide-only" : "off";
  els.gallery.value = s.keep_faces || s.hide_only_faces || "";
  els.restream.value = "";
  showFormError(null);
  els.form.hidden = false;
  renderManage();
  (cam ? els.url : els.name).focus();
}

function closeForm() {
  els.form.hidden = true;
  editing = null;
  showFormError(null);
  renderManage();
}

async function submit(ev) {
  ev.preventDefault();
  if (busy) return;
  const name = els.name.value.trim();
  const url = els.url.value.trim();
  if (!name) {
    showFormError({ key: "cameras.form.nameMissing" });
    els.name.focus();
    return;
  }
  if (!editing && !url) {
    showFormError({ key: "cameras.form.urlMissing" });
    els.url.focus();
    return;
  }
  const chosen = { mode: els.mode.value, transport: els.transport.value, always_on: els.alwaysOn.checked };
  let zones = [];
  if (els.zones.value.trim()) {
    try {
      zones = JSON.parse(els.zones.value);
    } catch {
      showFormError({ key: "cameras.form.zonesBad" });
      els.zones.focus();
      return;
    }
  }
  if (zones.length) chosen.zones = zones; // the server checks them (400 with the reason)
  const gallery = els.gallery.value.trim();
  if (els.faces.value !== "off" && !gallery) {
    showFormError({ key: "cameras.form.galleryMissing" });
    els.gallery.focus();
    return;
  }
  if (els.faces.value === "keep") chosen.keep_faces = gallery;
  if (els.faces.value === "hide-only") chosen.hide_only_faces = gallery;
  const restream = els.restream.value.trim();
  if (restream && restream.toLowerCase() !== "none") chosen.restream = restream;
  busy = true;
  els.save.disabled = true;
  showFormError(null);
  try {
    if (editing) {
      // What the server showed (strength, threshold, ... kept), minus the redacted URL, plus this form's fields.
      // Zones and faces are whatever this form says now; the restream target is kept (the server maps its shown
      // form back) unless a new one was typed, or "none".
      const { url: _shown, zones: _z, keep_faces: _k, hide_only_faces: _h, restream: shownRestream, ...kept } =
        editing.settings && typeof editing.settings === "object" ? editing.settings : {};
      const keepRestream = !restream && shownRestream ? { restream: shownRestream } : {};
      await editCamera(editing.name, { ...kept, ...keepRestream, ...chosen, ...(url ? { url } : {}) });
    } else {
      await addCamera({ name, url, ...chosen });
    }
    closeForm();
    changed();
  } catch (err) {
    showFormError(failure(err));
  } finally {
    busy = false;
    els.save.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Edit and Remove on each camera's card

export function addCardControls(card, toolbar) {
  const edit = element("button", "edit", { type: "button" });
  const remove = element("button", "remove", { type: "button" });
  toolbar.append(edit, remove);
  const confirm = element("div", "camera-confirm");
  confirm.hidden = true;
  const question = element("p", "camera-confirm-text");
  const yes = element("button", "confirm-remove", { type: "button" });
  const no = element("button", "cancel-remove", { type: "button" });
  const row = element("div", "toolbar");
  row.append(yes, no);
  confirm.append(question, row);
  const error = element("p", "camera-admin-error inline-error", { role: "alert" });
  error.hidden = true;
  card.root.append(confirm, error);
  card.admin = { edit, remove, confirm, question, yes, no, error, message: null, busy: false };

  edit.addEventListener("click", () => { if (card.cam) openForm(card.cam); });
  remove.addEventListener("click", () => {
    card.admin.message = null;
    confirm.hidden = false;
    renderCardControls(card);
    no.focus();
  });
  no.addEventListener("click", () => {
    confirm.hidden = true;
    renderCardControls(card);
    remove.focus();
  });
  yes.addEventListener("click", async () => {
    if (card.admin.busy) return;
    card.admin.busy = true;
    renderCardControls(card);
    try {
      await removeCamera(card.name);
      confirm.hidden = true;
      if (editing && editing.name === card.name) closeForm();
      changed();
    } catch (err) {
      card.admin.message = failure(err);
    } finally {
      card.admin.busy = false;
      renderCardControls(card);
    }
  });
}

export function renderCardControls(card) {
  const a = card.admin;
  if (!a) return;
  const allowed = manage.enabled && !(card.cam && card.cam.fixed === true);
  a.edit.hidden = !allowed;
  a.remove.hidden = !allowed;
  if (!allowed) a.confirm.hidden = true;
  a.edit.disabled = a.busy;
  a.remove.disabled = a.busy || !a.confirm.hidden;
  a.yes.disabled = a.busy;
  setText(a.edit, t("cameras.manage.edit"));
  setText(a.remove, t("cameras.manage.remove"));
  setText(a.question, t("cameras.manage.confirm", { name: card.name }));
  setText(a.yes, t("cameras.manage.confirmYes"));
  setText(a.no, t("cameras.manage.confirmNo"));
  a.error.hidden = !a.message;
  setText(a.error, a.message ? t(a.message.key, a.message.vars) : "");
}

// ---------------------------------------------------------------------------------------------------------------
// Wiring

// onChanged(): the camera list changed on the server (refresh it); cards(): the cards on the page now.
export function initCameraAdmin({ onChanged, cards }) {
  changed = onChanged;
  cardsNow = cards;
  renderModes(els.mode, FALLBACK_MODES);
  els.add.addEventListener("click", () => openForm(null));
  els.cancel.addEventListener("click", closeForm);
  els.form.addEventListener("submit", submit);
  els.form.addEventListener("keydown", (ev) => { if (ev.key === "Escape") closeForm(); });
  onLangChange(() => {
    renderModes(els.mode, [...els.mode.options].map((o) => o.value));
    renderManage();
    for (const card of cardsNow()) renderCardControls(card);
  });
  renderManage();
}

// The modes the server offers (GET /config), once known.
export function setModes(modes) {
  if (Array.isArray(modes) && modes.length) renderModes(els.mode, modes);
}
