"""CA keys inside a PKCS#11 token (an HSM, or SoftHSM2 in tests), as pyca private keys.

:class:`TokenRsaPrivateKey` and :class:`TokenEcPrivateKey` subclass cryptography's
``RSAPrivateKey`` and ``EllipticCurvePrivateKey``. pyca's builders (certificates, CRLs,
OCSP responses) call the key's Python ``sign()`` for any subclass, so the builders in
this package sign with a token key unchanged; the private key never leaves the token.

One PKCS#11 session per process (:class:`Token`), opened on first use. PKCS#11 v2.40
§6.7.6: a forked child must initialise the library again before using it, so a token
object that sees a new process id drops the inherited session and calls
``C_Finalize``/``C_Initialize`` in the child. A session lost to the token (removed, HSM
restarted: ``CKR_SESSION_HANDLE_INVALID`` and kin) is reopened once.

A PIN the token refused (``CKR_PIN_INCORRECT``, ``CKR_PIN_LOCKED``) is not tried again by
the process until the PIN changes: an HSM locks its PIN after 3 to 10 failures, and every
task, retry and prefork child logging in again with a stale PIN file would lock it within
minutes. One failed login per process and PIN, then :class:`TokenError` at once.

Why one module of over 600 lines: the session, its fork and outage handling, the PIN
refusal and the two key classes share one lock and one session's state; split, each part
would reach into the others' privates. The key classes are the small end of it.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, Self, TypeVar

import pkcs11
from asn1crypto import core as asn1_core
from asn1crypto import keys as asn1_keys
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import utils as asym_utils
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding, PKCS1v15
from pkcs11 import Attribute, Mechanism, ObjectClass
from pkcs11 import KeyType as P11KeyType
from pkcs11.util.ec import encode_named_curve_parameters

from mycert.pki.keys import KeyType

__all__ = [
    "Token",
    "TokenEcPrivateKey",
    "TokenError",
    "TokenPrivateKey",
    "TokenRsaPrivateKey",
    "forget_refused_pins",
    "key_id_for",
]

T = TypeVar("T")
logger = logging.getLogger(__name__)

# Errors after which a fresh session may succeed (the token came back, the HSM restarted).
_LOST_SESSION = (
    pkcs11.SessionHandleInvalid,
    pkcs11.SessionClosed,
    pkcs11.DeviceRemoved,
    pkcs11.TokenNotPresent,
    pkcs11.UserNotLoggedIn,
)

# Errors after which the session is alive but no longer sees our (private) objects.
_STALE_OBJECTS = (pkcs11.ObjectHandleInvalid, pkcs11.KeyHandleInvalid)

# Errors that say the token, its module or the device is unavailable for now (an HSM
# restarting, a network HSM out of reach): TokenError code ``token``, which callers
# retry later with back-off, like a database or broker outage. Other PKCS#11 errors
# (a mechanism the key refuses, …) are code ``key``: trying again changes nothing.
_UNAVAILABLE = (
    *_LOST_SESSION,
    pkcs11.DeviceError,
    pkcs11.DeviceMemory,
    pkcs11.HostMemory,
    pkcs11.GeneralError,
    pkcs11.FunctionFailed,
    pkcs11.FunctionCancelled,
    pkcs11.SessionCount,
    pkcs11.TokenNotRecognised,
    pkcs11.SlotIDInvalid,
)

_RSA_MECHANISMS: dict[type[hashes.HashAlgorithm], Mechanism] = {
    hashes.SHA256: Mechanism.SHA256_RSA_PKCS,
    hashes.SHA384: Mechanism.SHA384_RSA_PKCS,
    hashes.SHA512: Mechanism.SHA512_RSA_PKCS,
}

_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "secp256r1": ec.SECP256R1,
    "secp384r1": ec.SECP384R1,
}


# The process that last initialised each PKCS#11 module (to re-initialise after fork).
_LIBRARY_PIDS: dict[str, int] = {}
# Modules that could not reach their token: initialised again before the next use, as
# an HSM client library that lost its device recovers only through C_Finalize and
# C_Initialize (SoftHSM2 reads its tokens at C_Initialize; so do many vendors' clients).
_LIBRARY_STALE: set[str] = set()

# Per process, the PIN each token (module, label) refused, as a SHA-256 digest: the PIN
# itself is not kept here. A forked child inherits it, so it does not try either.
_REFUSED_PINS: dict[tuple[str, str], bytes] = {}

# Errors after which the token refused this PIN: do not log in with it again.
_PIN_REFUSED = (pkcs11.PinIncorrect, pkcs11.PinInvalid, pkcs11.PinLenRange)
_PIN_UNUSABLE = (pkcs11.PinLocked, pkcs11.PinExpired)


def forget_refused_pins() -> None:
    """Forget the PINs refused in this process (tests; the next login tries again)."""
    _REFUSED_PINS.clear()


class TokenError(Exception):
    """The token cannot be used; the message says why, without secrets."""

    def __init__(self, message: str, *, code: str = "token", login_refused: bool = False) -> None:
        super().__init__(message)
        #: ``module``, ``token``, ``pin``, ``key``, ``exists`` or ``session``
        self.code = code
        #: The token refused a login made just now (not a PIN this process declined to
        #: try again): the one moment to raise an operator alert.
        self.login_refused = login_refused


def key_id_for(public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    """Return the CKA_ID for a key: its SubjectKeyIdentifier (RFC 5280 §4.2.1.2 (1)).

    The usual convention (OpenSC, p11-kit): the certificate names its key, so loading a
    CA needs the certificate file only, and a renewed CA with a new key finds its own.
    """
    return x509.SubjectKeyIdentifier.from_public_key(public_key).digest


@dataclass(eq=False)
class Token:
    """One logged-in PKCS#11 session per process on the token ``token_label``."""

    module: str
    token_label: str
    pin: str = field(repr=False)
    #: Called with the error when the token refuses a login (the operator must act).
    on_pin_refused: Callable[[TokenError], None] | None = field(default=None, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)
    _session: Any = field(default=None, init=False, repr=False)
    _pid: int | None = field(default=None, init=False, repr=False)
    #: Bumped at each (re)open: object handles found in an older session are stale.
    generation: int = field(default=0, init=False)

    # --- session ----------------------------------------------------------------------

    def _lib(self) -> Any:
        try:
            lib = pkcs11.lib(self.module)
            pid = os.getpid()
            initialised_in = _LIBRARY_PIDS.setdefault(self.module, pid)
            if initialised_in != pid or self.module in _LIBRARY_STALE:
                # Inherited across fork, or the token was out of reach: C_Finalize the
                # old state, C_Initialize anew (sessions of this process reopen on use).
                lib.reinitialize()
                _LIBRARY_PIDS[self.module] = pid
                _LIBRARY_STALE.discard(self.module)
            return lib
        except (RuntimeError, OSError, pkcs11.PKCS11Error) as exc:
            raise TokenError(
                f"The PKCS#11 module {self.module!r} cannot be loaded ({type(exc).__name__}).",
                code="module",
            ) from exc

    def _open(self) -> Any:
        lib = self._lib()
        try:
            token = lib.get_token(token_label=self.token_label)
        except pkcs11.NoSuchToken as exc:
            raise TokenError(
                f"No PKCS#11 token labelled {self.token_label!r} in {self.module}.", code="token"
            ) from exc
        except pkcs11.PKCS11Error as exc:
            _LIBRARY_STALE.add(self.module)
            raise TokenError(
                f"The PKCS#11 token {self.token_label!r} cannot be reached ({type(exc).__name__}).",
                code="token",
            ) from exc
        refused_key = (self.module, self.token_label)
        digest = hashlib.sha256(self.pin.encode()).digest()
        if _REFUSED_PINS.get(refused_key) == digest:
            raise TokenError(
                f"The PKCS#11 token {self.token_label!r} refused this PIN earlier; this "
                "process does not try it again until the PIN changes (an HSM locks its PIN "
                "after a few failed logins).",
                code="pin",
            )
        try:
            # Read/write: the ceremonies create objects; signing works in either kind.
            session = token.open(rw=True, user_pin=self.pin)
        except pkcs11.UserAlreadyLoggedIn:
            # Login is per application, not per session (PKCS#11 v2.40 §5.6): another
            # session of this process (an older Token object) is logged in already.
            session = token.open(rw=True)
        except (*_PIN_REFUSED, *_PIN_UNUSABLE) as exc:
            _REFUSED_PINS[refused_key] = digest
            state = "wrong" if isinstance(exc, _PIN_REFUSED) else "locked or expired"
            error = TokenError(
                f"The PIN of the PKCS#11 token {self.token_label!r} is {state} "
                f"({type(exc).__name__}); this process does not try it again until the PIN "
                "changes.",
                code="pin",
                login_refused=True,
            )
            if self.on_pin_refused is not None:
                self.on_pin_refused(error)
            raise error from exc
        except pkcs11.PKCS11Error as exc:
            raise TokenError(
                f"Cannot open a session on the PKCS#11 token {self.token_label!r} "
                f"({type(exc).__name__}).",
                code="session",
            ) from exc
        _REFUSED_PINS.pop(refused_key, None)
        return session

    def session(self) -> Any:
        """Return this process's session, opening it on first use."""
        with self._lock:
            pid = os.getpid()
            if self._pid is not None and self._pid != pid:
                # The parent's session: not ours to use or to close (PKCS#11 §6.7.6).
                self._session = None
                self.generation += 1
            if self._session is None:
                self._session = self._open()
                self._pid = pid
                self.generation += 1
                logger.info(
                    "PKCS#11 session opened on token %r in process %d", self.token_label, pid
                )
            return self._session

    def close(self) -> None:
        """Close this process's session (logs out when it is the last one)."""
        with self._lock:
            session, self._session = self._session, None
            if session is not None and self._pid == os.getpid():
                # A token already gone has nothing left to close.
                with contextlib.suppress(pkcs11.PKCS11Error):
                    session.close()
            self._pid = None
            self.generation += 1

    def run(self, operation: Callable[[Any], T]) -> T:
        """Run ``operation(session)``; reopen the session once if the token lost it.

        Raises :class:`TokenError` only: ``token`` when the token is unavailable (a
        temporary outage), ``key`` when it refused the operation.
        """
        try:
            return self._run(operation)
        except TokenError:
            raise
        except _UNAVAILABLE as exc:
            raise TokenError(
                f"The PKCS#11 token {self.token_label!r} is unavailable ({type(exc).__name__}).",
                code="token",
            ) from exc
        except pkcs11.PKCS11Error as exc:
            raise TokenError(
                f"The PKCS#11 token {self.token_label!r} refused the operation "
                f"({type(exc).__name__}).",
                code="key",
            ) from exc

    def _run(self, operation: Callable[[Any], T]) -> T:
        with self._lock:
            try:
                return operation(self.session())
            except _LOST_SESSION:
                # The handle is dead: forget it without C_CloseSession, open anew.
                self._session = None
                self.generation += 1
                return operation(self.session())
            except _STALE_OBJECTS:
                # The session lives but its object handles or its login went away (the
                # token logged the application out): close it, log in again, look up.
                self.close()
                return operation(self.session())

    # --- keys -------------------------------------------------------------------------

    def _find(
        self, session: Any, object_class: ObjectClass, key_id: bytes, label: str | None = None
    ) -> Any:
        try:
            if label is None:
                return session.get_key(object_class=object_class, id=key_id)
            return session.get_key(object_class=object_class, label=label, id=key_id)
        except pkcs11.NoSuchKey as exc:
            # A token that lost its storage (SoftHSM2's folder gone, an HSM partition
            # offline) may list no object at all: "no such key" is believed only from a
            # token that still answers; otherwise it is an outage, to be waited out.
            self._check_reachable()
            raise TokenError(
                f"No key with id {key_id.hex()} in the token {self.token_label!r}.", code="key"
            ) from exc
        except pkcs11.MultipleObjectsReturned as exc:
            raise TokenError(
                f"Several keys with id {key_id.hex()} in the token {self.token_label!r}.",
                code="key",
            ) from exc

    def _check_reachable(self) -> None:
        """Raise TokenError ``token`` unless the module still finds the token."""
        try:
            pkcs11.lib(self.module).get_token(token_label=self.token_label)
        except pkcs11.PKCS11Error as exc:
            # The session is the lost token's: forget it (no C_CloseSession on a dead
            # handle); the next use initialises the module again and logs in anew.
            _LIBRARY_STALE.add(self.module)
            with self._lock:
                self._session = None
                self.generation += 1
            raise TokenError(
                f"The PKCS#11 token {self.token_label!r} cannot be reached ({type(exc).__name__}).",
                code="token",
            ) from exc

    def labels(self) -> set[str]:
        """Labels of the private keys in the token."""

        def list_labels(session: Any) -> set[str]:
            return {
                str(obj.label)
                for obj in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})
            }

        return self.run(list_labels)

    def has_private_key(self, key_id: bytes) -> bool:
        """Whether the token holds a private key with CKA_ID ``key_id``."""

        def find(session: Any) -> bool:
            objects = session.get_objects(
                {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: key_id}
            )
            return any(True for _ in objects)

        return self.run(find)

    def private_key(self, key_id: bytes, label: str | None = None) -> TokenPrivateKey:
        """Return the token's key with CKA_ID ``key_id`` (and ``label``) as a pyca key."""

        def find(session: Any) -> tuple[P11KeyType, str, Any]:
            private = self._find(session, ObjectClass.PRIVATE_KEY, key_id, label)
            _refuse_unprotected(private, self.token_label)
            public = self._find(session, ObjectClass.PUBLIC_KEY, key_id, label)
            return private.key_type, str(private.label), _public_key_from_token(public)

        key_type, label, public_key = self.run(find)
        if key_type == P11KeyType.RSA and isinstance(public_key, rsa.RSAPublicKey):
            return TokenRsaPrivateKey(self, label, key_id, public_key)
        if key_type == P11KeyType.EC and isinstance(public_key, ec.EllipticCurvePublicKey):
            return TokenEcPrivateKey(self, label, key_id, public_key)
        raise TokenError(f"The key {label!r} is neither RSA nor EC.", code="key")

    def generate_key(self, key_type: KeyType, label: str) -> TokenPrivateKey:
        """Generate a key pair inside the token: sensitive, never extractable.

        Refuses when a private key with ``label`` exists: a CA key is never replaced
        silently. CKA_ID is set to the public key's SubjectKeyIdentifier.
        """
        if label in self.labels():
            raise TokenError(
                f"The token {self.token_label!r} already holds a key labelled {label!r}; "
                "refusing to overwrite it.",
                code="exists",
            )
        temporary_id = secrets.token_bytes(20)
        private_template = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True,
            Attribute.DECRYPT: False,
            Attribute.UNWRAP: False,
            Attribute.DERIVE: False,
        }
        public_template = {Attribute.TOKEN: True, Attribute.VERIFY: True}

        def generate(session: Any) -> bytes:
            if key_type in (KeyType.RSA_2048, KeyType.RSA_3072):
                public, private = session.generate_keypair(
                    P11KeyType.RSA,
                    2048 if key_type is KeyType.RSA_2048 else 3072,
                    id=temporary_id,
                    label=label,
                    store=True,
                    public_template={**public_template, Attribute.PUBLIC_EXPONENT: b"\x01\x00\x01"},
                    private_template=private_template,
                )
            else:
                parameters = session.create_domain_parameters(
                    P11KeyType.EC,
                    {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
                    local=True,
                )
                public, private = parameters.generate_keypair(
                    id=temporary_id,
                    label=label,
                    store=True,
                    public_template=public_template,
                    private_template=private_template,
                )
            key_id = key_id_for(_public_key_from_token(public))
            public[Attribute.ID] = key_id
            private[Attribute.ID] = key_id
            return key_id

        return self.private_key(self.run(generate), label)


def _refuse_unprotected(private: Any, token_label: str) -> None:
    """Refuse a CA or OCSP key that could leave the token (PKCS#11 v2.40 §4.9).

    Keys MyCert generates are CKA_SENSITIVE and not CKA_EXTRACTABLE; a key imported with
    the HSM's own tools may be neither, and its value could then be read out or wrapped
    off the token by whoever holds the PIN: a copy of the CA key outside the HSM.
    """
    label = str(private.label)
    try:
        sensitive = bool(private[Attribute.SENSITIVE])
        extractable = bool(private[Attribute.EXTRACTABLE])
    except pkcs11.AttributeTypeInvalid as exc:
        raise TokenError(
            f"The key {label!r} in the token {token_label!r} does not say whether it can "
            "leave the token (CKA_SENSITIVE, CKA_EXTRACTABLE): refused.",
            code="key",
        ) from exc
    reasons = []
    if extractable:
        reasons.append("it is extractable (CKA_EXTRACTABLE true)")
    if not sensitive:
        reasons.append("it is not sensitive (CKA_SENSITIVE false)")
    if reasons:
        raise TokenError(
            f"The key {label!r} in the token {token_label!r} is refused: "
            f"{' and '.join(reasons)}, so its value can leave the token. Generate CA keys "
            "inside the token (init_ca), or import them as sensitive and non-extractable.",
            code="key",
        )


def _public_key_from_token(public: Any) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    if public.key_type == P11KeyType.RSA:
        return rsa.RSAPublicNumbers(
            e=int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"),
            n=int.from_bytes(public[Attribute.MODULUS], "big"),
        ).public_key()
    if public.key_type == P11KeyType.EC:
        curve_name = asn1_keys.ECDomainParameters.load(public[Attribute.EC_PARAMS]).chosen.native
        curve_class = _CURVES.get(str(curve_name))
        if curve_class is None:
            raise TokenError(f"Unsupported curve {curve_name!r} in the token.", code="key")
        curve = curve_class()
        point = bytes(public[Attribute.EC_POINT])
        # PKCS#11 v2.40 §2.3.3: CKA_EC_POINT is a DER OCTET STRING; a few tokens give
        # the raw point. An uncompressed point is 0x04 || X || Y.
        if len(point) != 2 * ((curve.key_size + 7) // 8) + 1:
            point = asn1_core.OctetString.load(point).native
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    raise TokenError(f"Unsupported key type {public.key_type!r} in the token.", code="key")


class _TokenKey:
    """What the RSA and EC token keys share: the token, the label, the id, the handle."""

    _algorithm: P11KeyType

    def __init__(self, token: Token, label: str, key_id: bytes, public: Any) -> None:
        self._token = token
        self._label = label
        self._key_id = key_id
        self._public = public
        self._handle: tuple[int, Any] | None = None

    @property
    def token(self) -> Token:
        return self._token

    @property
    def label(self) -> str:
        return self._label

    @property
    def key_id(self) -> bytes:
        return self._key_id

    def _sign_in_token(self, data: bytes, mechanism: Mechanism) -> bytes:
        def sign(session: Any) -> bytes:
            # The handle is valid for the session that found it (and its token generation).
            if self._handle is None or self._handle[0] != self._token.generation:
                found = self._token._find(
                    session, ObjectClass.PRIVATE_KEY, self._key_id, self._label
                )
                self._handle = (self._token.generation, found)
            return bytes(self._handle[1].sign(data, mechanism=mechanism))

        return self._token.run(sign)

    def __copy__(self) -> Self:
        # A new key object on the same token key: the session is the process's, shared.
        return type(self)(self._token, self._label, self._key_id, self._public)

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        # Deep-copying a token connection has no meaning (a session is a process
        # resource); the key material is in the token. Same as a shallow copy.
        return copy.copy(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._label!r} id={self._key_id.hex()} token={self._token.token_label!r}>"

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        raise TypeError("The key is inside the PKCS#11 token and cannot be exported.")

    def private_numbers(self) -> NoReturn:
        raise TypeError("The key is inside the PKCS#11 token and cannot be exported.")


class TokenRsaPrivateKey(_TokenKey, rsa.RSAPrivateKey):
    """An RSA key in the token; signs PKCS#1 v1.5 with CKM_SHA256_RSA_PKCS and siblings."""

    def __init__(self, token: Token, label: str, key_id: bytes, public: rsa.RSAPublicKey) -> None:
        super().__init__(token, label, key_id, public)

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public  # type: ignore[no-any-return]

    @property
    def key_size(self) -> int:
        return int(self._public.key_size)

    def sign(
        self,
        data: bytes,
        padding: AsymmetricPadding,
        algorithm: asym_utils.Prehashed | hashes.HashAlgorithm | asym_utils.NoDigestInfo,
    ) -> bytes:
        if not isinstance(padding, PKCS1v15):
            raise UnsupportedAlgorithm(
                f"Token RSA keys sign with PKCS#1 v1.5 only, not {padding.name}."
            )
        mechanism = (
            _RSA_MECHANISMS.get(type(algorithm))
            if isinstance(algorithm, hashes.HashAlgorithm)
            else None
        )
        if mechanism is None:
            raise UnsupportedAlgorithm(
                f"Token RSA keys sign SHA-256/384/512 only, not {type(algorithm).__name__}."
            )
        return self._sign_in_token(bytes(data), mechanism)

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        raise TypeError("CA keys sign only; the token key has CKA_DECRYPT false.")

    def private_numbers(self) -> NoReturn:
        raise TypeError("The key is inside the PKCS#11 token and cannot be exported.")


class TokenEcPrivateKey(_TokenKey, ec.EllipticCurvePrivateKey):
    """An EC key in the token; ECDSA hashed here, signed with raw CKM_ECDSA.

    SoftHSM2 (and many HSMs) lack CKM_ECDSA_SHA256; the digest is computed in Python
    and the token signs it (PKCS#11 v2.40 §2.3.6), which is the same signature.
    """

    def __init__(
        self, token: Token, label: str, key_id: bytes, public: ec.EllipticCurvePublicKey
    ) -> None:
        super().__init__(token, label, key_id, public)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public  # type: ignore[no-any-return]

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve  # type: ignore[no-any-return]

    @property
    def key_size(self) -> int:
        return int(self._public.key_size)

    def sign(
        self,
        data: bytes | bytearray | memoryview,
        signature_algorithm: ec.EllipticCurveSignatureAlgorithm,
    ) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise UnsupportedAlgorithm("Token EC keys sign with ECDSA only.")
        if getattr(signature_algorithm, "deterministic_signing", False):
            # RFC 6979 needs the private scalar to derive k; the token keeps it.
            raise UnsupportedAlgorithm(
                "Deterministic ECDSA (RFC 6979) is not available with a key in the token."
            )
        algorithm = signature_algorithm.algorithm
        if isinstance(algorithm, asym_utils.Prehashed):
            digest = bytes(data)
        else:
            hasher = hashes.Hash(algorithm)
            hasher.update(bytes(data))
            digest = hasher.finalize()
        raw = self._sign_in_token(digest, Mechanism.ECDSA)
        # CKM_ECDSA returns r || s, each as long as the group order (§2.3.1); X.509
        # wants the DER Ecdsa-Sig-Value (RFC 5480 §2.2 / RFC 3279 §2.2.3).
        half = len(raw) // 2
        return asym_utils.encode_dss_signature(
            int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        )

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise TypeError("CA keys sign only; the token key has CKA_DERIVE false.")

    def private_numbers(self) -> NoReturn:
        raise TypeError("The key is inside the PKCS#11 token and cannot be exported.")


TokenPrivateKey = TokenRsaPrivateKey | TokenEcPrivateKey
