"""mycert.pki.token: CA keys in a PKCS#11 token (SoftHSM2), signing for pyca's builders."""

from __future__ import annotations

import copy
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.x509 import ocsp
from pkcs11 import Attribute
from pkcs11 import KeyType as P11KeyType
from pkcs11.util.ec import encode_named_curve_parameters

from mycert.pki import (
    CertificateStatus,
    DistinguishedName,
    KeyType,
    StatusAnswer,
    build_crl,
    build_ocsp_response,
    create_issuing_ca,
    create_ocsp_responder,
    create_root_ca,
    parse_ocsp_request,
)
from mycert.pki.token import Token, TokenEcPrivateKey, TokenError, TokenRsaPrivateKey
from tests.pki.helpers import run_command, write_pem
from tests.support.softhsm import SoftHsm

SUBJECT = DistinguishedName("MyCert Token Test CA", "Agence eSanté", "LU")


@pytest.fixture(scope="module")
def token(softhsm: SoftHsm) -> Token:
    return Token(module=softhsm.module, token_label=softhsm.init_token("pki"), pin=softhsm.pin)


@pytest.fixture(scope="module")
def rsa_key(token: Token) -> TokenRsaPrivateKey:
    key = token.generate_key(KeyType.RSA_2048, "test-rsa")
    assert isinstance(key, TokenRsaPrivateKey)
    return key


@pytest.fixture(scope="module")
def ec_key(token: Token) -> TokenEcPrivateKey:
    key = token.generate_key(KeyType.EC_P256, "test-ec")
    assert isinstance(key, TokenEcPrivateKey)
    return key


def test_rsa_signature_verifies(rsa_key: TokenRsaPrivateKey) -> None:
    for algorithm in (hashes.SHA256(), hashes.SHA384(), hashes.SHA512()):
        signature = rsa_key.sign(b"data", padding.PKCS1v15(), algorithm)
        rsa_key.public_key().verify(signature, b"data", padding.PKCS1v15(), algorithm)
    assert rsa_key.key_size == 2048


def test_ecdsa_signature_verifies(ec_key: TokenEcPrivateKey) -> None:
    signature = ec_key.sign(b"data", ec.ECDSA(hashes.SHA256()))
    ec_key.public_key().verify(signature, b"data", ec.ECDSA(hashes.SHA256()))
    assert isinstance(ec_key.curve, ec.SECP256R1)


def test_deterministic_ecdsa_is_refused(ec_key: TokenEcPrivateKey) -> None:
    with pytest.raises(UnsupportedAlgorithm, match="Deterministic ECDSA"):
        ec_key.sign(b"data", ec.ECDSA(hashes.SHA256(), deterministic_signing=True))


def test_rsa_pss_is_refused(rsa_key: TokenRsaPrivateKey) -> None:
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    with pytest.raises(UnsupportedAlgorithm, match=r"PKCS#1 v1\.5"):
        rsa_key.sign(b"data", pss, hashes.SHA256())


@pytest.mark.parametrize("fixture", ["rsa_key", "ec_key"])
def test_private_key_never_leaves_the_token(fixture: str, request: pytest.FixtureRequest) -> None:
    key = request.getfixturevalue(fixture)
    with pytest.raises(TypeError, match="cannot be exported"):
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    with pytest.raises(TypeError, match="cannot be exported"):
        key.private_numbers()


def test_token_keys_are_sensitive_and_not_extractable(
    token: Token, ec_key: TokenEcPrivateKey
) -> None:
    import pkcs11

    def attributes(session: object) -> tuple[bool, bool]:
        private = session.get_key(  # type: ignore[attr-defined]
            object_class=pkcs11.ObjectClass.PRIVATE_KEY, id=ec_key.key_id
        )
        return private[pkcs11.Attribute.SENSITIVE], private[pkcs11.Attribute.EXTRACTABLE]

    assert token.run(attributes) == (True, False)


@pytest.mark.parametrize("fixture", ["rsa_key", "ec_key"])
def test_copy_and_deepcopy(fixture: str, request: pytest.FixtureRequest) -> None:
    key = request.getfixturevalue(fixture)
    for clone in (copy.copy(key), copy.deepcopy(key)):
        assert clone is not key
        assert clone.public_key() == key.public_key()
        assert clone.key_id == key.key_id
        if isinstance(clone, TokenEcPrivateKey):
            clone.public_key().verify(
                clone.sign(b"x", ec.ECDSA(hashes.SHA256())), b"x", ec.ECDSA(hashes.SHA256())
            )
        else:
            signature = clone.sign(b"x", padding.PKCS1v15(), hashes.SHA256())
            clone.public_key().verify(signature, b"x", padding.PKCS1v15(), hashes.SHA256())


def test_generate_refuses_to_overwrite(token: Token, ec_key: TokenEcPrivateKey) -> None:
    with pytest.raises(TokenError, match="refusing to overwrite") as caught:
        token.generate_key(KeyType.EC_P256, "test-ec")
    assert caught.value.code == "exists"


def test_certificates_crl_and_ocsp_signed_in_the_token_verify_with_openssl(
    token: Token,
    rsa_key: TokenRsaPrivateKey,
    ec_key: TokenEcPrivateKey,
    tmp_path: Path,
    openssl: str,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    root = create_root_ca(subject=SUBJECT, key_type=KeyType.RSA_2048, now=now, key=rsa_key)
    issuing = create_issuing_ca(
        root=root,
        subject=DistinguishedName("MyCert Token Issuing", "Agence eSanté", "LU"),
        key_type=KeyType.EC_P256,
        now=now,
        key=ec_key,
        policy_oid="1.3.6.1.4.1.59999.1.1",
        ca_issuers_url="http://pki.example.lu/pki/ca/root.cer",
    )
    responder = create_ocsp_responder(
        issuer=issuing,
        subject=DistinguishedName("MyCert Token OCSP", "Agence eSanté", "LU"),
        key_type=KeyType.EC_P256,
        now=now,
    )
    issuing.certificate.verify_directly_issued_by(root.certificate)
    responder.certificate.verify_directly_issued_by(issuing.certificate)
    root_pem = write_pem(tmp_path / "root.pem", root.certificate)
    issuing_pem = write_pem(tmp_path / "issuing.pem", issuing.certificate)
    responder_pem = write_pem(tmp_path / "responder.pem", responder.certificate)
    run_command([openssl, "verify", "-CAfile", root_pem, issuing_pem])
    run_command([openssl, "verify", "-CAfile", root_pem, "-untrusted", issuing_pem, responder_pem])

    crl = build_crl(
        issuer=issuing,
        entries=[],
        crl_number=7,
        this_update=now,
        next_update=now + timedelta(days=1),
    )
    assert crl.is_signature_valid(ec_key.public_key())
    crl_path = tmp_path / "issuing.crl"
    crl_path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    run_command([openssl, "crl", "-in", crl_path, "-CAfile", issuing_pem, "-noout"])

    # An OCSP response signed by the issuing CA's token key (responder = the CA).
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(responder.certificate, issuing.certificate, hashes.SHA256())
        .build()
    )
    query = parse_ocsp_request(request.public_bytes(serialization.Encoding.DER))
    der = build_ocsp_response(
        query=query,
        issuer_certificate=issuing.certificate,
        responder=issuing,
        answer=StatusAnswer(CertificateStatus.GOOD),
        now=now,
    )
    response_path = tmp_path / "response.der"
    response_path.write_bytes(der)
    result = run_command(
        [
            openssl,
            "ocsp",
            "-respin",
            response_path,
            "-issuer",
            issuing_pem,
            "-sha256",
            "-cert",
            responder_pem,
            "-CAfile",
            root_pem,
            "-no_nonce",
        ]
    )
    assert ": good" in result.stdout
    assert "Response verify OK" in result.stderr


def test_lost_session_is_reopened_once(token: Token, ec_key: TokenEcPrivateKey) -> None:
    session = token.session()
    generation = token.generation
    # Close the session behind the key's back, as a restarted HSM would.
    session.close()
    signature = ec_key.sign(b"after loss", ec.ECDSA(hashes.SHA256()))
    ec_key.public_key().verify(signature, b"after loss", ec.ECDSA(hashes.SHA256()))
    assert token.generation > generation
    assert token.session() is not session


def test_a_forked_child_opens_its_own_session(token: Token, ec_key: TokenEcPrivateKey) -> None:
    parent_session = token.session()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: sign with the inherited key object, report, exit
        code = 1
        try:
            os.close(read)
            signature = ec_key.sign(b"child", ec.ECDSA(hashes.SHA256()))
            own = token.session() is not parent_session
            os.write(write, signature if own else b"")
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    signature = b""
    while chunk := os.read(read, 4096):
        signature += chunk
    os.close(read)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert signature, "the child reused the parent's session"
    ec_key.public_key().verify(signature, b"child", ec.ECDSA(hashes.SHA256()))
    # The parent's session survived the child's C_Finalize/C_Initialize.
    assert token.session() is parent_session
    ec_key.sign(b"parent", ec.ECDSA(hashes.SHA256()))


def test_wrong_pin(softhsm: SoftHsm, token: Token) -> None:
    other = Token(module=softhsm.module, token_label=token.token_label, pin="wrong-pin")
    # One library per process: our token's session must not be open for the login test.
    token.close()
    with pytest.raises(TokenError, match=r"PIN .* is wrong") as caught:
        other.session()
    assert caught.value.code == "pin"


def test_missing_token(softhsm: SoftHsm) -> None:
    with pytest.raises(TokenError, match="No PKCS#11 token labelled 'absent'") as caught:
        Token(module=softhsm.module, token_label="absent", pin="1234").session()
    assert caught.value.code == "token"


def test_missing_module(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="cannot be loaded") as caught:
        Token(module=str(tmp_path / "nothing.so"), token_label="x", pin="1234").session()
    assert caught.value.code == "module"


def test_a_second_token_object_shares_the_login(
    softhsm: SoftHsm, token: Token, ec_key: TokenEcPrivateKey
) -> None:
    """Login is per application: a second Token object on a logged-in token still works,
    also after the first one logs out by closing its session."""
    token.session()
    other = Token(module=softhsm.module, token_label=token.token_label, pin=softhsm.pin)
    key = other.private_key(ec_key.key_id)
    assert isinstance(key, TokenEcPrivateKey)
    key.public_key().verify(
        key.sign(b"shared", ec.ECDSA(hashes.SHA256())), b"shared", ec.ECDSA(hashes.SHA256())
    )
    token.close()
    key.public_key().verify(
        key.sign(b"alone", ec.ECDSA(hashes.SHA256())), b"alone", ec.ECDSA(hashes.SHA256())
    )
    other.close()


def test_a_token_out_of_reach_is_an_outage_and_comes_back(
    softhsm: SoftHsm, token: Token, ec_key: TokenEcPrivateKey
) -> None:
    """The token's storage gone (an HSM restarting): code ``token``, never "no such key",
    for a lookup or a signature; back again, the same objects sign with no restart."""
    token.private_key(ec_key.key_id)
    away = softhsm.directory.with_name(softhsm.directory.name + "-away")
    softhsm.directory.rename(away)
    try:
        for use in (
            lambda: token.private_key(ec_key.key_id),
            lambda: ec_key.sign(b"down", ec.ECDSA(hashes.SHA256())),
        ):
            with pytest.raises(TokenError) as caught:
                use()
            assert caught.value.code in ("token", "module"), caught.value
    finally:
        away.rename(softhsm.directory)
    codes = []
    found = None
    for _ in range(3):  # the first use after the outage may meet the old session once
        try:
            found = token.private_key(ec_key.key_id)
            break
        except TokenError as exc:
            codes.append(exc.code)
    assert found is not None
    assert set(codes) <= {"token", "module"}
    signature = ec_key.sign(b"back", ec.ECDSA(hashes.SHA256()))
    ec_key.public_key().verify(signature, b"back", ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize(
    ("sensitive", "extractable", "reason"),
    [
        (True, True, r"it is extractable \(CKA_EXTRACTABLE true\)"),
        (False, False, r"it is not sensitive \(CKA_SENSITIVE false\)"),
        (False, True, "extractable .* and it is not sensitive"),
    ],
)
def test_a_key_that_can_leave_the_token_is_refused_with_the_reason(
    token: Token, sensitive: bool, extractable: bool, reason: str
) -> None:
    """A key imported with the HSM's own tools, without the attributes init_ca sets."""
    key_id = os.urandom(20)

    def generate(session: Any) -> None:
        parameters = session.create_domain_parameters(
            P11KeyType.EC,
            {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True,
        )
        parameters.generate_keypair(
            id=key_id,
            label=f"imported-{sensitive}-{extractable}",
            store=True,
            public_template={Attribute.TOKEN: True, Attribute.VERIFY: True},
            private_template={
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: sensitive,
                Attribute.EXTRACTABLE: extractable,
                Attribute.SIGN: True,
            },
        )

    token.run(generate)
    with pytest.raises(TokenError, match=reason) as caught:
        token.private_key(key_id)
    assert caught.value.code == "key"
    assert "can leave the token" in str(caught.value)
