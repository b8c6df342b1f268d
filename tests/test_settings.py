"""Settings: precedence, conversion errors, production refusals, development bootstrap."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from cryptography import x509

from gateway.authorities import AuthorityDirectory, hash_token
from gateway.bootstrap import ensure_development_setup
from gateway.pki import create_dev_pki, load_dev_pki
from gateway.pki_issue import CA_KEY_USAGE, Profile, name
from gateway.settings import GiB, MiB, Settings, SettingsError, load_settings
from signing.trust import RevocationPolicy

# --- precedence and defaults


def test_defaults() -> None:
    settings = load_settings({})
    assert settings.mode == "production"
    assert settings.data_dir == Path("data")
    assert settings.database_url == "sqlite:///data/rogatory.db"
    assert settings.blob_dir == Path("data/blobs")
    assert (settings.host, settings.port) == ("127.0.0.1", 8443)
    assert settings.max_envelope_bytes == 2 * MiB
    assert settings.max_attachment_bytes == 2 * GiB
    assert settings.max_attachments == 100
    assert settings.revocation is RevocationPolicy.HARD
    assert settings.tsa_url is None and settings.trust_anchors == ()


def test_database_and_blobs_follow_data_dir(tmp_path: Path) -> None:
    settings = load_settings({"ROGATORY_DATA_DIR": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path}/rogatory.db"
    assert settings.blob_dir == tmp_path / "blobs"
    moved = settings.replace(data_dir=tmp_path / "elsewhere")
    assert moved.blob_dir == tmp_path / "elsewhere" / "blobs"
    assert moved.database_url == f"sqlite:///{tmp_path}/elsewhere/rogatory.db"


def test_environment_overrides_file_overrides_defaults(tmp_path: Path) -> None:
    config = tmp_path / "rogatory.toml"
    config.write_text(
        'gateway_id = "gw-file"\nport = 9000\nhost = "10.0.0.1"\n'
        'trust_anchors = ["anchors/root.pem", "/etc/other.pem"]\nrevocation = "soft"\n'
    )
    env = {"ROGATORY_CONFIG": str(config), "ROGATORY_PORT": "9443", "ROGATORY_MODE": "development"}
    settings = load_settings(env)
    assert settings.port == 9443  # env over file
    assert settings.gateway_id == "gw-file"  # file over default
    assert settings.host == "10.0.0.1"
    assert settings.mode == "development"
    assert settings.revocation is RevocationPolicy.SOFT
    assert settings.max_attachments == 100  # default
    # relative paths in the file are relative to the file
    assert settings.trust_anchors == (tmp_path / "anchors/root.pem", Path("/etc/other.pem"))


def test_config_file_argument_and_env_lists(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('gateway_id = "gw-arg"\n')
    env = {"ROGATORY_TRUST_ANCHORS": f"a.pem{os.pathsep}b.pem", "ROGATORY_PLAIN_HTTP": "yes"}
    settings = load_settings(env, config_file=config)
    assert settings.gateway_id == "gw-arg"
    assert settings.trust_anchors == (Path("a.pem"), Path("b.pem"))
    assert settings.plain_http is True


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("ROGATORY_PORT", "http", "ROGATORY_PORT: expected an integer, got 'http'"),
        ("ROGATORY_PORT", "70000", "ROGATORY_PORT: expected a port number"),
        ("ROGATORY_MAX_ATTACHMENTS", "-1", "ROGATORY_MAX_ATTACHMENTS: expected a positive"),
        ("ROGATORY_MODE", "prod", "ROGATORY_MODE: expected one of development, production"),
        ("ROGATORY_REVOCATION", "never", "ROGATORY_REVOCATION: expected one of hard, soft"),
        ("ROGATORY_PLAIN_HTTP", "maybe", "ROGATORY_PLAIN_HTTP: expected true or false"),
        ("ROGATORY_GATEWAY_COUNTRY", "Spain", "ROGATORY_GATEWAY_COUNTRY: expected a two-letter"),
        ("ROGATORY_DATABASE_URL", "rogatory.db", "ROGATORY_DATABASE_URL: expected a URL"),
    ],
)
def test_environment_type_errors_name_the_variable(
    variable: str, value: str, expected: str
) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({variable: value})
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('port = "eighty"\n', "key 'port': expected an integer, got 'eighty'"),
        ("port = true\n", "key 'port': expected an integer, got bool True"),
        ("gateway_id = 5\n", "key 'gateway_id': expected a string, got int 5"),
        ('trust_anchors = {a = "b"}\n', "key 'trust_anchors': expected a list of paths"),
        ("trust_anchors = [1]\n", "key 'trust_anchors': expected a string"),
        ('plain_http = "perhaps"\n', "key 'plain_http': expected true or false"),
        ('gatway_id = "gw-es"\n', "unknown key 'gatway_id'"),
        ("port = \n", "not valid TOML"),
    ],
)
def test_file_errors_name_the_key(tmp_path: Path, line: str, expected: str) -> None:
    config = tmp_path / "rogatory.toml"
    config.write_text(line)
    with pytest.raises(SettingsError) as info:
        load_settings({}, config_file=config)
    assert str(config) in str(info.value) and expected in str(info.value)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read the config file"):
        load_settings({"ROGATORY_CONFIG": str(tmp_path / "absent.toml")})


def test_database_password_is_never_shown() -> None:
    settings = load_settings({"ROGATORY_DATABASE_URL": "postgresql://gw:s3cret@db:5432/rogatory"})
    assert "s3cret" not in repr(settings)
    assert settings.database_url_redacted == "postgresql://gw:***@db:5432/rogatory"


# --- production refusals


@pytest.fixture()
def production(tmp_path: Path) -> Settings:
    """A complete production configuration; each refusal test breaks one thing."""
    own = create_dev_pki(tmp_path / "pki")
    own.issue(
        "prod-root",
        subject=name(cn="Ministerio de Justicia Root CA", o="Ministerio de Justicia", c="ES"),
        profile=Profile(key_usage=CA_KEY_USAGE, ca_path_length=1),
        issuer="prod-root",
    )
    authorities = tmp_path / "authorities.toml"
    authorities.write_text(
        f'[[authority]]\nid = "AR-MJ"\ncountry = "AR"\nname = "MJ"\n'
        f'api_tokens = ["{hash_token("t")}"]\n'
    )
    return Settings(
        mode="production",
        data_dir=tmp_path / "data",
        gateway_id="gw-es",
        gateway_name="Pasarela del Ministerio de Justicia",
        gateway_country="ES",
        signing_key=own.key_path("ES-MJ"),
        signing_cert=own.cert_path("ES-MJ"),
        tls_cert=own.cert_path("gw-es"),
        tls_key=own.key_path("gw-es"),
        tls_client_ca=own.cert_path("prod-root"),
        authorities_file=authorities,
        trust_anchors=(own.cert_path("prod-root"),),
    )


def problems(settings: Settings) -> str:
    with pytest.raises(SettingsError) as info:
        settings.check()
    return "\n".join(info.value.problems)


def test_a_complete_production_configuration_starts(
    production: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="rogatory.settings"):
        production.check()
    assert "SQLite" in caplog.text  # allowed in production, but said


def test_production_refuses_without_tls(production: Settings) -> None:
    assert "no TLS certificate and key" in problems(production.replace(tls_cert=None))
    assert "no TLS certificate and key" in problems(production.replace(tls_key=None))


def test_production_refuses_without_signing_identity(production: Settings) -> None:
    assert "no evidence-signing identity" in problems(production.replace(signing_key=None))


def test_production_refuses_a_signing_key_not_matching_its_cert(
    production: Settings, tmp_path: Path
) -> None:
    other = production.replace(signing_key=tmp_path / "pki" / "AR-MJ.key.pem")
    assert "does not belong to the certificate" in problems(other)


def test_production_refuses_without_authorities(production: Settings) -> None:
    assert "no authority directory" in problems(production.replace(authorities_file=None))


def test_production_refuses_a_malformed_authority_directory(production: Settings) -> None:
    assert production.authorities_file is not None
    production.authorities_file.write_text('[[authority]]\nid = "X"\n')
    assert "authorities_file:" in problems(production)


def test_production_refuses_without_trust_anchors(production: Settings) -> None:
    assert "no trust anchors" in problems(production.replace(trust_anchors=()))


def test_production_refuses_without_gateway_id(production: Settings) -> None:
    assert "gateway_id is not set" in problems(production.replace(gateway_id=None))


def test_production_refuses_files_that_do_not_exist(production: Settings, tmp_path: Path) -> None:
    absent = tmp_path / "absent.pem"
    assert f"tls_cert: {absent} does not exist" in problems(production.replace(tls_cert=absent))
    assert f"trust_anchors: {absent} does not exist" in problems(
        production.replace(trust_anchors=(absent,))
    )


def test_production_refuses_private_keys_readable_by_others(production: Settings) -> None:
    assert production.tls_key is not None
    production.tls_key.chmod(0o640)
    assert "tls_key" in problems(production) and "readable by group or others" in problems(
        production
    )


def test_production_refuses_the_development_root(production: Settings, tmp_path: Path) -> None:
    dev_root = tmp_path / "pki" / "root-ca.pem"
    found = problems(production.replace(trust_anchors=(dev_root,)))
    assert "development root CA" in found and "trust_anchors" in found
    # a folder of anchors holding it is refused as well
    assert "development root CA" in problems(production.replace(trust_anchors=(tmp_path / "pki",)))
    assert "tls_client_ca" in problems(production.replace(tls_client_ca=dev_root))


def test_production_refuses_plain_http_beyond_loopback(production: Settings) -> None:
    plain = production.replace(plain_http=True, tls_cert=None, tls_key=None)
    plain.check()  # loopback behind a local TLS proxy is fine
    plain.replace(host="::1").check()
    assert "plain_http listens unencrypted on '192.0.2.10'" in problems(
        plain.replace(host="192.0.2.10")
    )


def test_every_problem_is_listed_at_once(production: Settings) -> None:
    broken = production.replace(tls_cert=None, signing_key=None, trust_anchors=())
    with pytest.raises(SettingsError) as info:
        broken.check()
    assert len(info.value.problems) == 3
    assert "refusing to start the gateway" in str(info.value)


def test_development_mode_allows_what_production_refuses(production: Settings) -> None:
    production.replace(mode="development", tls_cert=None, trust_anchors=()).check()


# --- development bootstrap


def test_development_bootstrap_creates_everything_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = load_settings({"ROGATORY_MODE": "development", "ROGATORY_DATA_DIR": str(data)})
    ready = ensure_development_setup(settings)
    ready.check()

    pki = load_dev_pki(data / "pki")
    assert ready.gateway_id == "gw-es" and ready.gateway_country == "ES"
    assert ready.tls_cert == pki.cert_path("gw-es") and ready.tls_key == pki.key_path("gw-es")
    assert ready.trust_anchors == (pki.root_path,) and ready.tls_client_ca == pki.root_path
    assert ready.signing_cert == pki.cert_path("gw-es-evidence")
    assert ready.authorities_file == data / "authorities.toml"
    evidence = pki.cert("gw-es-evidence")
    key_usage = evidence.extensions.get_extension_for_class(x509.KeyUsage)
    assert key_usage.value.digital_signature

    tokens = data / "tokens.txt"
    assert tokens.stat().st_mode & 0o777 == 0o600
    clear = dict(
        line.split() for line in tokens.read_text().splitlines() if not line.startswith("#")
    )
    assert set(clear) == {"ES-MJ", "AR-MJ", "CO-FGN", "PT-PGR", "MX-FGR"}
    directory = AuthorityDirectory.load(data / "authorities.toml")
    text = (data / "authorities.toml").read_text()
    for authority_id, token in clear.items():
        assert token not in text  # the directory holds only digests
        assert getattr(directory.authenticate_token(token), "id", None) == authority_id
        authority = directory.get(authority_id)
        assert authority is not None and directory.signer_belongs(authority, pki.cert(authority_id))
    es, ar = directory.get("ES-MJ"), directory.get("AR-MJ")
    assert directory.authenticate_client_certificate(pki.cert("gw-es")) == es
    assert directory.authenticate_client_certificate(pki.cert("gw-ar")) == ar
    assert es is not None and not directory.signer_belongs(es, pki.cert("AR-MJ"))

    # idempotent: a second run changes nothing and keeps the tokens
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    again = ensure_development_setup(settings)
    assert again == ready
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before


def test_development_bootstrap_keeps_what_the_operator_configured(
    tmp_path: Path, production: Settings
) -> None:
    dev = production.replace(mode="development", data_dir=tmp_path / "dev")
    ready = ensure_development_setup(dev)
    assert ready.authorities_file == production.authorities_file
    assert ready.tls_cert == production.tls_cert and ready.signing_key == production.signing_key
    assert not (tmp_path / "dev" / "tokens.txt").exists()


def test_development_bootstrap_refuses_production(production: Settings) -> None:
    with pytest.raises(SettingsError, match="development only"):
        ensure_development_setup(production)
