"""Real endpoints the notification tests deliver to: an SMTP server (aiosmtpd), an HTTP receiver standing in for
the DingTalk / WeCom / Feishu webhooks and an SMSEagle SMS gateway (it checks each platform's payload format as
Apprise sends it), and a Web Push endpoint that decrypts the message (RFC 8291, aes128gcm) and verifies the
VAPID JWT (RFC 8292) like a push service."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from aiosmtpd.controller import Controller
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tests.conftest import free_port


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Mailbox:
    """aiosmtpd handler: keeps every message received."""

    def __init__(self):
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        from email import message_from_bytes, policy

        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content, policy=policy.default)))
        return "250 OK"


class SmtpServer:
    def __init__(self):
        self.box = Mailbox()
        self.port = free_port()
        self.controller = Controller(self.box, hostname="127.0.0.1", port=self.port)

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *exc):
        if self.controller is not None:
            self.controller.stop()

    def down(self) -> None:
        self.controller.stop()
        self.controller = None

    def up(self) -> None:
        self.controller = Controller(self.box, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    @property
    def messages(self):
        return self.box.messages


def _check_platform(path: str, query: dict, body: dict) -> tuple[str, list[str]]:
    """Which platform a request is for and what is wrong with its payload (per the platforms' documented formats)."""
    problems = []
    if path == "/robot/send":  # DingTalk custom robot
        if not query.get("access_token"):
            problems.append("access_token missing")
        if body.get("msgtype") not in ("text", "markdown"):
            problems.append(f"msgtype {body.get('msgtype')!r}")
        if body.get("msgtype") == "text" and not isinstance(body.get("text", {}).get("content"), str):
            problems.append("text.content missing")
        if not isinstance(body.get("at", {}).get("atMobiles"), list):
            problems.append("at.atMobiles missing")
        return "dingtalk", problems
    if path == "/cgi-bin/webhook/send":  # WeCom group robot
        if not query.get("key"):
            problems.append("key missing")
        kind = body.get("msgtype")
        if kind not in ("text", "markdown") or not isinstance(body.get(kind, {}).get("content"), str):
            problems.append(f"msgtype/content {body}")
        return "wecom", problems
    if path.startswith("/open-apis/bot/v2/hook/"):  # Feishu custom bot
        if body.get("msg_type") == "text":
            if not isinstance(body.get("content", {}).get("text"), str):
                problems.append("content.text missing")
        elif body.get("msg_type") != "interactive":
            problems.append(f"msg_type {body.get('msg_type')!r}")
        return "feishu", problems
    if path == "/jsonrpc/sms":  # SMSEagle gateway JSON-RPC
        params = body.get("params", {})
        if body.get("method") != "sms.send_sms":
            problems.append(f"method {body.get('method')!r}")
        if not params.get("access_token") or not params.get("to") or not params.get("message"):
            problems.append(f"params {sorted(params)}")
        return "sms", problems
    return "unknown", [f"unknown path {path}"]


class WebhookReceiver:
    """One local HTTP server for all the platforms. ``fail[platform] = n`` answers the next n requests 500."""

    def __init__(self):
        self.port = free_port()
        self.requests: list[dict] = []
        self.fail: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                url = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                platform, problems = _check_platform(url.path, query, body)
                receiver.requests.append({"platform": platform, "path": url.path, "query": query, "body": body,
                                          "problems": problems, "content_type": self.headers.get("Content-Type")})
                if receiver.fail.get(platform, 0) > 0:
                    receiver.fail[platform] -= 1
                    return self._answer(500, {"errcode": 500, "errmsg": "gateway busy"})
                if problems:
                    return self._answer(400, {"errcode": 400, "errmsg": "; ".join(problems)})
                answer = {"dingtalk": {"errcode": 0, "errmsg": "ok"}, "wecom": {"errcode": 0, "errmsg": "ok"},
                          "feishu": {"code": 0, "msg": "success"},
                          "sms": {"result": {"message_id": len(receiver.requests), "status": "ok"}}}[platform]
                self._answer(200, answer)

            def _answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def of(self, platform: str) -> list[dict]:
        return [r for r in self.requests if r["platform"] == platform]

    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class PushEndpoint:
    """A push service's endpoint for one browser: decrypts what it receives with the browser's keys and verifies
    the VAPID signature and claims. ``/gone/…`` answers 410 (an unsubscribed browser)."""

    def __init__(self, subject: str):
        self.port = free_port()
        self.subject = subject
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)
        self.received: list[dict] = []
        self.rejected: list[str] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith("/gone/"):
                    self.send_response(410)
                    self.end_headers()
                    return
                try:
                    claims = endpoint.verify_vapid(self.headers.get("Authorization", ""))
                    if self.headers.get("Content-Encoding") != "aes128gcm":
                        raise ValueError(f"Content-Encoding {self.headers.get('Content-Encoding')!r}")
                    import http_ece

                    plain = http_ece.decrypt(raw, private_key=endpoint.private, auth_secret=endpoint.auth, version="aes128gcm")
                    endpoint.received.append({"claims": claims, "payload": json.loads(plain), "ttl": self.headers.get("TTL"),
                                              "urgency": self.headers.get("Urgency"), "topic": self.headers.get("Topic"),
                                              "at": time.monotonic()})
                    self.send_response(201)
                except Exception as exc:  # noqa: BLE001 - any failure is a rejection, as a push service answers
                    endpoint.rejected.append(f"{type(exc).__name__}: {exc}")
                    self.send_response(400)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)

    def verify_vapid(self, header: str) -> dict:
        scheme, _, rest = header.partition(" ")
        if scheme.lower() != "vapid":
            raise ValueError(f"authorization scheme {scheme!r}")
        parts = dict(p.strip().split("=", 1) for p in rest.split(","))
        token, key = parts["t"], parts["k"]
        head, payload, sig = token.split(".")
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(key))
        raw = unb64url(sig)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        try:
            public.verify(der, f"{head}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise ValueError("VAPID signature does not verify") from None
        if json.loads(unb64url(head)).get("alg") != "ES256":
            raise ValueError("alg must be ES256")
        claims = json.loads(unb64url(payload))
        if claims.get("aud") != self.base():
            raise ValueError(f"aud {claims.get('aud')!r}")
        if not claims.get("exp") or claims["exp"] < time.time() or claims["exp"] > time.time() + 24 * 3600 + 60:
            raise ValueError(f"exp {claims.get('exp')!r}")
        if claims.get("sub") != self.subject:
            raise ValueError(f"sub {claims.get('sub')!r}")
        claims["k"] = key
        return claims

    def keys(self) -> dict:
        public = self.private.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        return {"p256dh": b64url(public), "auth": b64url(self.auth)}

    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def settings_for(smtp: SmtpServer, hooks: WebhookReceiver, **extra) -> dict:
    """Settings overrides that point every channel at the local endpoints."""
    base = hooks.base()
    return dict(
        notify_smtp_host="127.0.0.1", notify_smtp_port=smtp.port, notify_smtp_from="cityops@district.example",
        notify_apprise_urls={"dingtalk": "dingtalk://robottoken0001/{phone}", "wecom": "wecombot://wecomkey0001",
                             "feishu": "feishu://feishutoken0001", "sms": f"smseagle://smstoken0001@127.0.0.1:{hooks.port}/{{phone}}"},
        notify_platform_urls={"dingtalk": base + "/robot/send?access_token={token}",
                              "wecom": base + "/cgi-bin/webhook/send?key={key}",
                              "feishu": base + "/open-apis/bot/v2/hook/{token}/"},
        notify_vapid_subject="mailto:duty@district.example", notify_retry_seconds=0.05, notify_max_attempts=3,
        **extra)
