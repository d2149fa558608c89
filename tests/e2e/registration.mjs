// End-to-end test of the tapd web registration site in headless Debian Chromium, driven by
// tests/web/e2e.rs (which starts the real tapd, creates the TAPs with tapctl and checks the
// admin API afterwards). A WebAuthn virtual authenticator comes from the DevTools protocol.
//
// Environment: BASE_URL (http://localhost:PORT), ALICE_TAP (one-time), BOB_TAP (starts in the
// future), ERIN_TAP (interrupt mode), SCREENSHOTS (folder), BLOCKED_MESSAGE,
// NOT_YET_VALID_MESSAGE, NOT_FOUND_MESSAGE.
import { chromium } from "playwright-core";
import { createHmac } from "node:crypto";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`missing environment variable ${name}`);
  return value;
};
const BASE = env("BASE_URL");
const SHOTS = env("SCREENSHOTS");
mkdirSync(SHOTS, { recursive: true });

function step(text) {
  console.log(`e2e: ${text}`);
}

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

function base32Decode(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0, value = 0;
  const out = [];
  for (const c of text.replace(/[\s=]/g, "").toUpperCase()) {
    const index = alphabet.indexOf(c);
    if (index < 0) throw new Error(`not base32: ${text}`);
    value = (value << 5) | index;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((value >>> bits) & 0xff);
    }
  }
  return Buffer.from(out);
}

// RFC 6238, SHA-1, 6 digits, 30 s: what an authenticator app would show now.
function totp(secret, now = Date.now()) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(now / 1000 / 30)));
  const digest = createHmac("sha1", base32Decode(secret)).update(counter).digest();
  const offset = digest[digest.length - 1] & 0x0f;
  const binary = ((digest[offset] & 0x7f) << 24) | (digest[offset + 1] << 16) |
    (digest[offset + 2] << 8) | digest[offset + 3];
  return String(binary % 1_000_000).padStart(6, "0");
}

const profile = mkdtempSync(join(tmpdir(), "tapd-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
  ],
  viewport: { width: 1100, height: 900 },
});
context.setDefaultTimeout(15_000);

const page = context.pages()[0] ?? (await context.newPage());
try {
  const shot = async (name) => {
    await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
    step(`screenshot ${name}.png`);
  };
  const alert = async () => (await page.locator('[role="alert"]').first().textContent()).trim();

  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      transport: "internal",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });

  const identify = async (name) => {
    await page.goto(BASE + "/");
    await page.getByLabel("User name or email").fill(name);
    await page.getByRole("button", { name: "Next" }).click();
  };
  const signOut = async () => {
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.waitForSelector("text=You have signed out.");
  };

  step("the sign-in page");
  await page.goto(BASE + "/");
  check((await page.title()).startsWith("Sign in"), "sign-in title");
  await shot("01-sign-in");

  step("alice gives her name and gets the TAP prompt");
  await identify("alice@example.org");
  await page.waitForSelector("text=Enter Temporary Access Pass");
  await shot("02-tap-prompt");

  step("a wrong code is refused with tap_not_found's message");
  await page.getByLabel("Temporary Access Pass").fill("not-the-code");
  await page.getByRole("button", { name: "Sign in" }).click();
  check((await alert()) === env("NOT_FOUND_MESSAGE"), `not-found message, got: ${await alert()}`);
  await shot("03-error-tap-not-found");

  step("the one-time TAP signs her in");
  await page.getByLabel("Temporary Access Pass").fill(env("ALICE_TAP"));
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL("**/security-info");
  await page.waitForSelector("text=You signed in with a Temporary Access Pass");
  await shot("04-security-info");

  step("she registers a passkey");
  await page.getByLabel("Name (optional)").fill("Work laptop");
  await page.getByRole("button", { name: "Add passkey" }).click();
  await page.waitForURL("**/security-info?added=passkey");
  await page.waitForSelector("text=Your passkey was added.");
  check(await page.locator(".method", { hasText: "Work laptop" }).isVisible(), "passkey listed");
  const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
  check(credentials.length === 1 && credentials[0].isResidentCredential, "one resident credential");
  await shot("05-passkey-added");

  step("she adds an authenticator app with a code computed from the shown secret");
  await page.getByRole("button", { name: "Add authenticator app" }).click();
  await page.waitForSelector("text=Add an authenticator app");
  check(await page.locator(".qr svg").isVisible(), "QR code shown");
  const secret = (await page.locator("#totp-secret").textContent()).trim();
  await shot("06-authenticator-app");
  await page.getByLabel("6-digit code").fill(totp(secret) === "000000" ? "111111" : "000000");
  await page.getByRole("button", { name: "Add", exact: true }).click();
  await page.waitForSelector("text=That code didn't work");
  await shot("07-error-authenticator-app-code");
  await page.getByLabel("Name (optional)").fill("Phone");
  await page.getByLabel("6-digit code").fill(totp(secret));
  await page.getByRole("button", { name: "Add", exact: true }).click();
  await page.waitForURL("**/security-info?added=app");
  check(await page.locator(".method", { hasText: "Phone" }).isVisible(), "app listed");
  await shot("08-security-info-both-methods");
  await page.setViewportSize({ width: 390, height: 844 });
  await shot("09-security-info-phone");
  await page.setViewportSize({ width: 1100, height: 900 });

  step("she signs out");
  await signOut();
  await shot("10-signed-out");

  step("she signs in again with the passkey");
  await page.goto(BASE + "/");
  await page.getByRole("button", { name: "Sign in with a passkey or security key" }).click();
  await page.waitForURL("**/security-info");
  await page.waitForSelector("text=You signed in with a passkey");
  await shot("11-signed-in-with-passkey");
  await signOut();

  step("the same one-time TAP is refused with tap_one_time_used's message");
  await identify("alice");
  await page.waitForSelector("text=Enter Temporary Access Pass");
  await page.getByLabel("Temporary Access Pass").fill(env("ALICE_TAP"));
  await page.getByRole("button", { name: "Sign in" }).click();
  check((await alert()) === env("BLOCKED_MESSAGE"), `blocked message, got: ${await alert()}`);
  await shot("12-error-tap-blocked-by-policy");

  step("bob's TAP starts later: tap_not_yet_valid's message");
  await identify("bob");
  await page.getByLabel("Temporary Access Pass").fill(env("BOB_TAP"));
  await page.getByRole("button", { name: "Sign in" }).click();
  check((await alert()) === env("NOT_YET_VALID_MESSAGE"), `not-yet-valid message, got: ${await alert()}`);
  await shot("13-error-tap-not-yet-valid");

  step("erin is in a registration-interrupt group: the wizard refuses security keys");
  await identify("erin");
  await page.getByLabel("Temporary Access Pass").fill(env("ERIN_TAP"));
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL("**/register");
  await page.waitForSelector("text=Keep your account secure");
  check((await page.locator("[data-webauthn=register]").count()) === 0, "no passkey button");
  await shot("14-interrupt-wizard");
  await signOut();

  step("dave (out of scope) gets the password prompt; a wrong password is refused");
  await identify("dave");
  await page.waitForSelector("text=Enter password");
  await shot("15-password-prompt");
  await page.getByLabel("Password").fill("wrong");
  await page.getByRole("button", { name: "Sign in" }).click();
  check((await alert()) === "Your account or password is incorrect.", "password message");
  await shot("16-error-password");

  step("done");
} catch (error) {
  // Leave a picture and the page text of where it went wrong.
  await page.screenshot({ path: join(SHOTS, "failure.png"), fullPage: true }).catch(() => {});
  console.log(`e2e: failed at ${page.url()}:\n${await page.locator("body").innerText().catch(() => "")}`);
  throw error;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
