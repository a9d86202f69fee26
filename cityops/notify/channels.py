"""The channels a delivery is handed to (渠道): in-app, e-mail (SMTP), Web Push (VAPID) and, through Apprise,
DingTalk, WeCom, Feishu and SMS gateways.

Each ``send_*`` either returns (handed over: the channel's server accepted it) or raises ``SendError`` with the
reason (``permanent`` when trying again cannot help: a gone push subscription, a refused address). The platforms'
clients are Apprise's plugins, not ours: a deployment names each channel's Apprise URL in
``Settings.notify_apprise_urls`` ({phone}, {email}, {name} are filled per recipient), and a platform's private
(government) deployment its send URL in ``notify_platform_urls``.
"""

from __future__ import annotations

import json
import logging
import smtplib
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from cityops.core.settings import Settings

log = logging.getLogger("cityops.notify.channels")

SEVERITY_ZH = {"info": "通知", "blue": "蓝色", "yellow": "黄色", "orange": "橙色", "red": "红色"}


class SendError(Exception):
    def __init__(self, reason: str, *, permanent: bool = False, gone: list[int] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.gone = gone or []


@dataclass(frozen=True)
class Outgoing:
    """What a channel needs of one delivery (read in the claiming transaction)."""

    delivery_id: int
    idem_key: str
    channel: str
    target: str | None
    name: str
    title: str
    body: str
    severity: str
    link: str | None
    message_id: int
    recipient_id: int
    #: Web Push: [(subscription id, endpoint, p256dh, auth)]
    push: tuple = ()


def text_of(out: Outgoing, settings: Settings) -> tuple[str, str]:
    title = f"【{SEVERITY_ZH.get(out.severity, '通知')}】{out.title}" if out.severity != "info" else out.title
    body = out.body or out.title
    if out.link:
        body += f"\n{settings.public_url.rstrip('/')}{out.link}"
    return title, body


# --------------------------------------------------------------------------------------------- e-mail

def send_email(out: Outgoing, settings: Settings) -> None:
    if not settings.notify_smtp_host:
        raise SendError("e-mail is not configured (notify_smtp_host)", permanent=True)
    if not out.target:
        raise SendError("no e-mail address", permanent=True)
    title, body = text_of(out, settings)
    mail = EmailMessage()
    mail["From"] = settings.notify_smtp_from
    mail["To"] = out.target
    mail["Subject"] = title
    mail["Date"] = formatdate(localtime=False)
    # The same delivery tried again carries the same Message-ID: the receiving side sees one message.
    mail["Message-ID"] = make_msgid(idstring=out.idem_key.replace(":", "."), domain="cityops.notify")
    mail["X-CityOps-Delivery"] = out.idem_key
    mail.set_content(body)
    try:
        with smtplib.SMTP(settings.notify_smtp_host, settings.notify_smtp_port, timeout=settings.notify_send_timeout) as smtp:
            if settings.notify_smtp_starttls:
                smtp.starttls()
            if settings.notify_smtp_user:
                smtp.login(settings.notify_smtp_user, settings.notify_smtp_password)
            smtp.send_message(mail)
    except smtplib.SMTPRecipientsRefused as exc:
        raise SendError(f"SMTP refused the recipient: {exc.recipients}", permanent=True) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise SendError(f"SMTP {settings.notify_smtp_host}:{settings.notify_smtp_port}: {type(exc).__name__}: {exc}") from None


# ------------------------------------------------------------------------------------ Apprise platforms

_APPRISE_LOCK = threading.Lock()


def send_apprise(out: Outgoing, settings: Settings) -> None:
    import apprise

    template = (settings.notify_apprise_urls or {}).get(out.channel)
    if not template:
        raise SendError(f"channel {out.channel} is not configured (notify_apprise_urls)", permanent=True)
    if "{phone}" in template and not out.target:
        raise SendError("no phone number", permanent=True)
    url = template.replace("{phone}", out.target or "").replace("{name}", out.name).replace("{email}", out.target or "")
    # Apprise's read / connect timeouts are URL parameters.
    url += ("&" if "?" in url else "?") + f"rto={settings.notify_send_timeout:g}&cto={min(4.0, settings.notify_send_timeout):g}"
    plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    if plugin is None:
        raise SendError(f"channel {out.channel}: Apprise does not accept the configured URL", permanent=True)
    private = (settings.notify_platform_urls or {}).get(out.channel)
    if private:
        if hasattr(plugin, "api_url"):  # WeCom bot: the URL is made at construction
            plugin.api_url = private.format(key=getattr(plugin, "key", ""))
        else:
            plugin.notify_url = private
    title, body = text_of(out, settings)
    if out.channel in ("wecom", "feishu"):
        body = f"@{out.name} {body}"
    ap = apprise.Apprise()
    ap.add(plugin)
    with apprise.LogCapture(level=logging.WARNING) as logs:
        ok = ap.notify(body=body, title=title, notify_type=apprise.NotifyType.FAILURE if out.severity == "red" else
                       apprise.NotifyType.WARNING if out.severity in ("orange", "yellow") else apprise.NotifyType.INFO)
        captured = logs.getvalue().strip()
    if not ok:
        raise SendError(f"{out.channel}: {captured.splitlines()[-1] if captured else 'not accepted'}")


# ------------------------------------------------------------------------------------------- Web Push

def vapid_key_path(settings: Settings) -> Path:
    """The VAPID private key (PEM): the configured file, else ``<data_dir>/vapid_private.pem`` made once."""
    if settings.notify_vapid_private_key:
        return Path(settings.notify_vapid_private_key)
    path = settings.data_dir / "vapid_private.pem"
    if not path.exists():
        from py_vapid import Vapid

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        v = Vapid()
        v.generate_keys()
        tmp = path.with_suffix(".tmp")
        v.save_key(str(tmp))
        tmp.replace(path)
    return path


def vapid_public_key(settings: Settings) -> str:
    """The application server key the browser subscribes with (base64url of the uncompressed P-256 point)."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from py_vapid import Vapid

    v = Vapid.from_file(str(vapid_key_path(settings)))
    raw = v.public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def send_webpush(out: Outgoing, settings: Settings) -> list[int]:
    """Every push subscription of the recipient; returns the ones the push service says are gone (404/410)."""
    from pywebpush import WebPushException, webpush

    if not out.push:
        raise SendError("no push subscription on this person's phones", permanent=True)
    title, body = text_of(out, settings)
    data = json.dumps({"title": title, "body": body, "link": out.link, "message_id": out.message_id,
                       "recipient_id": out.recipient_id, "severity": out.severity, "ack": True}, ensure_ascii=False)
    key = str(vapid_key_path(settings))
    ok, errors, gone = 0, [], []
    for sub_id, endpoint, p256dh, auth in out.push:
        try:
            webpush({"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}}, data=data, vapid_private_key=key,
                    vapid_claims={"sub": settings.notify_vapid_subject}, ttl=24 * 3600, timeout=settings.notify_send_timeout,
                    headers={"Urgency": "high" if out.severity in ("red", "orange") else "normal", "Topic": f"m{out.message_id}"})
            ok += 1
        except WebPushException as exc:
            status = getattr(exc.response, "status_code", None)
            if status in (404, 410):
                gone.append(sub_id)
            errors.append(f"{endpoint[:60]}: {status or ''} {exc.message if hasattr(exc, 'message') else exc}".strip())
        except Exception as exc:  # noqa: BLE001 - a network failure of one endpoint
            errors.append(f"{endpoint[:60]}: {type(exc).__name__}: {exc}")
    if not ok:
        raise SendError("web push: " + "; ".join(errors)[:1000], permanent=bool(gone) and len(gone) == len(out.push), gone=gone)
    return gone


def send(out: Outgoing, settings: Settings) -> list[int]:
    """Hand ``out`` to its channel; returns push subscriptions found gone on the way (SendError if not handed over)."""
    if out.channel == "inapp":
        return []  # the inbox row is the delivery; live streams push it
    if out.channel == "email":
        send_email(out, settings)
    elif out.channel == "webpush":
        return send_webpush(out, settings)
    else:
        send_apprise(out, settings)
    return []
