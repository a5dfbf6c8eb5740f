// The log-out button in the header: shown only when the server asks for an access token (GET /config "auth").
// Logging out is a plain form POST to /logout (no script needed); the server ends the session and clears the cookie.

import { getConfig } from "./api.js";

export async function initAuth() {
  const form = document.getElementById("logout");
  if (!form) return;
  try {
    const config = await getConfig();
    form.hidden = !(config && config.auth === true);
  } catch {
    form.hidden = true;
  }
}

initAuth();
