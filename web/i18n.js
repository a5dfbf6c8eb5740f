// All user-visible text of the page. English and Korean; `t(key, vars)` fills {name} placeholders.
// Static text in index.html carries data-i18n="key" (textContent), data-i18n-aria-label="key",
// data-i18n-title="key" or data-i18n-placeholder="key"; translatePage() fills them in.

export const dictionaries = {
  en: {
    "app.title": "Face Streamer",
    "app.tagline": "Your webcam, with every face hidden before the picture leaves the server.",
    "lang.label": "Language",

    "service.label": "Service",
    "service.checking": "checking…",
    "service.ready": "ready, detector on {provider}",
    "service.starting": "starting, the detector is loading…",
    "service.error": "detector failed to load: {error}",
    "service.unreachable": "unreachable",
    "service.sessions": "{count} live session(s)",

    "output.label": "Anonymized video from the server",
    "output.idle": "Press Start to send your camera to the server. Only the anonymized video comes back and is shown here.",
    "output.connecting": "Connecting…",

    "state.idle": "Idle",
    "state.connecting": "Connecting…",
    "state.live": "Live: every face is hidden",
    "state.error": "Stopped after an error",

    "btn.start": "Start",
    "btn.stop": "Stop",
    "btn.recordStart": "Record",
    "btn.recordStop": "Stop recording",
    "btn.snapshot": "Snapshot",

    "record.recording": "Recording {time}",
    "record.download": "Download recording ({size})",
    "record.unsupported": "This browser cannot record video (MediaRecorder is missing).",
    "record.failed": "Recording failed: {detail}",
    "snapshot.download": "Download snapshot (PNG)",
    "snapshot.failed": "Could not take a snapshot: {detail}",
    "capture.legend": "Save the anonymized video",
    "capture.note": "Recording and snapshots use only the anonymized video from the server.",

    "settings.legend": "Settings",
    "settings.camera": "Camera",
    "settings.cameraDefault": "Default camera",
    "settings.cameraN": "Camera {n}",
    "settings.resolution": "Resolution",
    "settings.mode": "How faces are hidden",
    "mode.mosaic": "Mosaic",
    "mode.blur": "Blur",
    "mode.solid": "Solid",
    "settings.strength": "Strength",
    "settings.advanced": "Advanced",
    "settings.padding": "Padding (box scale, 1.0–3.0)",
    "settings.threshold": "Detection threshold (0.05–0.95)",
    "settings.ellipse": "Hide an ellipse instead of the whole box",
    "settings.debug": "Debug boxes (outline hidden areas)",
    "settings.liveNote": "Changes apply immediately while live.",
    "settings.refused": "The server refused this setting ({status}): {detail}",
    "settings.failed": "The setting could not be sent: {detail}",
    "settings.cameraSwitchFailed": "Could not switch the camera: {detail}",

    "raw.toggle": "Raw camera (only on this device, not anonymized)",
    "raw.label": "Raw camera preview, only on this device, not anonymized",
    "raw.note": "This preview never leaves your browser and is not recorded.",

    "stats.legend": "Live statistics",
    "stats.server": "Server",
    "stats.browser": "This browser",
    "stats.fpsIn": "Frames/s in",
    "stats.fpsOut": "Frames/s out",
    "stats.framesIn": "Frames in",
    "stats.framesOut": "Frames out",
    "stats.dropped": "Frames dropped",
    "stats.processingMs": "Processing (ms)",
    "stats.inferenceMs": "Inference (ms)",
    "stats.hiddenWhole": "Frames hidden whole",
    "stats.provider": "Provider",
    "stats.serverResolution": "Server frame size",
    "stats.fpsReceived": "Frames/s received",
    "stats.framesDecoded": "Frames decoded",
    "stats.rtt": "Round trip (ms)",
    "stats.resolution": "Received resolution",
    "stats.sessionId": "Session",

    "err.insecure": "The camera is only available on a secure page (HTTPS or localhost).",
    "err.cameraDenied": "Camera access was denied. Allow the camera for this page in the browser's site settings, then press Start again.",
    "err.noCamera": "No camera was found. Connect a camera and press Start again.",
    "err.cameraBusy": "The camera could not be started; another application may be using it. ({detail})",
    "err.cameraConstraints": "The camera does not support the chosen resolution or device. ({detail})",
    "err.camera": "The camera could not be opened: {detail}",
    "err.unreachable": "The server cannot be reached. Check that the service is running. ({detail})",
    "err.http": "The server answered {status}: {detail}",
    "err.busy": "The server is busy or still loading (503): {detail} Try again in {seconds} s (Retry-After).",
    "err.busyNoRetry": "The server is busy or still loading (503): {detail}",
    "err.badAnswer": "The server sent an answer the browser could not use: {detail}",
    "err.webrtc": "WebRTC failed in the browser: {detail}",
    "err.iceTimeout": "The video connection could not be established (ICE/DTLS did not connect within {seconds} s). A firewall or network may be blocking it.",
    "err.iceFailed": "The video connection failed (ICE/DTLS). A firewall or network may be blocking it.",
    "err.disconnected": "The video connection was lost for more than {seconds} s.",
    "err.sessionGone": "The server closed this session.",
    "err.noVideo": "The server's answer contained no video track.",
    "err.noWebrtc": "This browser does not support WebRTC.",

    "tabs.label": "View",
    "tabs.webcam": "Webcam",
    "tabs.cameras": "Cameras",

    "cameras.title": "Cameras",
    "cameras.intro": "Network cameras (RTSP) pulled by the server. Every face is hidden on the server before the video reaches this page.",
    "cameras.loading": "Loading cameras…",
    "cameras.empty": "No cameras are configured on this server.",
    "cameras.emptyHow": "Add cameras when you start the service, one --camera option per camera:",
    "cameras.emptyConfig": "Or list them in a TOML file ([[camera]] tables) and pass --config FILE.",
    "cameras.listFailed": "Could not load the camera list: {detail}",
    "cameras.state.stopped": "Stopped",
    "cameras.state.connecting": "Connecting…",
    "cameras.state.live": "Live",
    "cameras.state.reconnecting": "Reconnecting…",
    "cameras.fps": "{fps} fps",
    "cameras.age": "last frame {age} s ago",
    "cameras.noFrame": "no picture yet",
    "cameras.viewers": "{count} viewer(s)",
    "cameras.alwaysOn": "always on",
    "cameras.onDemand": "starts when watched",
    "cameras.transport": "RTSP over {transport}",
    "cameras.lastError": "Last error: {error}",
    "cameras.watch": "Watch",
    "cameras.stop": "Stop",
    "cameras.snapshot": "Snapshot",
    "cameras.snapshotTitle": "Download the latest anonymized frame of {name} (JPEG)",
    "cameras.snapshotBusy": "Taking a snapshot…",
    "cameras.snapshotSaved": "Snapshot saved ({size}).",
    "cameras.videoLabel": "Anonymized video of camera {name}",
    "cameras.watchConnecting": "Connecting to the video…",
    "cameras.watchWaiting": "Connected, waiting for the first picture…",
    "cameras.watchLive": "Watching",
    "cameras.watchReceiving": "Receiving {fps} fps · {size}",
    "cameras.overlayConnecting": "Connecting…",
    "cameras.overlayReconnecting": "The camera is reconnecting; the picture continues when it is back.",
    "cameras.overlayStalled": "No new picture from the camera at the moment…",
    "cameras.overlayStopped": "The camera is stopped on the server. Press Stop, then Watch to start it again.",
    "cameras.err.notFound": "{name}: there is no such camera on the server (404): {detail}.",
    "cameras.err.busy": "{name} cannot be watched right now (503): {detail}. Try again in {seconds} s.",
    "cameras.err.busyNoRetry": "{name} cannot be watched right now (503): {detail}",
    "cameras.err.http": "{name}: the server answered {status}: {detail}",
    "cameras.err.unreachable": "{name}: the server cannot be reached. ({detail})",
    "cameras.err.badAnswer": "{name}: the server sent an answer the browser could not use: {detail}",
    "cameras.err.webrtc": "{name}: WebRTC failed in the browser: {detail}",
    "cameras.err.iceTimeout": "{name}: the video connection could not be established within {seconds} s (ICE/DTLS). A firewall or network may be blocking it.",
    "cameras.err.iceFailed": "{name}: the video connection failed (ICE/DTLS). A firewall or network may be blocking it.",
    "cameras.err.disconnected": "{name}: the video connection was lost for more than {seconds} s.",
    "cameras.err.noWebrtc": "This browser does not support WebRTC, so cameras cannot be watched here.",
    "cameras.err.snapshot": "{name}: no snapshot ({detail})",
    "cameras.err.snapshotBusy": "{name}: no snapshot yet (503): {detail}. Try again in {seconds} s.",
  },

  ko: {
    "app.title": "Face Streamer",
    "app.tagline": "웹캠 영상의 모든 얼굴을 서버에서 가린 뒤에만 내보냅니다.",
    "lang.label": "언어",

    "service.label": "서비스",
    "service.checking": "확인 중…",
    "service.ready": "준비됨, 검출기 실행: {provider}",
    "service.starting": "시작 중, 검출기를 불러오는 중…",
    "service.error": "검출기를 불러오지 못했습니다: {error}",
    "service.unreachable": "연결할 수 없음",
    "service.sessions": "실시간 세션 {count}개",

    "output.label": "서버에서 익명화된 영상",
    "output.idle": "시작을 누르면 카메라 영상을 서버로 보냅니다. 익명화된 영상만 돌아와 여기에 표시됩니다.",
    "output.connecting": "연결 중…",

    "state.idle": "대기 중",
    "state.connecting": "연결 중…",
    "state.live": "실시간: 모든 얼굴이 가려집니다",
    "state.error": "오류로 중지됨",

    "btn.start": "시작",
    "btn.stop": "중지",
    "btn.recordStart": "녹화",
    "btn.recordStop": "녹화 중지",
    "btn.snapshot": "스냅샷",

    "record.recording": "녹화 중 {time}",
    "record.download": "녹화 파일 내려받기 ({size})",
    "record.unsupported": "이 브라우저는 영상을 녹화할 수 없습니다(MediaRecorder 없음).",
    "record.failed": "녹화에 실패했습니다: {detail}",
    "snapshot.download": "스냅샷 내려받기 (PNG)",
    "snapshot.failed": "스냅샷을 만들 수 없습니다: {detail}",
    "capture.legend": "익명화된 영상 저장",
    "capture.note": "녹화와 스냅샷에는 서버에서 익명화된 영상만 사용됩니다.",

    "settings.legend": "설정",
    "settings.camera": "카메라",
    "settings.cameraDefault": "기본 카메라",
    "settings.cameraN": "카메라 {n}",
    "settings.resolution": "해상도",
    "settings.mode": "얼굴 가리기 방식",
    "mode.mosaic": "모자이크",
    "mode.blur": "흐림",
    "mode.solid": "단색",
    "settings.strength": "강도",
    "settings.advanced": "고급",
    "settings.padding": "여백 (상자 배율, 1.0–3.0)",
    "settings.threshold": "검출 임계값 (0.05–0.95)",
    "settings.ellipse": "상자 전체 대신 타원 영역만 가리기",
    "settings.debug": "디버그 상자 (가린 영역 테두리 표시)",
    "settings.liveNote": "실시간 중에는 변경 사항이 바로 적용됩니다.",
    "settings.refused": "서버가 이 설정을 거부했습니다 ({status}): {detail}",
    "settings.failed": "설정을 보내지 못했습니다: {detail}",
    "settings.cameraSwitchFailed": "카메라를 전환하지 못했습니다: {detail}",

    "raw.toggle": "원본 카메라 (이 기기에서만 표시, 익명화되지 않음)",
    "raw.label": "원본 카메라 미리보기, 이 기기에서만 표시, 익명화되지 않음",
    "raw.note": "이 미리보기는 브라우저 밖으로 나가지 않으며 녹화되지 않습니다.",

    "stats.legend": "실시간 통계",
    "stats.server": "서버",
    "stats.browser": "이 브라우저",
    "stats.fpsIn": "입력 프레임/초",
    "stats.fpsOut": "출력 프레임/초",
    "stats.framesIn": "입력 프레임",
    "stats.framesOut": "출력 프레임",
    "stats.dropped": "버린 프레임",
    "stats.processingMs": "처리 시간 (ms)",
    "stats.inferenceMs": "추론 시간 (ms)",
    "stats.hiddenWhole": "전체를 가린 프레임",
    "stats.provider": "실행 제공자",
    "stats.serverResolution": "서버 프레임 크기",
    "stats.fpsReceived": "수신 프레임/초",
    "stats.framesDecoded": "디코딩된 프레임",
    "stats.rtt": "왕복 시간 (ms)",
    "stats.resolution": "수신 해상도",
    "stats.sessionId": "세션",

    "err.insecure": "카메라는 보안 페이지(HTTPS 또는 localhost)에서만 사용할 수 있습니다.",
    "err.cameraDenied": "카메라 접근이 거부되었습니다. 브라우저의 사이트 설정에서 이 페이지의 카메라를 허용한 뒤 다시 시작을 누르세요.",
    "err.noCamera": "카메라를 찾을 수 없습니다. 카메라를 연결한 뒤 다시 시작을 누르세요.",
    "err.cameraBusy": "카메라를 시작할 수 없습니다. 다른 프로그램이 사용 중일 수 있습니다. ({detail})",
    "err.cameraConstraints": "카메라가 선택한 해상도나 장치를 지원하지 않습니다. ({detail})",
    "err.camera": "카메라를 열 수 없습니다: {detail}",
    "err.unreachable": "서버에 연결할 수 없습니다. 서비스가 실행 중인지 확인하세요. ({detail})",
    "err.http": "서버 응답 {status}: {detail}",
    "err.busy": "서버가 바쁘거나 아직 준비 중입니다 (503): {detail} {seconds}초 후에 다시 시도하세요 (Retry-After).",
    "err.busyNoRetry": "서버가 바쁘거나 아직 준비 중입니다 (503): {detail}",
    "err.badAnswer": "서버의 응답을 브라우저가 사용할 수 없습니다: {detail}",
    "err.webrtc": "브라우저에서 WebRTC 오류가 발생했습니다: {detail}",
    "err.iceTimeout": "영상 연결을 {seconds}초 안에 맺지 못했습니다 (ICE/DTLS). 방화벽이나 네트워크가 막고 있을 수 있습니다.",
    "err.iceFailed": "영상 연결에 실패했습니다 (ICE/DTLS). 방화벽이나 네트워크가 막고 있을 수 있습니다.",
    "err.disconnected": "영상 연결이 {seconds}초 넘게 끊겼습니다.",
    "err.sessionGone": "서버가 이 세션을 닫았습니다.",
    "err.noVideo": "서버의 응답에 영상 트랙이 없습니다.",
    "err.noWebrtc": "이 브라우저는 WebRTC를 지원하지 않습니다.",

    "tabs.label": "보기",
    "tabs.webcam": "웹캠",
    "tabs.cameras": "카메라",

    "cameras.title": "카메라",
    "cameras.intro": "서버가 받아 오는 네트워크 카메라(RTSP)입니다. 영상이 이 페이지에 도착하기 전에 서버에서 모든 얼굴을 가립니다.",
    "cameras.loading": "카메라 목록을 불러오는 중…",
    "cameras.empty": "이 서버에 설정된 카메라가 없습니다.",
    "cameras.emptyHow": "서비스를 시작할 때 카메라마다 --camera 옵션을 하나씩 추가하세요:",
    "cameras.emptyConfig": "또는 TOML 파일([[camera]] 테이블)에 나열하고 --config FILE 로 넘기세요.",
    "cameras.listFailed": "카메라 목록을 불러오지 못했습니다: {detail}",
    "cameras.state.stopped": "중지됨",
    "cameras.state.connecting": "연결 중…",
    "cameras.state.live": "실시간",
    "cameras.state.reconnecting": "다시 연결 중…",
    "cameras.fps": "{fps} fps",
    "cameras.age": "마지막 프레임 {age}초 전",
    "cameras.noFrame": "아직 영상 없음",
    "cameras.viewers": "시청자 {count}명",
    "cameras.alwaysOn": "항상 켜짐",
    "cameras.onDemand": "시청할 때 시작",
    "cameras.transport": "RTSP ({transport})",
    "cameras.lastError": "마지막 오류: {error}",
    "cameras.watch": "보기",
    "cameras.stop": "중지",
    "cameras.snapshot": "스냅샷",
    "cameras.snapshotTitle": "{name}의 최신 익명화 프레임 내려받기 (JPEG)",
    "cameras.snapshotBusy": "스냅샷을 만드는 중…",
    "cameras.snapshotSaved": "스냅샷을 저장했습니다 ({size}).",
    "cameras.videoLabel": "카메라 {name}의 익명화된 영상",
    "cameras.watchConnecting": "영상에 연결하는 중…",
    "cameras.watchWaiting": "연결됨, 첫 화면을 기다리는 중…",
    "cameras.watchLive": "시청 중",
    "cameras.watchReceiving": "수신 {fps} fps · {size}",
    "cameras.overlayConnecting": "연결 중…",
    "cameras.overlayReconnecting": "카메라에 다시 연결하는 중입니다. 연결되면 영상이 이어집니다.",
    "cameras.overlayStalled": "지금은 카메라에서 새 화면이 오지 않습니다…",
    "cameras.overlayStopped": "서버에서 카메라가 중지되었습니다. 중지를 누른 뒤 다시 보기를 누르세요.",
    "cameras.err.notFound": "{name}: 서버에 그런 카메라가 없습니다 (404): {detail}.",
    "cameras.err.busy": "{name}: 지금은 볼 수 없습니다 (503): {detail}. {seconds}초 후에 다시 시도하세요.",
    "cameras.err.busyNoRetry": "{name}: 지금은 볼 수 없습니다 (503): {detail}",
    "cameras.err.http": "{name}: 서버 응답 {status}: {detail}",
    "cameras.err.unreachable": "{name}: 서버에 연결할 수 없습니다. ({detail})",
    "cameras.err.badAnswer": "{name}: 서버의 응답을 브라우저가 사용할 수 없습니다: {detail}",
    "cameras.err.webrtc": "{name}: 브라우저에서 WebRTC 오류가 발생했습니다: {detail}",
    "cameras.err.iceTimeout": "{name}: 영상 연결을 {seconds}초 안에 맺지 못했습니다 (ICE/DTLS). 방화벽이나 네트워크가 막고 있을 수 있습니다.",
    "cameras.err.iceFailed": "{name}: 영상 연결에 실패했습니다 (ICE/DTLS). 방화벽이나 네트워크가 막고 있을 수 있습니다.",
    "cameras.err.disconnected": "{name}: 영상 연결이 {seconds}초 넘게 끊겼습니다.",
    "cameras.err.noWebrtc": "이 브라우저는 WebRTC를 지원하지 않아 카메라를 볼 수 없습니다.",
    "cameras.err.snapshot": "{name}: 스냅샷을 받지 못했습니다 ({detail})",
    "cameras.err.snapshotBusy": "{name}: 아직 스냅샷이 없습니다 (503): {detail}. {seconds}초 후에 다시 시도하세요.",
  },
};

export const LANGUAGES = [
  { code: "en", name: "English" },
  { code: "ko", name: "한국어" },
];

const STORAGE_KEY = "face-streamer.lang";
const listeners = new Set();
let current = initialLang();

function stored() {
  try {
    return window.localStorage.getItem(STORAGE_KEY);
  } catch {
    return null; // storage disabled (privacy mode, sandboxed frame)
  }
}

function initialLang() {
  const saved = stored();
  if (saved && saved in dictionaries) return saved;
  const preferred = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language];
  for (const tag of preferred) {
    const base = String(tag || "").toLowerCase().split("-")[0];
    if (base === "ko") return "ko";
    if (base === "en") return "en";
  }
  return "en";
}

export function getLang() {
  return current;
}

export function t(key, vars = {}) {
  const text = dictionaries[current][key] ?? dictionaries.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (match, name) => (name in vars ? String(vars[name]) : match));
}

export function setLang(lang, { persist = true } = {}) {
  if (!(lang in dictionaries)) return;
  current = lang;
  if (persist) {
    try {
      window.localStorage.setItem(STORAGE_KEY, lang);
    } catch {
      // not persisted; the choice still holds for this page
    }
  }
  translatePage();
  for (const fn of listeners) fn(lang);
}

export function onLangChange(fn) {
  listeners.add(fn);
}

export function translatePage(root = document) {
  document.documentElement.lang = current;
  document.title = t("app.title");
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const [attr, data] of [["aria-label", "i18nAriaLabel"], ["title", "i18nTitle"],
    ["placeholder", "i18nPlaceholder"]]) {
    for (const el of root.querySelectorAll(`[data-i18n-${attr}]`)) el.setAttribute(attr, t(el.dataset[data]));
  }
}
