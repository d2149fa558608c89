// tapd: the only script of the site. It carries WebAuthn calls between the page and the
// server; everything else works without it. Buttons with data-webauthn="register" add a
// passkey, data-webauthn="sign-in" sign in with one.
"use strict";
(function () {
  function b64urlToBytes(text) {
    const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const padded = b64 + "===".slice((b64.length + 3) % 4);
    const raw = atob(padded);
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes.buffer;
  }
  function bytesToB64url(buffer) {
    const bytes = new Uint8Array(buffer);
    let raw = "";
    for (let i = 0; i < bytes.length; i++) raw += String.fromCharCode(bytes[i]);
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }
  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
      body: JSON.stringify(body),
    });
    let data = {};
    try { data = await response.json(); } catch (e) { data = {}; }
    if (!response.ok) throw new Error(data.error || "The server refused the request (" + response.status + ").");
    return data;
  }
  function creationOptions(options) {
    const pk = options.publicKey;
    pk.challenge = b64urlToBytes(pk.challenge);
    pk.user.id = b64urlToBytes(pk.user.id);
    (pk.excludeCredentials || []).forEach(function (c) { c.id = b64urlToBytes(c.id); });
    return { publicKey: pk };
  }
  function requestOptions(options) {
    const pk = options.publicKey;
    pk.challenge = b64urlToBytes(pk.challenge);
    (pk.allowCredentials || []).forEach(function (c) { c.id = b64urlToBytes(c.id); });
    return { publicKey: pk };
  }
  function registrationJson(credential) {
    const r = credential.response;
    return {
      id: credential.id,
      rawId: bytesToB64url(credential.rawId),
      type: credential.type,
      response: {
        attestationObject: bytesToB64url(r.attestationObject),
        clientDataJSON: bytesToB64url(r.clientDataJSON),
        transports: r.getTransports ? r.getTransports() : [],
      },
      extensions: credential.getClientExtensionResults(),
    };
  }
  function assertionJson(credential) {
    const r = credential.response;
    return {
      id: credential.id,
      rawId: bytesToB64url(credential.rawId),
      type: credential.type,
      response: {
        authenticatorData: bytesToB64url(r.authenticatorData),
        clientDataJSON: bytesToB64url(r.clientDataJSON),
        signature: bytesToB64url(r.signature),
        userHandle: r.userHandle ? bytesToB64url(r.userHandle) : null,
      },
      extensions: credential.getClientExtensionResults(),
    };
  }
  function say(button, text, isError) {
    const status = button.parentElement.querySelector(".webauthn-status");
    if (status) {
      status.textContent = text;
      status.classList.toggle("error", !!isError);
    }
  }
  function explain(error) {
    if (error && error.name === "NotAllowedError") return "The request was cancelled or timed out. Try again.";
    if (error && error.name === "InvalidStateError") return "This passkey or security key is already registered.";
    return (error && error.message) || "Something went wrong. Try again.";
  }
  async function register(button) {
    const nameInput = document.getElementById("passkey-name");
    const start = await post("/security-info/passkeys/start", {});
    say(button, "Follow your browser's prompt…", false);
    const credential = await navigator.credentials.create(creationOptions(start.options));
    const done = await post("/security-info/passkeys/finish", {
      ceremony: start.ceremony,
      name: nameInput ? nameInput.value : "",
      credential: registrationJson(credential),
    });
    window.location.assign(done.redirect);
  }
  async function signIn(button) {
    const start = await post("/sign-in/passkey/start", {});
    say(button, "Follow your browser's prompt…", false);
    const credential = await navigator.credentials.get(requestOptions(start.options));
    const done = await post("/sign-in/passkey/finish", {
      ceremony: start.ceremony,
      credential: assertionJson(credential),
    });
    window.location.assign(done.redirect);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-webauthn]").forEach(function (button) {
      if (!window.PublicKeyCredential || !navigator.credentials) {
        button.disabled = true;
        say(button, "This browser can't use passkeys.", true);
        return;
      }
      button.addEventListener("click", async function () {
        button.disabled = true;
        say(button, "", false);
        try {
          if (button.dataset.webauthn === "register") await register(button);
          else await signIn(button);
        } catch (error) {
          say(button, explain(error), true);
          button.disabled = false;
        }
      });
    });
  });
})();
