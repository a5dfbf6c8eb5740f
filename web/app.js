// Live webcam anonymizer client (docs/http-api.md). The browser sends its camera over WebRTC and shows only the
// anonymized video the server sends back. The raw camera preview is opt-in and never recorded.
//
// Hooks for tests: <body data-state="idle|connecting|live|error" data-connection="<pc.connectionState>"
// data-session="<id>" data-recording="true|false">, #start, #stop, #output, #error, stat values #stat-* with the
// raw number in data-value. The Cameras view (network cameras over WHEP) is cameras.js; the webcam view stays the
// default. The Upload view (photos and videos as server jobs) is upload.js.
//
// This module wires the page; the webcam view's jobs are session.js (the WebRTC session and its states),
// settings.js (the hiding settings, sent live), webcam.js (the local camera), stats.js and capture.js (recording
// and snapshots).

import { getConfig } from "./api.js";
import { initCameras } from "./cameras.js";
import { initCapture } from "./capture.js";
import { $ } from "./dom.js";
import { LANGUAGES, getLang, onLangChange, setLang, translatePage } from "./i18n.js";
import { currentSession, initSession, sessionGone } from "./session.js";
import { applyConfig, initSettings } from "./settings.js";
import { startHealthPolling } from "./status.js";
import { initUpload } from "./upload.js";
import { initWebcam, refreshCameras } from "./webcam.js";

function initLanguages() {
  const select = $("lang");
  select.replaceChildren(...LANGUAGES.map((l) => new Option(l.name, l.code)));
  select.value = getLang();
  select.addEventListener("change", () => setLang(select.value));
  onLangChange(() => { select.value = getLang(); });
}

function init() {
  initLanguages();
  translatePage();
  initSettings({ current: currentSession, gone: sessionGone });
  initWebcam(currentSession);
  initCapture();
  initSession();
  startHealthPolling();
  initUpload(); // before initCameras: the Upload tab reads #upload in the address before the Cameras view resets it
  initCameras();
  refreshCameras();
  getConfig().then(applyConfig).catch(() => {}); // defaults and modes; Start asks again and reports errors
}

init();
