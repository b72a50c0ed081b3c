"""The one table of configuration keys, and everything derived from it.

Every key is declared once in ``SETTINGS``. The click options, the
``IMGURD_<KEY>`` environment variables, the INI parser, the example config
file and the tables of README.md and docs/configuration.md are all generated from it, so a key cannot
exist in one place and be missing from another.
"""

import configparser
import difflib
import os
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

SECTION = "imgurd"
ENV_PREFIX = "IMGURD_"
# IMGURD_* names that are not settings of the service: --config's variable, and imgurd-submit's own
OTHER_ENV = ("IMGURD_CONFIG", "IMGURD_SERVER", "IMGURD_API_TOKEN")
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"  # systemd LoadCredential=; also where secrets are mounted as files
MAX_CREDENTIAL_BYTES = 64 * 1024


class ConfigError(Exception):
    """A start-up configuration problem; its message is one line for the operator."""


# --- value parsers: each takes the raw text and returns the typed value or raises ValueError


def _parse_int(text: str, minimum: int = 0, maximum: Optional[int] = None) -> int:
    try:
        value = int(text.strip(), 10)
    except ValueError:
        raise ValueError("%r is not a whole number" % text) from None
    if value < minimum or (maximum is not None and value > maximum):
        span = "%d..%d" % (minimum, maximum) if maximum is not None else ">= %d" % minimum
        raise ValueError("%d is out of range (%s)" % (value, span))
    return value


def _parse_float(text: str, minimum: float = 0.0) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("%r is not a number" % text) from None
    if value != value or value < minimum or value == float("inf"):
        raise ValueError("%s is out of range (>= %g)" % (text.strip(), minimum))
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("%r is not a boolean (use true or false)" % text)


def _parse_text(text: str) -> str:
    value = text.strip()
    if not value:
        raise ValueError("it is empty")
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        raise ValueError("it is wrapped in quotes; write the value without them")
    return value


PLACEHOLDER_CLIENT_ID = "YOUR_IMGUR_CLIENT_ID"


def _parse_client_id(text: str) -> str:
    value = _parse_text(text)
    if value == PLACEHOLDER_CLIENT_ID:
        raise ValueError("%s is the example's placeholder: register an application at "
                         "https://api.imgur.com/oauth2/addclient and use its client ID" % value)
    return value


def _parse_api_url(text: str) -> str:
    value = text.strip().rstrip("/")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("%r is not an http(s) URL" % text)
    if parts.username is not None or parts.password is not None:
        raise ValueError("it holds a user name or password; imgurd authenticates with client_id and tokens")
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError("%r is not one of %s" % (text, ", ".join(choices)))
        return value

    return parse


@dataclass(frozen=True)
class Setting:
    """One configuration key: how it is spelled everywhere and how it is parsed."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    kind: str = "text"  # text | int | float | bool: drives the click option and docs
    secret: bool = False
    example: Optional[str] = None  # value shown in imgurd.conf.example for required keys

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag_spelling(self) -> str:
        if self.kind == "bool":
            return "%s/--no-%s" % (self.flag, self.flag[2:])
        return self.flag

    @property
    def default_text(self) -> str:
        if self.default is None:
            return "required" if self.name == "client_id" else "none"
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, float) and self.default.is_integer():
            return str(int(self.default))
        return str(self.default)


def _int(minimum: int = 0, maximum: Optional[int] = None) -> Callable[[str], int]:
    return lambda text: _parse_int(text, minimum, maximum)


def _seconds(minimum: float = 0.0) -> Callable[[str], float]:
    return lambda text: _parse_float(text, minimum)


SETTINGS: Tuple[Setting, ...] = (
    Setting("host", _parse_text, "127.0.0.1", "Address to listen on (0.0.0.0 for all IPv4 interfaces)."),
    Setting("port", _int(0, 65535), 8080, "TCP port to listen on.", kind="int"),
    Setting("client_id", _parse_client_id, None, "Imgur application client ID (required unless dry_run).",
            example=PLACEHOLDER_CLIENT_ID),
    Setting("client_secret", _parse_text, None, "Imgur client secret; with refresh_token, uploads go to your account.",
            secret=True),
    Setting("refresh_token", _parse_text, None, "Imgur OAuth refresh token; enables Bearer uploads.", secret=True),
    Setting("api_url", _parse_api_url, "https://api.imgur.com", "Base URL of the Imgur API."),
    Setting("api_token", _parse_text, None, "If set, /v1/ requests need 'Authorization: Bearer <api_token>'.",
            secret=True),
    Setting("max_concurrency", _int(1, 10000), 16, "Transfers (download + upload) in flight at once, all jobs.",
            kind="int"),
    Setting("max_image_bytes", _int(1), 20971520, "Largest image accepted, in bytes; larger downloads are cut.",
            kind="int"),
    Setting("max_urls_per_job", _int(1), 1000, "Most URLs one POST may hold (before de-duplication).", kind="int"),
    Setting("max_body_bytes", _int(1), 1048576, "Largest POST body accepted, in bytes.", kind="int"),
    Setting("max_queued_urls", _int(1), 100000, "Most unfinished URLs over all jobs; beyond it POST answers 503.",
            kind="int"),
    Setting("connect_timeout", _seconds(0.001), 10.0, "Seconds allowed to connect to an origin or to Imgur.",
            kind="float"),
    Setting("request_timeout", _seconds(0.001), 60.0,
            "Seconds allowed for one upload request, and for all attempts of one download together.",
            kind="float"),
    Setting("stall_speed", _int(1), 1024,
            "A download slower than this many bytes/s for stall_time seconds is cut (a drip-feeding origin).",
            kind="int"),
    Setting("stall_time", _seconds(0.5), 10.0, "Seconds a download may stay under stall_speed.", kind="float"),
    Setting("max_redirects", _int(0, 50), 5, "Most redirects a download follows.", kind="int"),
    Setting("max_attempts", _int(1, 100), 4, "Tries per step (download, upload) for retryable failures.",
            kind="int"),
    Setting("max_rate_limit_wait", _seconds(0), 86400.0,
            "Longest wait, in seconds, for a spent Imgur budget before waiting URLs fail instead.", kind="float"),
    Setting("convert_formats", _parse_bool, True,
            "Convert WebP, AVIF and HEIC (which Imgur refuses) to PNG, JPEG or GIF before upload.", kind="bool"),
    Setting("max_image_pixels", _int(1), 50000000,
            "Largest image, in pixels, that is decoded for conversion (decompression bombs).", kind="int"),
    Setting("dry_run", _parse_bool, False,
            "Run everything but the upload; links become dry-run:<sha256 prefix>.<ext>.", kind="bool"),
    Setting("state_file", _parse_text, None,
            "Local file that keeps jobs and links across restarts (default: state only in memory)."),
    Setting("state_interval", _seconds(1), 30.0, "Seconds between writes of state_file.", kind="float"),
    Setting("allow_private_networks", _parse_bool, False,
            "Allow downloads from loopback, private and link-local addresses (unsafe).", kind="bool"),
    Setting("reuse_identical_uploads", _parse_bool, True,
            "Reuse the Imgur link of bytes already uploaded (same SHA-256).", kind="bool"),
    Setting("job_ttl", _seconds(0), 86400.0, "Seconds a finished job stays queryable.", kind="float"),
    Setting("max_retained_bytes", _int(1), 268435456,
            "Most bytes of job data (URLs, reasons, links) kept; oldest finished jobs are evicted first.",
            kind="int"),
    Setting("max_connections", _int(1), 1000, "Most client connections open at once; more are closed at once.",
            kind="int"),
    Setting("max_per_host", _int(1, 10000), 4, "Most transfers in flight to one host (by URL host name).",
            kind="int"),
    Setting("max_jobs", _int(1), 100000, "Most finished jobs kept; the oldest finished are evicted first.",
            kind="int"),
    Setting("shutdown_timeout", _seconds(0), 30.0, "Seconds to let transfers finish on SIGTERM/SIGINT.",
            kind="float"),
    Setting("log_level", _choice("debug", "info", "warning", "error", "critical"), "info",
            "Logging threshold: debug, info, warning, error or critical."),
    Setting("log_format", _choice("text", "json"), "text", "Log line format: text, or json (one object a line)."),
)

BY_NAME: Dict[str, Setting] = {s.name: s for s in SETTINGS}
# keys also read from $CREDENTIALS_DIRECTORY/<key>: the secrets, and the client id that goes with them
CREDENTIAL_KEYS: Tuple[str, ...] = ("client_id",) + tuple(s.name for s in SETTINGS if s.secret)


@dataclass(frozen=True)
class Config:
    """The resolved configuration: one attribute per key, read-only, passed to everything."""

    values: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # plain attributes: config values are read on every transfer, and an attribute found in the
        # instance's dict costs a fraction of a __getattr__ call
        for name, value in self.values.items():
            if name not in ("values", "uses_oauth"):
                object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def uses_oauth(self) -> bool:
        """Uploads go to an account (Bearer token from the refresh token), not anonymously."""
        return bool(self.client_secret and self.refresh_token)

    def __repr__(self) -> str:  # never let a secret reach a log through repr()
        shown = {k: ("***" if BY_NAME[k].secret and v else v) for k, v in self.values.items()}
        return "Config(%r)" % shown


def read_file(path: str) -> Dict[str, str]:
    """Raw values from an INI file's ``[imgurd]`` section; any other key or section is an error."""
    parser = configparser.ConfigParser(interpolation=None, default_section="\0none")
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise ConfigError("cannot read config file %s: %s" % (path, exc.strerror or exc)) from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        first_line = str(exc).splitlines()[0]
        raise ConfigError("config file %s is not valid INI: %s" % (path, first_line)) from None
    extra = [s for s in parser.sections() if s != SECTION]
    if extra:
        raise ConfigError("unknown section [%s] in config file %s (only [%s] is read)" % (extra[0], path, SECTION))
    if not parser.has_section(SECTION):
        return {}
    raw = dict(parser.items(SECTION))
    for key in raw:
        if key not in BY_NAME:
            raise ConfigError("unknown key %s in config file %s" % (key, path))
    return raw


def read_env(environ: Mapping[str, str]) -> Dict[str, str]:
    """The settings given by ``IMGURD_<KEY>`` variables. An empty one counts as not set (``IMGURD_X=``
    is how an env file or a container template leaves a key out), except a secret's: an empty
    ``IMGURD_API_TOKEN`` from a variable that was meant to hold the token must not open the API."""
    return {s.name: environ[s.env] for s in SETTINGS
            if s.env in environ and (s.secret or environ[s.env].strip())}


def unknown_env(environ: Mapping[str, str]) -> List[str]:
    """A warning for each ``IMGURD_*`` variable that names no setting: a typo the config file would refuse."""
    known = sorted({s.env for s in SETTINGS} | set(OTHER_ENV))
    warnings = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = "; did you mean %s?" % close[0] if close else ""
            warnings.append("ignoring environment variable %s: no such setting%s" % (name, hint))
    return warnings


def read_credentials(environ: Mapping[str, str]) -> Dict[str, Tuple[str, str]]:
    """(raw value, path) of each credential key found as a file in ``$CREDENTIALS_DIRECTORY``.

    systemd's ``LoadCredential=`` puts credentials there, one file per name; Docker and Kubernetes
    secrets mounted as files serve the same way. A key without a file is simply not set here.
    """
    directory = environ.get(CREDENTIALS_ENV)
    if not directory:
        return {}
    if not os.path.isdir(directory):
        raise ConfigError("%s=%s is not a directory" % (CREDENTIALS_ENV, directory))
    found: Dict[str, Tuple[str, str]] = {}
    for name in CREDENTIAL_KEYS:
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_CREDENTIAL_BYTES + 1)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError("cannot read credential %s from %s: %s" % (name, path, exc.strerror or exc)) from None
        if len(data) > MAX_CREDENTIAL_BYTES:
            raise ConfigError("invalid value for %s (from credential file %s): larger than %d bytes"
                              % (name, path, MAX_CREDENTIAL_BYTES))
        try:
            found[name] = (data.decode("utf-8"), path)
        except UnicodeDecodeError:
            raise ConfigError("invalid value for %s (from credential file %s): not UTF-8 text" % (name, path)) from None
    return found


def resolve(flags: Mapping[str, Any], environ: Mapping[str, str], config_path: Optional[str]) -> Config:
    """Merge flag > environment > credential file > config file > default, parse and check every key.

    ``flags`` holds raw text (or booleans from --x/--no-x switches); ``None`` means "not given".
    Credential files (``$CREDENTIALS_DIRECTORY/<key>``) exist for ``CREDENTIAL_KEYS`` only.
    """
    from_file = read_file(config_path) if config_path else {}
    from_env = read_env(environ)
    from_credentials = read_credentials(environ)
    values: Dict[str, Any] = {}
    origins: Dict[str, str] = {}
    for setting in SETTINGS:
        flag_value = flags.get(setting.name)
        if flag_value is not None:
            raw, origin = flag_value, "option %s" % setting.flag
        elif setting.name in from_env:
            raw, origin = from_env[setting.name], "environment variable %s" % setting.env
        elif setting.name in from_credentials:
            raw, path = from_credentials[setting.name]
            origin = "credential file %s" % path
        elif setting.name in from_file:
            raw, origin = from_file[setting.name], "config file %s" % config_path
        else:
            values[setting.name] = setting.default
            continue
        origins[setting.name] = origin
        if isinstance(raw, bool):
            values[setting.name] = raw
            continue
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            shown = str(exc)  # a secret's reason is shown too ("it is empty"), never its value
            if setting.secret and raw.strip() and raw.strip() in shown:
                shown = "(hidden)"
            raise ConfigError("invalid value for %s (from %s): %s" % (setting.name, origin, shown)) from None
    if not values["client_id"] and not values["dry_run"]:
        where = " (config file %s)" % config_path if config_path else ""
        raise ConfigError(
            "missing client_id: set --client-id, %s or client_id in the config file%s "
            "(or try --dry-run, which needs none)" % (BY_NAME["client_id"].env, where)
        )
    if bool(values["client_secret"]) != bool(values["refresh_token"]):
        given, missing = ("client_secret", "refresh_token") if values["client_secret"] else \
            ("refresh_token", "client_secret")
        raise ConfigError("missing %s: %s (from %s) and %s go together; set both to upload into your Imgur "
                          "account, or neither to upload anonymously" % (missing, given, origins[given], missing))
    return Config(values)


def defaults(**overrides: Any) -> Config:
    """A Config of defaults plus ``overrides``: for tests and benchmarks."""
    values = {s.name: s.default for s in SETTINGS}
    values.update(overrides)
    return Config(values)


# --- generated documentation


def example_file() -> str:
    """The text of ``imgurd.conf.example``."""
    lines = [
        "# imgurd configuration (INI). Generated from imgurd/settings.py:",
        "#   python -m imgurd.settings example > imgurd.conf.example",
        "# Precedence: command-line flag > environment variable IMGURD_<KEY> > credential file",
        "# $CREDENTIALS_DIRECTORY/<key> (client_id and the secrets) > this file > default.",
        "# Keep secrets (client_secret, refresh_token, api_token) out of world-readable files.",
        "",
        "[%s]" % SECTION,
    ]
    for s in SETTINGS:
        lines.append("# %s (flag %s, env %s)" % (s.help, s.flag_spelling, s.env))
        if s.example is not None:
            lines.append("%s = %s" % (s.name, s.example))
        elif s.default is None:
            lines.append("# %s =" % s.name)
        else:
            lines.append("# %s = %s" % (s.name, s.default_text))
        lines.append("")
    return "\n".join(lines)


def _markdown_text(text: str) -> str:
    """A help line as Markdown text: ``<api_token>`` would be read as an HTML tag and vanish."""
    return text.replace("<", "\\<").replace(">", "\\>").replace("|", "\\|")


def markdown_table() -> str:
    """The settings table of README.md and docs/configuration.md."""
    rows = ["| key | flag | environment | default | meaning |", "| --- | --- | --- | --- | --- |"]
    for s in SETTINGS:
        rows.append(
            "| `%s` | `%s` | `%s` | `%s` | %s |" % (s.name, s.flag_spelling, s.env, s.default_text, _markdown_text(s.help))
        )
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover - documentation generator
    import sys

    import click

    what = sys.argv[1] if len(sys.argv) > 1 else "example"
    click.echo(example_file() if what == "example" else markdown_table())
