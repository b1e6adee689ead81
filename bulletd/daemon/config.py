"""bulletd configuration: YAML file -> frozen dataclasses with documented defaults.

Owns the one source of defaults for the daemon and for `bulletd-cli` (the default socket path).
With no file at all, `Config()` is the zero-configuration daemon: the Unix socket, the children
found in the model directory, no MQTT. Every key is documented in docs/DAEMON.md.

    from bulletd.daemon.config import load_config
    cfg = load_config("/etc/bulletd/bulletd.yaml")   # ConfigError names the bad key and value
"""
from __future__ import annotations

import dataclasses
import os
import socket as _socket
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from bulletd.errors import BulletError
from bulletd.mqtt_conn import TLS
from bulletd.names import name_problem


class ConfigError(BulletError):
    """The configuration file is unreadable or a key has a wrong name, type or value."""


def default_socket_path() -> str:
    """Where the daemon listens and the CLI connects when nothing else is said.

    BULLETD_SOCKET wins; then systemd's RUNTIME_DIRECTORY; root uses /run/bulletd; other users
    their XDG_RUNTIME_DIR or a private folder under /tmp (so two users never collide).
    """
    env = os.environ.get("BULLETD_SOCKET")
    if env:
        return env
    rt = os.environ.get("RUNTIME_DIRECTORY")
    if rt:
        return os.path.join(rt.split(":")[0], "bulletd.sock")
    if os.geteuid() == 0:
        return SYSTEM_SOCKET
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "bulletd.sock")
    return f"/tmp/bulletd-{os.geteuid()}/bulletd.sock"


SYSTEM_SOCKET = "/run/bulletd/bulletd.sock"


def client_socket_path() -> str:
    """Where bulletd-cli and bulletd.client look: BULLETD_SOCKET; else this user's own daemon
    socket if it exists; else the system service's /run/bulletd/bulletd.sock if it exists (a
    member of the socket's group can use it); else this user's default (named in the error)."""
    own = default_socket_path()
    if os.environ.get("BULLETD_SOCKET") or os.path.exists(own):
        return own
    if os.path.exists(SYSTEM_SOCKET):
        return SYSTEM_SOCKET
    return own


def default_model_dir() -> str:
    """systemd's STATE_DIRECTORY, /var/lib/bulletd/models for root, else ~/.local/share."""
    sd = os.environ.get("STATE_DIRECTORY")
    if sd:
        return os.path.join(sd.split(":")[0], "models")
    if os.geteuid() == 0:
        return "/var/lib/bulletd/models"
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "bulletd", "models")


@dataclass(frozen=True)
class SocketConfig:
    path: str = ""                       # "" -> default_socket_path()
    mode: int = 0o660                    # file mode of the socket (octal in YAML: 0o660 or "0660")
    group: str = ""                      # group name or gid owning the socket; "" keeps the daemon's
    admin_uids: tuple[int, ...] = ()     # besides root and the daemon's own uid
    admin_groups: tuple[str, ...] = ()   # peers in one of these groups (primary or supplementary) are admins
    max_connections: int = 64
    admin_reserved: int = 4              # of max_connections, kept for admin peers
    max_per_uid: int = 16                # connections one non-admin uid may hold at once
    idle_timeout: float = 60.0           # close a connection with no request in flight that sends nothing this long
    frame_timeout: float = 10.0          # seconds a frame, once begun, has to arrive whole


@dataclass(frozen=True)
class TrustConfig:
    keys: tuple[str, ...] = ("/etc/bulletd/trusted_keys",)  # PEM files or folders of them
    allow_unsigned: bool = False         # development only: load children that have no .sig at all


@dataclass(frozen=True)
class RegistryConfig:
    memory_budget_mb: float = 256.0      # sum of mapped child sizes; LRU idle children are evicted past it
    keep_alive: float = 0.0              # seconds an idle child stays loaded; 0 = until evicted/unloaded
    preload: bool = True                 # load every child found in model_dir at start
    load_on_demand: bool = True          # a request for a known but unloaded child loads it
    unload_mode: str = "wait"            # "wait" for running requests, or "cancel" them
    unload_timeout: float = 30.0         # seconds "wait" waits before giving up (code busy)
    session_idle: float = 30.0           # free a child's cached session (KV cache, prompt reuse) after
                                         # this many idle seconds; 0 = keep it while loaded


@dataclass(frozen=True)
class RouterConfig:
    mother: str = ""                     # path or file name in model_dir; "" -> model_dir/mother.bullet if present
    threshold: float = -1.0              # < 0 -> the mother's own header threshold
    fallback: str = ""                   # child used when the mother is unsure; "" -> no fallback
    centroid_threshold: float = 0.35     # min cosine for a child routed by its header examples


@dataclass(frozen=True)
class SchedulerConfig:
    workers: int = 0                     # generation threads; 0 -> number of cores
    max_queue: int = 0                   # requests waiting for a worker; 0 -> 4 x workers; beyond: busy
    default_deadline: float = 120.0      # seconds a request may take unless it asks for less
    max_deadline: float = 600.0
    threads: int = 1                     # threads one generation's steps run on, unless the request
                                         # (threads) or child_threads says otherwise
    max_threads: int = 0                 # most threads a request may ask for; 0 -> number of cores
    child_threads: dict[str, int] = field(default_factory=dict)   # NAME: threads for that child


@dataclass(frozen=True)
class LimitsConfig:
    max_request_bytes: int = 65536       # larger payloads / frames get too_large
    max_tokens: int = 2048               # largest max_tokens a request may ask for
    max_prompt_chars: int = 32768
    max_stop_strings: int = 16


@dataclass(frozen=True)
class TLSConfig(TLS):
    """ca_file, cert_file, key_file, insecure: the one TLS vocabulary (bulletd.mqtt_conn.TLS)."""
    enabled: bool = False


@dataclass(frozen=True)
class FleetConfig:
    enabled: bool = False
    group: str = "bulletd"               # $share/<group>/<prefix>/fleet/req


@dataclass(frozen=True)
class MQTTConfig:
    host: str = ""                       # "" -> MQTT off (socket only)
    port: int = 1883
    protocol: str = "5"                  # "5" or "3.1.1" (the daemon's own connection)
    client_id: str = ""                  # "" -> bulletd-<device_id>; fixed so the session survives
    username: str = ""
    password: str = ""
    password_file: str = ""              # read at start; wins over password
    keepalive: int = 30
    session_expiry: int = 3600           # seconds the broker keeps our session (v5)
    prefix: str = "bullet"
    qos: int = 1
    reconnect_min: float = 0.5           # backoff start, doubled per failure, +/-20 % jitter
    reconnect_max: float = 30.0
    status_interval: float = 60.0        # republish the retained status this often (seconds)
    reply_expiry: int = 120              # MessageExpiryInterval on replies (v5)
    allow_admin: bool = False            # accept load/unload over MQTT (no peer identity there)
    tls: TLSConfig = field(default_factory=TLSConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)


@dataclass(frozen=True)
class OTAConfig:
    """Over-the-air child updates (bulletd.ota, docs/OTA.md); needs mqtt.host and trust.keys."""
    enabled: bool = True
    dir: str = ""                        # receiver state and staging; "" -> <model_dir>/.ota
    groups: tuple[str, ...] = ()         # fleet groups whose pushes this device takes (+ mqtt.fleet.group)
    window: int = 8                      # chunk requests in flight
    chunk_timeout: float = 2.0           # seconds before a requested chunk is asked for again
    stall_timeout: float = 60.0          # seconds without a chunk before a push is stalled (kept, resumable)
    max_file_size_mb: float = 64.0
    min_free_mb: float = 1.0             # free space kept on the staging filesystem
    require_vectors: bool = False        # refuse children that carry no verification vectors
    smoke_test: bool = True              # replay the verification vectors before the swap


@dataclass(frozen=True)
class HomeToolConfig:
    """The home tool (bulletd.agents): the home file, acting over MQTT, Home Assistant discovery."""
    file: str = ""                       # home YAML (areas, entities; examples/home.yaml); "" -> no home
    act: bool = False                    # let requests with act: true publish device commands
    max_actions_per_minute: int = 30     # published commands in any 60 s; beyond: rate_limited
    child: str = ""                      # agent child for Home Assistant text commands; "" -> the mother routes
    route_names: str = "home"            # when the mother is unsure and a prompt names an entity or area of
                                         # the home, route it to this child (if installed); "" -> off
    route_commands: bool = True          # with route_names: a prompt that names something of the home and
                                         # says a command word (on, off, open, %, चालू, बंद ...) goes to
                                         # that child even when the mother is sure of another child
    discovery: bool = False              # announce bulletd to Home Assistant (MQTT discovery)
    discovery_prefix: str = "homeassistant"


@dataclass(frozen=True)
class CalcToolConfig:
    """The calc tool: its limits are fixed (bulletd.agents.calc)."""
    route_sums: str = "calc"             # when the mother is unsure and a prompt reads as arithmetic
                                         # (bulletd.agents.calcinput.is_arithmetic), route it to this
                                         # child (if installed); "" -> off


@dataclass(frozen=True)
class ToolsConfig:
    home: HomeToolConfig = field(default_factory=HomeToolConfig)
    calc: CalcToolConfig = field(default_factory=CalcToolConfig)


@dataclass(frozen=True)
class Config:
    device_id: str = ""                  # "" -> host name
    model_dir: str = ""                  # "" -> default_model_dir()
    log_level: str = "info"
    drain_timeout: float = 15.0          # SIGTERM: seconds in-flight requests get to finish
    socket: SocketConfig = field(default_factory=SocketConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    mqtt: MQTTConfig = field(default_factory=MQTTConfig)
    ota: OTAConfig = field(default_factory=OTAConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)

    # --- resolved values (defaults that depend on the machine) ---
    @property
    def device(self) -> str:
        return self.device_id or _socket.gethostname().split(".")[0] or "bullet"

    @property
    def models(self) -> Path:
        return Path(self.model_dir or default_model_dir())

    @property
    def socket_path(self) -> str:
        return self.socket.path or default_socket_path()

    @property
    def workers(self) -> int:
        return self.scheduler.workers or (os.cpu_count() or 1)

    @property
    def max_threads(self) -> int:
        return self.scheduler.max_threads or min(64, os.cpu_count() or 1)

    def threads_for(self, child: str) -> int:
        """Threads a request to `child` runs on when it does not say."""
        return self.scheduler.child_threads.get(child, self.scheduler.threads)

    @property
    def max_queue(self) -> int:
        return self.scheduler.max_queue or 4 * self.workers

    @property
    def mqtt_client_id(self) -> str:
        return self.mqtt.client_id or f"bulletd-{self.device}"


_LEVELS = ("debug", "info", "warning", "error")


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Convert one YAML value to the annotated type, or raise ConfigError naming `where`."""
    if is_dataclass(typ):
        if value is None:
            return typ()
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, found {type(value).__name__} {value!r}")
        return _build(typ, value, where)
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, found {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, found {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value, 8) if value.startswith("0") and value.strip("0o") else int(value, 0)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, found {value!r}")
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, found {value!r}")
    if typ is str:
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
        if value is None:
            return ""
        raise ConfigError(f"{where}: expected a string, found {value!r}")
    origin = getattr(typ, "__origin__", None)
    if origin is dict:
        kt, vt = typ.__args__
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, found {type(value).__name__} {value!r}")
        return {_coerce(k, kt, f"{where} (a key)"): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if origin is tuple:
        inner = typ.__args__[0]
        if isinstance(value, (str, int)):
            value = [value]
        if value is None:
            return ()
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, found {value!r}")
        return tuple(_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    raise ConfigError(f"{where}: unsupported type {typ}")  # a bug in this module, not the file


def _build(cls: type, data: dict, where: str) -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {', '.join(map(str, unknown))}; "
                          + (f"expected one of {', '.join(sorted(names))}" if names else "this section takes no keys"))
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def validate(cfg: Config) -> Config:
    """Range checks that the types alone cannot express."""
    def bad(key: str, expected: str, found: Any) -> None:
        raise ConfigError(f"{key}: expected {expected}, found {found!r}")
    if cfg.log_level not in _LEVELS:
        bad("log_level", " / ".join(_LEVELS), cfg.log_level)
    if cfg.drain_timeout < 0:
        bad("drain_timeout", "a number >= 0", cfg.drain_timeout)
    if not 0 <= cfg.socket.mode <= 0o777:
        bad("socket.mode", "a file mode between 0o000 and 0o777", oct(cfg.socket.mode))
    so = cfg.socket
    if so.max_connections < 1:
        bad("socket.max_connections", "an integer >= 1", so.max_connections)
    if not 0 <= so.admin_reserved < so.max_connections:
        bad("socket.admin_reserved", f"0 .. max_connections - 1 ({so.max_connections - 1})", so.admin_reserved)
    if so.max_per_uid < 1:
        bad("socket.max_per_uid", "an integer >= 1", so.max_per_uid)
    if so.idle_timeout <= 0 or so.frame_timeout <= 0:
        bad("socket.idle_timeout/frame_timeout", "seconds > 0", (so.idle_timeout, so.frame_timeout))
    r = cfg.registry
    if r.memory_budget_mb <= 0:
        bad("registry.memory_budget_mb", "a number > 0", r.memory_budget_mb)
    if r.keep_alive < 0:
        bad("registry.keep_alive", "seconds >= 0 (0 = forever)", r.keep_alive)
    if r.session_idle < 0:
        bad("registry.session_idle", "seconds >= 0 (0 = keep)", r.session_idle)
    if r.unload_mode not in ("wait", "cancel"):
        bad("registry.unload_mode", "wait or cancel", r.unload_mode)
    if cfg.router.threshold > 1:
        bad("router.threshold", "a probability <= 1 (or < 0 for the mother's own)", cfg.router.threshold)
    s = cfg.scheduler
    if s.workers < 0 or s.max_queue < 0:
        bad("scheduler.workers/max_queue", "integers >= 0", (s.workers, s.max_queue))
    if not 1 <= s.threads <= 64:
        bad("scheduler.threads", "an integer from 1 to 64", s.threads)
    if not 0 <= s.max_threads <= 64:
        bad("scheduler.max_threads", "an integer from 0 (the number of cores) to 64", s.max_threads)
    for name, n in s.child_threads.items():
        why = name_problem(name)
        if why is not None:
            bad(f"scheduler.child_threads (key {name!r})", "a child name", why)
        if isinstance(n, bool) or not 1 <= n <= 64:
            bad(f"scheduler.child_threads.{name}", "an integer from 1 to 64", n)
    if not 0 < s.default_deadline <= s.max_deadline:
        bad("scheduler.default_deadline", f"0 < value <= max_deadline ({s.max_deadline})", s.default_deadline)
    li = cfg.limits
    if li.max_request_bytes < 256 or li.max_request_bytes > 64 << 20:
        bad("limits.max_request_bytes", "256 .. 67108864", li.max_request_bytes)
    if li.max_tokens < 1:
        bad("limits.max_tokens", "an integer >= 1", li.max_tokens)
    m = cfg.mqtt
    if m.protocol not in ("5", "3.1.1"):
        bad("mqtt.protocol", '"5" or "3.1.1"', m.protocol)
    if not 0 < m.port < 65536:
        bad("mqtt.port", "1 .. 65535", m.port)
    if m.qos not in (0, 1, 2):
        bad("mqtt.qos", "0, 1 or 2", m.qos)
    if not m.prefix or any(c in m.prefix for c in "+#") or m.prefix.startswith("$"):
        bad("mqtt.prefix", "a topic prefix without wildcards", m.prefix)
    if any(c in m.fleet.group for c in "+#/") or not m.fleet.group:
        bad("mqtt.fleet.group", "a share name without / + #", m.fleet.group)
    if not 0 < m.reconnect_min <= m.reconnect_max:
        bad("mqtt.reconnect_min", f"0 < value <= reconnect_max ({m.reconnect_max})", m.reconnect_min)
    if m.keepalive < 1:
        bad("mqtt.keepalive", "seconds >= 1", m.keepalive)
    o = cfg.ota
    if not 1 <= o.window <= 256 or o.chunk_timeout <= 0 or o.stall_timeout <= o.chunk_timeout:
        bad("ota.window/chunk_timeout/stall_timeout", "1..256 and 0 < chunk_timeout < stall_timeout",
            (o.window, o.chunk_timeout, o.stall_timeout))
    if any(not g or any(c in g for c in "+#/$") for g in o.groups):
        bad("ota.groups", "group names without / + # $", o.groups)
    dev = cfg.device
    if any(c in dev for c in "+#/") or not dev:
        bad("device_id", "a name without / + #", dev)
    h = cfg.tools.home
    if h.max_actions_per_minute < 1:
        bad("tools.home.max_actions_per_minute", "an integer >= 1", h.max_actions_per_minute)
    if not h.discovery_prefix or any(c in h.discovery_prefix for c in "+#$"):
        bad("tools.home.discovery_prefix", "a topic prefix without wildcards", h.discovery_prefix)
    if h.file:
        from bulletd.agents.home import HomeConfig, HomeConfigError
        try:
            HomeConfig.load(h.file)
        except HomeConfigError as exc:
            raise ConfigError(f"tools.home.file: {exc}") from None
    return cfg


def load_config(path: str | os.PathLike | None) -> Config:
    """Read a YAML file (None -> the embedded defaults). Raises ConfigError with the key path."""
    if path is None:
        return validate(Config())
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: expected a mapping at the top, found {type(data).__name__}")
    try:
        return validate(_build(Config, data, ""))
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def override(cfg: Config, **changes: Any) -> Config:
    """Return cfg with dotted keys replaced, e.g. override(cfg, **{"mqtt.host": "x"})."""
    for dotted, value in changes.items():
        cfg = _replace_path(cfg, dotted.split("."), value)
    return validate(cfg)


def _replace_path(obj: Any, parts: list[str], value: Any) -> Any:
    if len(parts) == 1:
        return dataclasses.replace(obj, **{parts[0]: value})
    return dataclasses.replace(obj, **{parts[0]: _replace_path(getattr(obj, parts[0]), parts[1:], value)})


def as_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)
