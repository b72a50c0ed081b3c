"""Configuration: precedence flag > env > file > default, one-line errors, derived docs."""

import pytest

from imgurd.settings import SETTINGS, ConfigError, example_file, markdown_table, resolve, unknown_env


def write(tmp_path, text, name="imgurd.conf"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_match_the_spec():
    config = resolve({"client_id": "abc"}, {}, None)
    assert config.host == "127.0.0.1" and config.port == 8080
    assert config.api_url == "https://api.imgur.com"
    assert config.max_concurrency == 16 and config.max_image_bytes == 20971520
    assert config.max_urls_per_job == 1000 and config.max_body_bytes == 1048576
    assert config.max_queued_urls == 100000 and config.connect_timeout == 10 and config.request_timeout == 60
    assert config.max_attempts == 4 and config.max_rate_limit_wait == 86400
    assert config.allow_private_networks is False and config.reuse_identical_uploads is True
    assert config.job_ttl == 86400 and config.max_jobs == 100000 and config.shutdown_timeout == 30
    assert config.log_level == "info" and config.log_format == "text"
    assert config.client_secret is None and config.refresh_token is None and config.api_token is None


def test_precedence_flag_over_env_over_file_over_default(tmp_path):
    path = write(tmp_path, "[imgurd]\nclient_id = from-file\nport = 1111\nmax_concurrency = 3\nmax_jobs = 7\n")
    env = {"IMGURD_PORT": "2222", "IMGURD_MAX_CONCURRENCY": "4"}
    config = resolve({"port": "3333"}, env, path)
    assert config.port == 3333  # flag beats env and file
    assert config.max_concurrency == 4  # env beats file
    assert config.max_jobs == 7  # file beats default
    assert config.client_id == "from-file"
    assert config.job_ttl == 86400  # default


def test_an_empty_environment_variable_counts_as_not_set(tmp_path):
    """IMGURD_X= is how env files and container templates leave a key out; a config file's value still counts."""
    path = write(tmp_path, "[imgurd]\nclient_id = from-file\nstate_interval = 7\n")
    config = resolve({}, {"IMGURD_CLIENT_ID": "", "IMGURD_STATE_FILE": " ", "IMGURD_STATE_INTERVAL": ""}, path)
    assert config.client_id == "from-file" and config.state_file is None and config.state_interval == 7
    # but not a secret's: IMGURD_API_TOKEN=${TOKEN} with TOKEN unset must not leave the API open
    with pytest.raises(ConfigError, match=r"^invalid value for api_token \(from environment variable "
                                          r"IMGURD_API_TOKEN\): it is empty$"):
        resolve({}, {"IMGURD_API_TOKEN": ""}, path)


def test_boolean_spellings(tmp_path):
    path = write(tmp_path, "[imgurd]\nclient_id = x\nallow_private_networks = yes\nreuse_identical_uploads = off\n")
    config = resolve({}, {}, path)
    assert config.allow_private_networks is True and config.reuse_identical_uploads is False
    config = resolve({"reuse_identical_uploads": True}, {"IMGURD_ALLOW_PRIVATE_NETWORKS": "0"}, path)
    assert config.allow_private_networks is False and config.reuse_identical_uploads is True


@pytest.mark.parametrize("flags, env, text, message", [
    ({}, {}, None, "missing client_id"),
    ({"client_id": "x", "port": "http"}, {}, None, "invalid value for port (from option --port): 'http' is not a whole number"),
    ({"client_id": "x"}, {"IMGURD_MAX_CONCURRENCY": "0"}, None,
     "invalid value for max_concurrency (from environment variable IMGURD_MAX_CONCURRENCY): 0 is out of range"),
    ({"client_id": "x"}, {}, "[imgurd]\nlog_format = xml\n", "invalid value for log_format (from config file"),
    ({"client_id": "x"}, {}, "[imgurd]\ncolour = blue\n", "unknown key colour in config file"),
    ({"client_id": "x"}, {}, "[other]\nport = 1\n", "unknown section [other]"),
    ({"client_id": "x"}, {}, "port = 1\n", "is not valid INI"),
    ({"client_id": "x"}, {}, "[imgurd]\napi_url = ftp://imgur\n", "invalid value for api_url"),
    ({"client_id": "x", "client_secret": "s"}, {}, None,
     "missing refresh_token: client_secret (from option --client-secret) and refresh_token go together"),
    ({"client_id": "x"}, {"IMGURD_REFRESH_TOKEN": "r"}, None,
     "missing client_secret: refresh_token (from environment variable IMGURD_REFRESH_TOKEN) and client_secret"),
    ({"client_id": "x"}, {"IMGURD_ALLOW_PRIVATE_NETWORKS": "maybe"}, None, "invalid value for allow_private_networks"),
])
def test_errors_name_the_key(tmp_path, flags, env, text, message):
    path = write(tmp_path, text) if text is not None else None
    with pytest.raises(ConfigError) as caught:
        resolve(flags, env, path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    if path and "config file" in message:
        assert path in str(caught.value)


def test_missing_client_id_names_the_file(tmp_path):
    path = write(tmp_path, "[imgurd]\nport = 9000\n")
    with pytest.raises(ConfigError, match="missing client_id.*" + path):
        resolve({}, {}, path)


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file .*nope.conf"):
        resolve({"client_id": "x"}, {}, str(tmp_path / "nope.conf"))


def test_secret_values_never_echoed(tmp_path):
    with pytest.raises(ConfigError) as caught:
        resolve({"client_id": "x", "api_token": "   "}, {}, None)
    assert str(caught.value) == "invalid value for api_token (from option --api-token): it is empty"
    path = write(tmp_path, "[imgurd]\nclient_id = x\napi_token = 'p4ssw0rd'\n")
    with pytest.raises(ConfigError) as caught:  # why, without the value
        resolve({}, {}, path)
    assert str(caught.value).endswith("it is wrapped in quotes; write the value without them")
    assert "p4ssw0rd" not in str(caught.value)
    config = resolve({"client_id": "x", "client_secret": "s3cr3t", "refresh_token": "r3fr3sh"}, {}, None)
    assert "s3cr3t" not in repr(config) and "r3fr3sh" not in repr(config)


def test_example_file_and_table_cover_every_key(tmp_path):
    text = example_file()
    table = markdown_table()
    for setting in SETTINGS:
        assert "%s =" % setting.name in text
        assert "`%s`" % setting.name in table and setting.env in table
    # the example parses; its placeholder client_id stops start-up until replaced, then all else is default
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=r"^invalid value for client_id \(from config file .*\): "
                                          r"YOUR_IMGUR_CLIENT_ID is the example's placeholder"):
        resolve({}, {}, path)
    config = resolve({}, {}, write(tmp_path, text.replace("YOUR_IMGUR_CLIENT_ID", "0123abcd")))
    assert config.client_id == "0123abcd" and config.port == 8080


@pytest.mark.parametrize("value", ['"0123abcd"', "'0123abcd'"])
def test_a_value_in_quotes_is_refused_naming_the_key(tmp_path, value):
    with pytest.raises(ConfigError, match="invalid value for client_id .*wrapped in quotes"):
        resolve({}, {}, write(tmp_path, "[imgurd]\nclient_id = %s\n" % value))


def test_shipped_example_is_generated_from_the_table():
    import pathlib

    shipped = pathlib.Path(__file__).resolve().parent.parent / "imgurd.conf.example"
    assert shipped.read_text() == example_file() + "\n", "regenerate: python -m imgurd.settings example"


@pytest.mark.parametrize("document", ["docs/configuration.md", "README.md"])
def test_configuration_tables_are_generated_from_the_table(document):
    import pathlib

    reference = (pathlib.Path(__file__).resolve().parent.parent / document).read_text()
    start = reference.index("-->", reference.index("<!-- settings-table")) + 4
    end = reference.index("<!-- /settings-table -->")
    assert reference[start:end].strip() == markdown_table(), "regenerate: python -m imgurd.settings table"


def test_dry_run_needs_no_client_id():
    config = resolve({"dry_run": True}, {}, None)
    assert config.dry_run is True and config.client_id is None
    assert resolve({}, {"IMGURD_DRY_RUN": "yes"}, None).dry_run is True
    with pytest.raises(ConfigError, match="missing client_id.*--dry-run"):
        resolve({}, {"IMGURD_DRY_RUN": "no"}, None)


def test_unknown_environment_variables_are_named_with_the_closest_key():
    environ = {"IMGURD_MAX_CONCURENCY": "4", "IMGURD_PORT": "1", "IMGURD_CONFIG": "/etc/imgurd.conf",
               "IMGURD_SERVER": "http://127.0.0.1:8080", "IMGURD_API_TOKEN": "t", "IMGURD_ZZZZZZZZZZZZ": "1",
               "HOME": "/root"}
    assert unknown_env(environ) == [
        "ignoring environment variable IMGURD_MAX_CONCURENCY: no such setting; did you mean IMGURD_MAX_CONCURRENCY?",
        "ignoring environment variable IMGURD_ZZZZZZZZZZZZ: no such setting",
    ]


# --- $CREDENTIALS_DIRECTORY (systemd LoadCredential=, secrets mounted as files)


def credentials(tmp_path, **files):
    directory = tmp_path / "credentials"
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)
    return {"CREDENTIALS_DIRECTORY": str(directory)}


def test_credentials_directory_supplies_the_secrets(tmp_path):
    env = credentials(tmp_path, client_id="cid\n", client_secret="s3cr3t\n", refresh_token="r3fr3sh",
                      api_token="tok\n", port="1234", unrelated="x")
    config = resolve({}, env, None)
    assert (config.client_id, config.client_secret, config.refresh_token, config.api_token) == \
        ("cid", "s3cr3t", "r3fr3sh", "tok")
    assert config.port == 8080  # only client_id and the secrets are read from there


def test_credentials_precedence_flag_env_credential_file(tmp_path):
    env = credentials(tmp_path, client_id="from-credential", api_token="cred-token", client_secret="cred-secret",
                      refresh_token="cred-refresh")
    path = write(tmp_path, "[imgurd]\nclient_id = from-file\napi_token = file-token\nrefresh_token = file-refresh\n")
    env["IMGURD_API_TOKEN"] = "env-token"
    config = resolve({"client_secret": "flag-secret"}, env, path)
    assert config.client_secret == "flag-secret"  # flag beats the credential
    assert config.api_token == "env-token"  # environment beats the credential
    assert config.client_id == "from-credential" and config.refresh_token == "cred-refresh"  # beats the file
    assert resolve({"client_secret": "s"}, {}, path).client_id == "from-file"


def test_credentials_errors_name_the_file_never_the_value(tmp_path):
    env = credentials(tmp_path, client_id="x", api_token="  \n")
    with pytest.raises(ConfigError) as caught:
        resolve({}, env, None)
    message = str(caught.value)
    assert message.startswith("invalid value for api_token (from credential file ")
    assert env["CREDENTIALS_DIRECTORY"] + "/api_token" in message and message.endswith(": it is empty")
    with pytest.raises(ConfigError, match="CREDENTIALS_DIRECTORY=.*nowhere is not a directory"):
        resolve({"client_id": "x"}, {"CREDENTIALS_DIRECTORY": str(tmp_path / "nowhere")}, None)
    (tmp_path / "credentials" / "api_token").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="invalid value for api_token .*not UTF-8"):
        resolve({}, env, None)
    (tmp_path / "credentials" / "api_token").unlink()
    (tmp_path / "credentials" / "api_token").mkdir()
    with pytest.raises(ConfigError, match="cannot read credential api_token from .*api_token"):
        resolve({}, env, None)
