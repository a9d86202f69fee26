"""Settings from the environment (``CITYOPS_*``) and an optional TOML file.

Precedence, highest first: explicit arguments, environment variables, the TOML file named by
``CITYOPS_CONFIG`` (or ``cityops.toml`` in the data directory), then the defaults below.
"""

from __future__ import annotations

import json
import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_DATA_DIR = Path("cityops-data")
DATABASE_FILE = "cityops.gpkg"


def _toml_path(data_dir: Path | str | None = None) -> Path | None:
    explicit = os.environ.get("CITYOPS_CONFIG")
    if explicit:
        return Path(explicit)
    data_dir = Path(data_dir or os.environ.get("CITYOPS_DATA_DIR", DEFAULT_DATA_DIR))
    candidate = data_dir / "cityops.toml"
    return candidate if candidate.exists() else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CITYOPS_", extra="ignore")

    data_dir: Path = DEFAULT_DATA_DIR
    #: SQLAlchemy URL. Empty means the embedded SQLite/GeoPackage file in the data directory.
    database_url: str = ""
    #: Signing/pepper secret. Empty means: generated once and kept in ``<data_dir>/secret.key``.
    secret_key: str = ""
    log_level: str = "INFO"
    log_json: bool = True
    #: Bearer token lifetime for interactive logins.
    token_ttl_minutes: int = Field(default=12 * 60, ge=1, le=60 * 24 * 30)
    #: Unit grid code length (15 per GB/T 47678 / DB11/T 2157; 14 in CJ/T 213-era systems).
    grid_code_length: int = Field(default=15, ge=13, le=20)
    #: Metric CRS for distances, buffers and area (CGCS2000 3-degree Gauss–Krüger CM 108°E fits Kaizhou).
    metric_crs: str = "EPSG:4545"
    #: Connect the capabilities (cityops.wiring): observations re-evaluate risk points, warnings activate
    #: plans and raise alarms. Off only to exercise one capability alone.
    wiring: bool = True
    #: Largest accepted upload, bytes.
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    #: Largest batch for /api/locate/batch.
    max_locate_batch: int = Field(default=100_000, ge=1)
    #: Tolerance for sibling overlaps and gaps and for child-in-parent checks, square metres.
    topology_tolerance_m2: float = Field(default=1.0, ge=0)
    #: PostgreSQL connections a server process keeps open (up to ``core.db.POOL_CAPACITY`` in all; those beyond
    #: this close when returned). 5 was fewer than a wired server's bus readers and 8 concurrent readers use at
    #: once: every request past them opened a new connection (a fork on the server) and closed it again.
    pool_size: int = Field(default=16, ge=1)
    #: Embedded store: log (logger ``cityops.db``, warning) each write transaction that waited for this process's
    #: writer lock, or held it, longer than this many milliseconds, with its thread and first writing statement:
    #: who holds the one writer when writes queue. 0 = off (the default; on, every write reads the clock twice more).
    sqlite_writer_log_ms: float = Field(default=0.0, ge=0)
    #: How long a thread may keep the GIL while another waits for it, milliseconds (Python's default is 5). A thread
    #: back from the database (each SQLite statement, each PostgreSQL round trip) waits up to that long for the GIL
    #: whenever another thread is running Python: a write transaction of a few statements then held the embedded
    #: store's one writer lock 5-30 ms instead of 1-3 ms, and under 500 household updaters the writes queued behind it
    #: for up to 1 s. At 0.5 ms the hold's p90 fell from 8.7-11.6 to 2.7-4.7 ms, and the updates' p99 from 139-982
    #: to 41-107 ms (docs/benchmarks.md, 2026-12-08).
    gil_switch_interval_ms: float = Field(default=0.5, gt=0, le=100)
    #: Brute-force protection of password logins (identity.throttle): this many failures of one username, or
    #: from one client address, within login_failure_window_s lock it for login_lockout_s (an operator may lift
    #: the lock earlier). Behind a reverse proxy, let uvicorn take the client address from X-Forwarded-For
    #: (--forwarded-allow-ips), or every client shares the proxy's address.
    login_max_failures_per_account: int = Field(default=10, ge=1)
    login_max_failures_per_address: int = Field(default=50, ge=1)
    login_failure_window_s: int = Field(default=900, ge=1)
    login_lockout_s: int = Field(default=900, ge=1)
    #: The deployment's own indicator catalogue files (a district's sub-runways, its townships' subsets), read
    #: after the shipped pack and validated at start-up; empty = the shipped pack alone.
    indicators_dir: Path | None = None
    #: The indicator pack the catalogue starts from: "default" (板块/跑道/子跑道), "iso37120" (ISO 37120/37122/37123),
    #: or the path of a pack file.
    indicators_pack: str = "default"
    #: Live indicators are recomputed at most this often while a cockpit listens (seconds).
    indicators_live_seconds: float = Field(default=1.0, gt=0, le=3600)
    #: Every live indicator is recomputed at least this often, moved by a fact or not (seconds).
    indicators_full_seconds: float = Field(default=30.0, gt=0, le=86400)

    #: Sensing ingest queue bound, in observations (full → 503 for HTTP; MQTT is held by its in-flight window).
    sensing_queue: int = Field(default=500_000, ge=1)
    #: Case intake queue bound, in reports (full → 503 intake_busy with Retry-After).
    events_queue: int = Field(default=2_000, ge=1)
    #: Case reports one request of the batch intake route may carry (``POST /api/events/cases/batch``); a batch
    #: takes that many places of the case writer's queue (``events_queue``), so the bound is the smaller of the two.
    events_batch_max: int = Field(default=500, ge=1)
    #: Under load (the last group held more than one report), the case writer waits this long after a group's first
    #: report for the requests already on their way, so that a group shares its fixed cost (session, BEGIN, commit,
    #: the rollup upsert, the answer's wake-up: ~1.4 ms of CPU on SQLite) among more cases. 0: no wait.
    events_group_wait_ms: float = Field(default=1.0, ge=0, le=50)
    #: Case writer threads per process where the store takes concurrent writes (PostgreSQL; SQLite always one):
    #: while one waits for its group's commit (the WAL flush, a few ms whatever the group's size), the next group
    #: is gathered, drafted and sent. One by default: on 2 busy cores two split the groups, and the capacity
    #: measured lower with two (docs/benchmarks.md); more may pay where cores are free and the flush is slow.
    events_writers: int = Field(default=1, ge=1, le=8)
    #: A directory with the event center's own taxonomy.toml / calendar.toml / events.toml (else the shipped ones).
    events_dir: Path | None = None
    #: SensorThings over MQTT: the broker (mqtt://host:port; empty = no bridge), the server's public URL for the
    #: notifications' self links, the broker session's client id (one per deployment; each worker of
    #: ``serve --workers N`` takes ``<id>-<slot>`` and shares the subscription as ``$share/<id>/…``) and the MQTT 5
    #: in-flight window (Receive Maximum).
    mqtt_url: str = ""
    public_url: str = "http://127.0.0.1:8000"
    mqtt_client_id: str = Field(default="cityops-sensing", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    mqtt_receive_maximum: int = Field(default=1000, ge=1, le=65535)
    #: Seconds the server keeps an idle HTTP connection open. Longer than the clients' and proxies' own idle
    #: timeouts (httpx 5 s, browsers ~60 s would race otherwise; nginx's upstream default is 60 s): whoever drops
    #: an idle connection must be the client, or a request sent as the server closes it fails.
    keep_alive_seconds: int = Field(default=75, ge=1, le=3600)
    #: Server worker processes (``cityops serve --workers N``; set for each worker by the command).
    workers: int = Field(default=1, ge=1, le=64)
    #: The most worker processes the embedded SQLite store serves: it has one writer at a time, and more
    #: processes only queue for its write lock (PostgreSQL has no such bound).
    sqlite_max_workers: int = Field(default=4, ge=1, le=64)
    #: Event bus (cityops.core.bus): "inprocess" delivers in the process that holds the dispatch lease, with no
    #: other service to run (the embedded store's default); "jetstream" relays the outbox to NATS JetStream for
    #: several workers or hosts.
    bus_transport: Literal["inprocess", "jetstream"] = "inprocess"
    nats_url: str = "nats://127.0.0.1:4222"
    #: The JetStream stream; its subjects are "<stream lower-case>.<event name>". One per deployment.
    bus_stream: str = Field(default="CITYOPS", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    #: Deliveries of an event to a consumer before it goes to the dead letters with its error.
    bus_max_attempts: int = Field(default=5, ge=1, le=100)
    #: Events read (and held in memory) per round: the bound of every bus queue.
    bus_batch: int = Field(default=500, ge=1, le=10_000)
    #: How often readers look at the outbox when nothing woke them (other SQLite processes cannot signal).
    bus_poll_seconds: float = Field(default=0.5, gt=0, le=60)
    #: JetStream: an event a worker took and did not acknowledge (it died) goes to another worker after this long.
    bus_ack_wait_seconds: float = Field(default=30.0, ge=1, le=3600)
    #: The dispatch lease: a dead holder's work moves to another worker after this long.
    bus_lease_seconds: float = Field(default=10.0, ge=1, le=600)
    #: JetStream: the relay writes its cursor at most this often (not once per batch). A relay that dies in between
    #: leaves its successor to publish those events again, which the stream drops as duplicates of their message ids
    #: (its de-duplication window is 120 s; consumers' processed records catch any later).
    bus_relay_checkpoint_seconds: float = Field(default=1.0, gt=0, le=60)
    #: Video (cityops.video): the directory whose ``<camera code>/`` folders this server plays as HLS
    #: (``/api/video/cameras/{code}/stream/…``; empty = ``<data_dir>/video``), and a media server (MediaMTX, SRS …)
    #: that serves ``<video_stream_base>/<code>/index.m3u8`` for cameras without an HLS URL of their own
    #: (empty = this server's media route).
    video_media_dir: Path | None = None
    video_stream_base: str = Field(default="", pattern=r"^(https?://[^\s]+|/[^\s]*)?$")

    #: Notifications (cityops.notify). The deployment's own escalation policies (read after the shipped ones).
    notify_policies_dir: Path | None = None
    #: E-mail over SMTP (empty host: the e-mail channel is not configured and its deliveries fail with that reason).
    notify_smtp_host: str = ""
    notify_smtp_port: int = Field(default=25, ge=1, le=65535)
    notify_smtp_user: str = ""
    notify_smtp_password: str = ""
    notify_smtp_starttls: bool = False
    notify_smtp_from: str = "cityops@localhost"
    #: The messaging platforms and SMS gateways, channel → Apprise URL with {phone}, {email} and {name} filled in
    #: per recipient, e.g. {"dingtalk": "dingtalk://<token>/{phone}", "wecom": "wecombot://<key>",
    #: "feishu": "feishu://<token>", "sms": "smseagle://<token>@gateway.local/{phone}"}. A channel left out is
    #: not configured. Government editions of the platforms on their own hosts: notify_platform_hosts.
    notify_apprise_urls: dict[str, str] = {}
    #: The send URL of a platform's private (government) deployment, channel → URL template as the platform's
    #: Apprise plugin fills it ({token} for dingtalk and feishu, {key} for wecom), e.g.
    #: {"dingtalk": "https://oapi.gov.example/robot/send?access_token={token}"}; left out = the public service.
    notify_platform_urls: dict[str, str] = {}
    #: Web Push (VAPID): the private key's PEM file (empty: <data_dir>/vapid_private.pem, made once) and the
    #: contact the push services see.
    notify_vapid_private_key: Path | None = None
    notify_vapid_subject: str = "mailto:ops@cityops.invalid"
    #: Channels of a person without preferences.
    notify_default_channels: list[str] = ["inapp", "webpush"]
    #: Tries of one delivery before it fails for good; the wait before try n is notify_retry_seconds · 2^(n-2).
    notify_max_attempts: int = Field(default=5, ge=1, le=50)
    notify_retry_seconds: float = Field(default=5.0, gt=0, le=3600)
    #: How long one hand-over to a channel may take (seconds), and how often the dispatcher looks when not woken.
    notify_send_timeout: float = Field(default=10.0, gt=0, le=300)
    notify_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    #: Deliveries claimed per round (the dispatcher's bound) and each live inbox stream's queue.
    notify_batch: int = Field(default=1000, ge=1, le=10_000)
    notify_stream_queue: int = Field(default=500, ge=1, le=100_000)
    #: Quiet hours are local time in this zone.
    notify_timezone: str = "Asia/Shanghai"

    #: The server's periodic jobs, run once per period per deployment (the dispatch lease holder; each run claimed
    #: in bus_timers), 0 = off (run the CLI commands from cron instead): the event center's SLA sweep (due-soon
    #: warnings, escalation), overdue task reminders and escalation, sensing's no-signal check and escalation of
    #: unacknowledged alarms.
    timer_events_sweep_seconds: float = Field(default=300.0, ge=0, le=86_400)
    timer_tasks_overdue_seconds: float = Field(default=900.0, ge=0, le=86_400)
    timer_sensing_seconds: float = Field(default=300.0, ge=0, le=86_400)
    #: Directives: the silent receivers reminded and escalated (directives.toml says when); 0 turns it off.
    timer_directives_seconds: float = Field(default=30.0, ge=0, le=86_400)
    #: Notifications: the escalation policies' next steps for messages nobody acknowledged; 0 turns it off.
    timer_notify_escalate_seconds: float = Field(default=15.0, ge=0, le=86_400)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = _toml_path(getattr(init_settings, "init_kwargs", {}).get("data_dir"))
        if toml is not None:
            if not toml.exists():
                raise FileNotFoundError(f"CITYOPS_CONFIG names {toml}, which does not exist")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"unknown log level {value!r}")
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / DATABASE_FILE).resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @cached_property
    def resolved_secret(self) -> str:
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret.key"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(32)
        path.write_text(value)
        path.chmod(0o600)
        return value


#: Names the settings file ``hand_over`` wrote, for the worker processes that inherit the environment.
_HANDED_OVER = "CITYOPS_SETTINGS_FILE"


def hand_over(settings: Settings, **changes) -> Path:
    """Pass ``settings`` (with ``changes``) to worker processes that build the app from an import string
    (``uvicorn --workers``: each imports ``cityops.app:create_app`` and calls it without arguments, so the only
    channel is what it inherits). They are written to a file only the owner can read, in the data directory,
    and named in this process's environment; ``worker_settings`` reads them back. Returns the file (the caller
    removes it when the workers are gone)."""
    values = {**settings.model_dump(mode="json"), **changes}
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    path = Path(settings.data_dir) / f".serve-settings-{os.getpid()}.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps(values), encoding="utf-8")
    os.environ[_HANDED_OVER] = str(path.resolve())
    return path


def worker_settings() -> Settings:
    """The settings of a process that builds the app without arguments: those handed over by the command that
    started it (``hand_over``), else the environment and the TOML file."""
    path = os.environ.get(_HANDED_OVER)
    if path:
        return Settings(**json.loads(Path(path).read_text(encoding="utf-8")))
    return Settings()
