"""The authority directory's [[gateway]] tables and [[authority.channel]] tables: loading,
peer authentication, who is served where, and each malformed input refused by place."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.authorities import (
    AuthorityDirectory,
    AuthorityDirectoryError,
    fingerprint,
    hash_token,
)
from gateway.channels import Accepts, EmailChannel, GatewayChannel, PeerGateway, SftpChannel
from gateway.pki import DevPKI

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB5Z0K6qZ3n0sY1m0d0x"

LOCAL = """
[[authority]]
id = "ES-MJ"
country = "ES"
name = "Ministerio de Justicia"
api_tokens = ["{token}"]
tls_client_certificates = ["{es_cert}"]
"""

REMOTE = """
[[authority]]
id = "AR-MJ"
country = "AR"
name = "Ministerio de Justicia y Derechos Humanos"
signing_certificates = ["{ar_cert}"]

[[authority.channel]]
kind = "gateway"
gateway = "gw-ar"
request_types = ["mutual-legal-assistance", "extradition"]

[[authority.channel]]
kind = "email"
address = "mla@jus.example.ar"
smime_certificate = "certs/ar-mj-smime.pem"
languages = ["es"]

[[authority.channel]]
kind = "sftp"
host = "sftp.jus.example.ar"
port = 2222
user = "rogatory"
folder = "/inbox"
inbound_folder = "/outbox"
host_key = "{host_key}  sftp.jus.example.ar"

[[authority]]
id = "CO-FGN"
country = "CO"
name = "Fiscalía General de la Nación"

[[authority.channel]]
kind = "email"
address = "cooperacion@fiscalia.example.co"

[[authority.channel]]
kind = "sftp"
host = "sftp.fiscalia.example.co"
user = "gw"
folder = "/in"
host_key = "{host_key}"
"""

GATEWAY = """
[[gateway]]
id = "gw-ar"
url = "https://gw-ar.example:8443/"
tls_ca = "pki/root-ca.pem"
tls_certificates = ["{ar_server}"]
client_certificates = ["{ar_client}"]
evidence_signers = ["{ar_signer}"]
"""


def values(pki: DevPKI) -> dict[str, str]:
    return {
        "token": hash_token("es-token"),
        "es_cert": fingerprint(pki.cert("ES-MJ")),
        "ar_cert": fingerprint(pki.cert("AR-MJ")),
        "host_key": HOST_KEY,
        "ar_server": fingerprint(pki.cert("gw-ar")),
        "ar_client": fingerprint(pki.cert("gw-ar")),
        "ar_signer": fingerprint(pki.cert("AR-MJ")),
    }


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "authorities.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture()
def full(pki: DevPKI) -> str:
    return (LOCAL + REMOTE + GATEWAY).format(**values(pki))


@pytest.fixture()
def loaded(full: str, tmp_path: Path) -> AuthorityDirectory:
    return AuthorityDirectory.load(write(tmp_path, full))


def refused(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(AuthorityDirectoryError) as info:
        AuthorityDirectory.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message.removeprefix(f"{path}: ")


# --- a valid directory


def test_all_three_channel_kinds_load_in_order(loaded: AuthorityDirectory, tmp_path: Path) -> None:
    ar = loaded.get("AR-MJ")
    assert ar is not None and not ar.local
    assert ar.channels == (
        GatewayChannel("gw-ar", Accepts(request_types=("mutual-legal-assistance", "extradition"))),
        EmailChannel(
            "mla@jus.example.ar",
            tmp_path / "certs" / "ar-mj-smime.pem",  # relative to the directory file
            Accepts(languages=("es",)),
        ),
        SftpChannel(
            host="sftp.jus.example.ar",
            user="rogatory",
            folder="/inbox",
            host_key=HOST_KEY,  # the known_hosts comment is dropped
            port=2222,
            inbound_folder="/outbox",
        ),
    )
    co = loaded.get("CO-FGN")
    assert co is not None
    [mail, sftp] = co.channels
    assert mail == EmailChannel("cooperacion@fiscalia.example.co")
    assert isinstance(sftp, SftpChannel)
    assert (sftp.port, sftp.inbound_folder, sftp.accepts) == (22, None, Accepts())


def test_a_peer_gateway_loads(loaded: AuthorityDirectory, pki: DevPKI, tmp_path: Path) -> None:
    gw = fingerprint(pki.cert("gw-ar"))
    assert loaded.gateways == (
        PeerGateway(
            id="gw-ar",
            url="https://gw-ar.example:8443",  # the trailing slash is dropped
            tls_ca=tmp_path / "pki" / "root-ca.pem",
            tls_certificates=frozenset({gw}),
            client_certificates=frozenset({gw}),
            evidence_signers=frozenset({fingerprint(pki.cert("AR-MJ"))}),
        ),
    )
    assert loaded.gateway("gw-ar") is loaded.gateways[0]
    assert loaded.gateway("gw-zz") is None


def test_an_absolute_path_is_kept(pki: DevPKI, tmp_path: Path) -> None:
    text = (LOCAL + REMOTE + GATEWAY).format(**values(pki))
    text = text.replace('"pki/root-ca.pem"', '"/etc/rogatory/root-ca.pem"')
    gateway = AuthorityDirectory.load(write(tmp_path, text)).gateway("gw-ar")
    assert gateway is not None and gateway.tls_ca == Path("/etc/rogatory/root-ca.pem")


def test_gateway_tables_may_come_first(pki: DevPKI, tmp_path: Path) -> None:
    directory = AuthorityDirectory.load(
        write(tmp_path, (GATEWAY + LOCAL + REMOTE).format(**values(pki)))
    )
    assert [a.id for a in directory] == ["ES-MJ", "AR-MJ", "CO-FGN"]
    assert directory.gateway("gw-ar") is not None


def test_authenticate_peer_by_its_client_certificate(
    loaded: AuthorityDirectory, pki: DevPKI
) -> None:
    peer = loaded.authenticate_peer(pki.cert("gw-ar"))
    assert peer is not None and peer.id == "gw-ar"
    # The peer's certificate is not an authority's, and an authority's is not a peer's.
    assert loaded.authenticate_client_certificate(pki.cert("gw-ar")) is None
    assert loaded.authenticate_peer(pki.cert("ES-MJ")) is None
    es = loaded.authenticate_client_certificate(pki.cert("ES-MJ"))
    assert es is not None and es.id == "ES-MJ"
    assert loaded.authenticate_peer(pki.cert("gw-es")) is None


def test_served_by_names_only_authorities_reached_through_that_gateway(
    loaded: AuthorityDirectory,
) -> None:
    ar = loaded.served_by("gw-ar", "AR-MJ")
    assert ar is not None and ar.id == "AR-MJ"
    assert loaded.served_by("gw-es", "AR-MJ") is None  # another gateway
    assert loaded.served_by("gw-ar", "CO-FGN") is None  # reached by e-mail and SFTP only
    assert loaded.served_by("gw-ar", "ES-MJ") is None  # served here
    assert loaded.served_by("gw-ar", "XX-NONE") is None


def test_local_names_only_authorities_this_gateway_serves(loaded: AuthorityDirectory) -> None:
    es = loaded.local("ES-MJ")
    assert es is not None and es.local and es.channels == ()
    assert loaded.local("AR-MJ") is None
    assert loaded.local("CO-FGN") is None
    assert loaded.local("XX-NONE") is None


# --- malformed input, refused with its place


def remote_with(channel: str) -> str:
    return (
        '[[authority]]\nid = "AR-MJ"\ncountry = "AR"\nname = "MJ"\n\n'
        f"[[authority.channel]]\n{channel}\n"
    )


WHERE = "authority[0] (id 'AR-MJ'): channel[0]: "
SFTP = f'kind = "sftp"\nhost = "h.example"\nuser = "u"\nfolder = "/in"\nhost_key = "{HOST_KEY}"'
PEER = '[[gateway]]\nid = "gw-ar"\nurl = "https://gw-ar.example"\n'


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        (
            'kind = "fax"\nnumber = "+54"',
            WHERE + "kind must be one of gateway, email, sftp, not 'fax'",
        ),
        ('address = "a@b.example"', WHERE + "kind must be one of gateway, email, sftp, not None"),
        (
            'kind = "email"\naddress = "a@b.example"\nhost = "h"',
            WHERE + "unknown key 'host'; known keys: address, kind, languages, request_types, "
            "smime_certificate",
        ),
        (
            'kind = "gateway"\ngateway = "gw-ar"\nhost_key = "x y"',
            WHERE + "unknown key 'host_key'",
        ),
        (
            'kind = "sftp"\nhost = "h.example"\nuser = "u"\nfolder = "/in"',
            WHERE + "missing key 'host_key'",
        ),
        (
            SFTP.replace(HOST_KEY, "AAAAC3NzaC1lZDI1NTE5"),
            WHERE + "host_key must be '<type> <base64>'",
        ),
        (SFTP + "\nport = 0", WHERE + "port must be a number from 1 to 65535"),
        (SFTP + "\nport = 65536", WHERE + "port must be a number from 1 to 65535"),
        (SFTP + '\nport = "22"', WHERE + "port must be a number from 1 to 65535"),
        (SFTP + "\nport = 22.0", WHERE + "port must be a number from 1 to 65535"),
        (SFTP + "\nport = true", WHERE + "port must be a number from 1 to 65535"),
        (SFTP + '\ninbound_folder = ""', WHERE + "inbound_folder must be a folder path"),
        ('kind = "email"\naddress = "mla.example.org"', WHERE + "address 'mla.example.org' is not"),
        ('kind = "email"\naddress = "mla @x.example"', WHERE + "address 'mla @x.example' is not"),
        ('kind = "email"\naddress = "<mla@x.example>"', WHERE + "address '<mla@x.example>' is not"),
        ('kind = "email"\naddress = "a@x.example,b@y"', WHERE + "address 'a@x.example,b@y' is not"),
        (
            'kind = "email"\naddress = "a@x.example"\nsmime_certificate = ""',
            WHERE + "smime_certificate",
        ),
        (
            'kind = "email"\naddress = "a@x.example"\nlanguages = "es"',
            WHERE + "languages must be an array",
        ),
        (
            'kind = "email"\naddress = "a@x.example"\nrequest_types = [1]',
            WHERE + "request_types must be an array of strings",
        ),
        ('kind = "gateway"', WHERE + "missing key 'gateway'"),
    ],
)
def test_a_malformed_channel_is_refused_naming_its_place(
    tmp_path: Path, channel: str, expected: str
) -> None:
    assert refused(tmp_path, remote_with(channel) + PEER).startswith(expected)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (PEER + 'token = "x"', "gateway[0]: unknown key 'token'; known keys: client_certificates"),
        (
            PEER.replace("https://", "http://"),
            "gateway[0]: url 'http://gw-ar.example' must start with https://",
        ),
        (
            PEER.replace("https://", "HTTPS://"),
            "gateway[0]: url 'HTTPS://gw-ar.example' must start",
        ),
        ('[[gateway]]\nid = "gw-ar"\n', "gateway[0]: missing key 'url'"),
        (PEER.replace('"gw-ar"', '"gw ar"'), "gateway[0]: id 'gw ar' is not a valid id"),
        (PEER + 'tls_ca = ""', "gateway[0]: tls_ca must be the path of a PEM file"),
        (PEER + 'client_certificates = ["md5:00"]', "gateway[0]: client_certificates[0] is not"),
        (PEER + PEER, "gateway id 'gw-ar' appears twice"),
        ('gateway = "gw-ar"\n', "'gateway' must be an array of tables ([[gateway]])"),
        ('[[peer]]\nid = "gw-ar"\n', "unknown top-level key 'peer'"),
    ],
)
def test_a_malformed_gateway_is_refused_naming_its_place(
    tmp_path: Path, table: str, expected: str
) -> None:
    assert refused(tmp_path, table).startswith(expected)


def test_a_channel_naming_an_undefined_gateway_is_refused(tmp_path: Path) -> None:
    text = remote_with('kind = "gateway"\ngateway = "gw-zz"') + PEER
    assert refused(tmp_path, text) == (
        "authority 'AR-MJ': a channel names gateway 'gw-zz', which no [[gateway]] table defines"
    )


def test_a_peer_certificate_bound_to_two_gateways_is_refused(pki: DevPKI, tmp_path: Path) -> None:
    cert = fingerprint(pki.cert("gw-ar"))
    text = PEER + f'client_certificates = ["{cert}"]\n'
    text += PEER.replace("gw-ar", "gw-ar2") + f'client_certificates = ["{cert}"]\n'
    assert refused(tmp_path, text) == (
        f"gateway 'gw-ar2': client_certificates: {cert} is already bound to gateway 'gw-ar'"
    )


def test_a_peer_certificate_also_bound_to_an_authority_is_refused(
    pki: DevPKI, tmp_path: Path
) -> None:
    cert = fingerprint(pki.cert("gw-ar"))
    text = LOCAL.format(token=hash_token("t"), es_cert=cert)
    text += PEER + f'client_certificates = ["{cert}"]\n'
    assert refused(tmp_path, text) == (
        f"authority 'ES-MJ': tls_client_certificates: {cert} is already bound to gateway 'gw-ar'"
    )


@pytest.mark.parametrize(
    "credential",
    [
        f'api_tokens = ["{hash_token("ar-token")}"]',
        'tls_client_certificates = ["sha256:' + "ab" * 32 + '"]',
    ],
)
def test_an_authority_with_channels_and_api_credentials_is_refused(
    tmp_path: Path, credential: str
) -> None:
    text = (
        f'[[authority]]\nid = "AR-MJ"\ncountry = "AR"\nname = "MJ"\n{credential}\n\n'
        '[[authority.channel]]\nkind = "email"\naddress = "mla@jus.example.ar"\n'
    )
    assert refused(tmp_path, text) == (
        "authority 'AR-MJ' has channels (it is served elsewhere) and API credentials "
        "(it is served here); give one or the other"
    )


def test_a_channel_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    text = '[[authority]]\nid = "AR-MJ"\ncountry = "AR"\nname = "MJ"\nchannel = ["email"]\n'
    assert refused(tmp_path, text) == "authority[0] (id 'AR-MJ'): channel[0]: expected a table"
