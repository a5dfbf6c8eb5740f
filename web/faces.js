// Faces to keep visible or to hide (docs/http-api.md, "Enrolled faces"): the identity select (#identity, a live
// setting sent by settings.js), "Keep my face" (#face-keep-me: enrols the largest face of the live picture as "me"
// and switches to keeping enrolled faces), a photo with a name (#face-name, #face-photo), and the list
// (#face-list: one <li data-name> per person, with a .face-remove button). Enrolled faces belong to the live
// session: only embeddings, kept in the server's memory, gone when the session ends.
//
// Hooks for tests: #faces (data-available="true|false"), #face-list[data-count], #face-error (role=alert).

import { ApiError, detailOf, enrollLive, enrollPhoto, getFaces, removeFace } from "./api.js";
import { $, element, messageSlot, setText } from "./dom.js";
import { onLangChange, t } from "./i18n.js";

const els = {
  body: document.body,
  group: $("faces"),
  identity: $("identity"),
  keepMe: $("face-keep-me"),
  name: $("face-name"),
  photo: $("face-photo"),
  list: $("face-list"),
  note: $("face-note"),
};
const showError = messageSlot($("face-error"));

let current = () => null;
let changeIdentity = () => {};
let available = false;
let people = {};
let busy = false;

function live() {
  const s = current();
  return s && s.id && !s.cancelled && els.body.dataset.state === "live" ? s : null;
}

function render() {
  els.group.dataset.available = available ? "true" : "false";
  const s = live();
  const enabled = available && Boolean(s) && !busy;
  els.keepMe.disabled = !enabled;
  els.photo.disabled = !enabled;
  els.name.disabled = !enabled;
  els.identity.disabled = !available;
  setText(els.note, t(!available ? "faces.unavailable" : s ? "faces.note" : "faces.startFirst"));
  const names = Object.keys(people).sort();
  els.list.dataset.count = String(names.length);
  els.list.replaceChildren(...names.map((name) => {
    const li = element("li", "face", { "data-name": name });
    const label = element("span", "face-name");
    setText(label, t("faces.person", { name, n: people[name] }));
    const remove = element("button", "face-remove", { type: "button" });
    setText(remove, t("faces.remove"));
    remove.disabled = !enabled;
    remove.addEventListener("click", () => run(() => removeFace(live().id, name)));
    li.append(label, remove);
    return li;
  }));
}

function describe(err) {
  if (err instanceof ApiError && err.kind === "http") return { key: "faces.refused", vars: { detail: err.detail } };
  return { key: "faces.failed", vars: { detail: detailOf(err) } };
}

async function run(action) {
  if (!live() || busy) return null;
  busy = true;
  showError(null);
  render();
  try {
    const answer = await action();
    if (answer && typeof answer.people === "object") people = answer.people;
    return answer;
  } catch (err) {
    showError(describe(err));
    return null;
  } finally {
    busy = false;
    render();
  }
}

async function keepMe() {
  const answer = await run(() => enrollLive(live().id, "me"));
  if (answer && els.identity.value === "off") {
    els.identity.value = "keep";
    changeIdentity(); // "keep my face" means: show it
  }
}

async function addPhoto() {
  const file = els.photo.files && els.photo.files[0];
  const name = els.name.value.trim() || (file ? file.name.replace(/\.[^.]+$/, "") : "");
  if (!file) return;
  await run(() => enrollPhoto(live().id, name, file));
  els.photo.value = "";
}

export function applyFacesConfig(config) {
  available = Boolean(config && config.identity && config.identity.available);
  render();
}

// current(): the session record; identityChanged(): tell settings.js the select changed.
export function initFaces({ current: currentSession, identityChanged }) {
  current = currentSession;
  changeIdentity = identityChanged;
  els.keepMe.addEventListener("click", keepMe);
  els.photo.addEventListener("change", addPhoto);
  new MutationObserver(() => {
    const s = live();
    if (!s) {
      people = {}; // the server forgets them with the session
      render();
      return;
    }
    getFaces(s.id).then((answer) => { people = answer.people || {}; render(); }).catch(() => {});
  }).observe(els.body, { attributes: true, attributeFilter: ["data-state"] });
  onLangChange(render);
  render();
}
