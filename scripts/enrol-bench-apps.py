#!/usr/bin/env python3
"""Registers an authenticator app for each `user tap` line on stdin through tapd's web page
(plain HTTP on loopback): TAP sign-in, then the authenticator-app enrolment, confirmed with the
RFC 6238 code of the shown secret. Prints `user password secret` lines for
`radius_load --two-leg` (the password is `<user>-pw`, as scripts/gen-bench-ldif.py sets it).

    enrol-bench-apps.py HOST:PORT < taps.txt > two-leg.txt
"""
import base64, hashlib, hmac, http.client, re, struct, sys, time, urllib.parse

def code(secret, step):
    digest = hmac.new(secret, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"

class Browser:
    def __init__(self, addr):
        self.addr, self.cookies, self.csrf = addr, {}, None

    def request(self, method, path, form=None):
        host, port = self.addr.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        headers = {}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            form = [("csrf", self.csrf)] + form
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        text = response.read().decode()
        for name, value in response.getheaders():
            if name.lower() == "set-cookie":
                pair, _, attributes = value.partition(";")
                key, _, val = pair.partition("=")
                if "Max-Age=0" in attributes:
                    self.cookies.pop(key, None)
                else:
                    self.cookies[key] = val
        found = re.search(r'name="csrf-token" content="([^"]*)"', text) or re.search(r'name="csrf" value="([^"]*)"', text)
        if found and found.group(1):
            self.csrf = found.group(1)
        conn.close()
        return response.status, response.getheader("Location"), text

def enrol(addr, user, tap):
    b = Browser(addr)
    b.request("GET", "/")
    b.request("POST", "/sign-in", [("username", user)])
    status, location, text = b.request("POST", "/sign-in/tap", [("username", user), ("code", tap)])
    if status != 303:
        raise SystemExit(f"{user}: TAP sign-in answered {status}: {text[:300]}")
    b.request("GET", location)
    status, _, text = b.request("POST", "/security-info/authenticator-app", [])
    shown = re.search(r'<code id="totp-secret">([A-Z2-7 ]+)<', text)
    ceremony = re.search(r'name="ceremony" value="([^"]*)"', text)
    if status != 200 or not shown or not ceremony:
        raise SystemExit(f"{user}: enrolment page {status}: {text[:300]}")
    secret32 = shown.group(1).replace(" ", "")
    secret = base64.b32decode(secret32 + "=" * (-len(secret32) % 8))
    status, _, text = b.request("POST", "/security-info/authenticator-app/confirm",
                                [("ceremony", ceremony.group(1)), ("code", code(secret, int(time.time()) // 30))])
    if status != 303:
        raise SystemExit(f"{user}: confirmation answered {status}: {text[:300]}")
    return secret32

addr = sys.argv[1]
for line in sys.stdin:
    if line.strip():
        user, tap = line.split()
        print(f"{user} {user}-pw {enrol(addr, user, tap)}", flush=True)
