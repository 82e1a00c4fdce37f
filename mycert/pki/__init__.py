"""The pure PKI domain of MyCert: keys, CAs, certificates, PKCS#12, CRL, OCSP.

cryptography only; no Django, no settings, no clock (time is passed in as ``now``).
The contract is docs/pki-api.md.
"""

from mycert.pki.ca import CertificateAuthority as CertificateAuthority
from mycert.pki.ca import create_issuing_ca as create_issuing_ca
from mycert.pki.ca import create_ocsp_responder as create_ocsp_responder
from mycert.pki.ca import create_root_ca as create_root_ca
from mycert.pki.ca import random_serial_number as random_serial_number
from mycert.pki.ca import reissue_issuing_ca as reissue_issuing_ca
from mycert.pki.crl import RevokedEntry as RevokedEntry
from mycert.pki.crl import build_crl as build_crl
from mycert.pki.crl import build_next_crl as build_next_crl
from mycert.pki.keys import KeyType as KeyType
from mycert.pki.keys import PrivateKey as PrivateKey
from mycert.pki.keys import encrypt_private_key_pem as encrypt_private_key_pem
from mycert.pki.keys import generate_private_key as generate_private_key
from mycert.pki.keys import key_matches_certificate as key_matches_certificate
from mycert.pki.keys import load_private_key_pem as load_private_key_pem
from mycert.pki.names import DistinguishedName as DistinguishedName
from mycert.pki.ocsp import CertificateStatus as CertificateStatus
from mycert.pki.ocsp import OcspQuery as OcspQuery
from mycert.pki.ocsp import StatusAnswer as StatusAnswer
from mycert.pki.ocsp import build_ocsp_response as build_ocsp_response
from mycert.pki.ocsp import error_response as error_response
from mycert.pki.ocsp import issued_by as issued_by
from mycert.pki.ocsp import parse_ocsp_request as parse_ocsp_request
from mycert.pki.pkcs12 import KEYSTORE_PASSWORD_ENTROPY_BITS as KEYSTORE_PASSWORD_ENTROPY_BITS
from mycert.pki.pkcs12 import KeystoreEncryption as KeystoreEncryption
from mycert.pki.pkcs12 import build_keystore as build_keystore
from mycert.pki.pkcs12 import generate_keystore_password as generate_keystore_password
from mycert.pki.profile import ProfessionalIdentity as ProfessionalIdentity
from mycert.pki.profile import ProfessionalProfile as ProfessionalProfile
from mycert.pki.profile import PublicKey as PublicKey
from mycert.pki.profile import issue_professional_certificate as issue_professional_certificate
from mycert.pki.revocation_code import REVOCATION_CODE_ENTROPY_BITS as REVOCATION_CODE_ENTROPY_BITS
from mycert.pki.revocation_code import canonical_revocation_code as canonical_revocation_code
from mycert.pki.revocation_code import generate_revocation_code as generate_revocation_code

__all__ = [
    "KEYSTORE_PASSWORD_ENTROPY_BITS",
    "REVOCATION_CODE_ENTROPY_BITS",
    "CertificateAuthority",
    "CertificateStatus",
    "DistinguishedName",
    "KeyType",
    "KeystoreEncryption",
    "OcspQuery",
    "PrivateKey",
    "ProfessionalIdentity",
    "ProfessionalProfile",
    "PublicKey",
    "RevokedEntry",
    "StatusAnswer",
    "build_crl",
    "build_keystore",
    "build_ocsp_response",
    "canonical_revocation_code",
    "create_issuing_ca",
    "create_ocsp_responder",
    "create_root_ca",
    "encrypt_private_key_pem",
    "error_response",
    "generate_keystore_password",
    "generate_private_key",
    "generate_revocation_code",
    "issue_professional_certificate",
    "issued_by",
    "key_matches_certificate",
    "load_private_key_pem",
    "parse_ocsp_request",
    "random_serial_number",
    "reissue_issuing_ca",
]
