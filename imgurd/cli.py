"""The ``imgurd`` command: options generated from the settings table (SPEC 4)."""

import logging
import os
import socket
import sys
from typing import Any, Callable

import click

from . import __version__, logs
from .settings import SETTINGS, ConfigError, resolve, unknown_env


def _add_setting_options(command: Callable) -> Callable:
    """One click option per setting, all defaulting to None ("not given"), so precedence is ours."""
    for setting in reversed(SETTINGS):
        # the default is written into the help by hand: click would show None, our "not given"
        shown = "  [default: %s]" % setting.default_text if setting.default is not None else ""
        if setting.kind == "bool":
            option = click.option(setting.flag_spelling, setting.name, default=None, help=setting.help + shown)
        else:
            metavar = {"int": "N", "float": "SECONDS"}.get(setting.kind, "TEXT")
            option = click.option(setting.flag, setting.name, default=None, metavar=metavar,
                                  help=setting.help + shown)
        command = option(command)
    return command


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_path", metavar="FILE", default=None,
              help="INI file with an [imgurd] section (env: IMGURD_CONFIG).")
@_add_setting_options
@click.version_option(__version__, "--version", prog_name="imgurd", message="%(prog)s %(version)s")
def main(config_path: Any, **flags: Any) -> None:
    """Re-upload images from their URLs to Imgur, in the background, over a small REST API.

    Every option can also be set as IMGURD_<KEY> in the environment or as <key> in the
    [imgurd] section of --config FILE; a flag wins over the environment, which wins over the file.
    client_id, client_secret, refresh_token and api_token are also read from files of those
    names in $CREDENTIALS_DIRECTORY (systemd LoadCredential=), after the environment and before
    the file.
    """
    config_path = config_path or os.environ.get("IMGURD_CONFIG") or None
    try:
        config = resolve(flags, os.environ, config_path)
    except ConfigError as error:
        click.echo("imgurd: error: %s" % error, err=True)
        sys.exit(2)
    logs.setup(config.log_level, config.log_format)
    for warning in unknown_env(os.environ):
        logging.getLogger("imgurd").warning("%s", warning)
    from .server import host_port, run  # tornado and pycurl load only once the configuration is good
    from .state import StateError

    try:
        run(config)
    except StateError as error:  # a state_file it cannot use: never overwritten, start-up stops
        _fatal(config, str(error), 2)
    except socket.gaierror as error:  # --host names no address: a configuration error, said as those are
        click.echo("imgurd: error: invalid value for host: cannot resolve %r (%s)" % (config.host, error.strerror),
                   err=True)
        sys.exit(2)
    except OSError as error:  # e.g. the port is taken
        _fatal(config, "cannot listen on %s: %s" % (host_port(config.host, config.port), error.strerror or error), 1)


def _fatal(config: Any, message: str, status: int) -> None:
    """One line and the exit status. Logging is set up by now: with ``log_format = json`` the line
    is a JSON object (level CRITICAL) like every other, so a log pipeline that reads JSON sees it."""
    if config.log_format == "json":
        logging.getLogger("imgurd").critical("%s", message)
    else:
        click.echo("imgurd: error: %s" % message, err=True)
    sys.exit(status)


def run_command() -> None:
    """The console script: click's usage errors too become one line and exit status 2 (SPEC 4)."""
    try:
        main.main(standalone_mode=False)
    except click.exceptions.NoSuchOption as error:
        click.echo("imgurd: error: unknown option %s (see imgurd --help)" % error.option_name, err=True)
        sys.exit(2)
    except click.UsageError as error:
        click.echo("imgurd: error: %s" % error.format_message(), err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        sys.exit(130)
