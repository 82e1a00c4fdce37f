"""Professionals as the portal knows them: created and refreshed at each OpenID login.

A professional is found by the provider's ``sub`` only, never by e-mail: an e-mail
address can change hands, a subject is never reassigned (OIDC Core §5.7).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction

from mycert.models import AuditEvent, Professional
from mycert.oidc import LoginRefused, RefusalCode, sub_hash, validate_id_token_claims
from mycert.pki import ProfessionalIdentity
from mycert.pki.names import UB_COMMON_NAME
from mycert.services.audit import actor_label, audit_record

__all__ = [
    "LoginRefused",
    "RefusalCode",
    "oidc_username",
    "professional_login",
    "professional_login_refused",
    "professional_logout",
]

logger = logging.getLogger(__name__)

_USERNAME_PREFIX = "oidc:"
_NAME_MAX_LENGTH = 150  # Professional.given_name/family_name and User.first_name/last_name


@dataclass(frozen=True)
class _Profile:
    given_name: str
    family_name: str
    email: str


def oidc_username(sub: str) -> str:
    """Name the Django user of a subject: ``oidc:<sub>``, hashed if it would not fit."""
    username = f"{_USERNAME_PREFIX}{sub}"
    if len(username) <= 150:  # User.username.max_length
        return username
    return f"{_USERNAME_PREFIX}sha256:{hashlib.sha256(sub.encode()).hexdigest()}"


def _profile_from_claims(claims: Mapping[str, Any], *, sub: str) -> _Profile:
    email = claims.get("email")
    if not isinstance(email, str) or not email.strip():
        raise LoginRefused(RefusalCode.MISSING_EMAIL, "email", sub=sub)
    email = email.strip()
    if not email.isascii():
        # An internationalised address (RFC 6531) is a real address, not a missing one;
        # the certificate cannot carry it (RFC 5280 §4.2.1.6), which is said plainly.
        raise LoginRefused(RefusalCode.EMAIL_NOT_SUPPORTED, "not ascii", sub=sub)
    try:
        validate_email(email)
    except ValidationError as exc:
        raise LoginRefused(RefusalCode.MISSING_EMAIL, "invalid", sub=sub) from exc
    # The keystore is mailed to this address: only an address the provider vouches for
    # will do (OIDC Core §5.1 "email_verified" true; absent is not a yes).
    if claims.get("email_verified") is not True:
        raise LoginRefused(RefusalCode.MISSING_EMAIL, "unverified", sub=sub)
    names: list[str] = []
    for claim in ("given_name", "family_name"):
        value = claims.get(claim)
        if not isinstance(value, str) or not value.strip() or len(value.strip()) > _NAME_MAX_LENGTH:
            # Both names go into the certificate's subject (docs/architecture.md « The certificate
            # profile »).
            raise LoginRefused(RefusalCode.INVALID_PROFILE, claim, sub=sub)
        names.append(" ".join(value.split()))
    return _Profile(given_name=names[0], family_name=names[1], email=email)


def _check_certificate_profile(profile: _Profile, *, professional_id: str, sub: str) -> None:
    """Refuse now what the certificate profile would refuse at issuance.

    Otherwise the request would fail after « Envoyer »; at login the professional learns
    what to change at the portal. The checks are the profile's own (``mycert.pki``).
    """
    common_name = f"{profile.given_name} {profile.family_name}"
    if len(common_name) > UB_COMMON_NAME:
        # RFC 5280 Appendix A.1: ub-common-name is 64 characters.
        raise LoginRefused(RefusalCode.NAME_TOO_LONG, f"{len(common_name)} characters", sub=sub)
    try:
        ProfessionalIdentity(
            given_name=profile.given_name,
            family_name=profile.family_name,
            professional_id=professional_id,
            email=profile.email,
        )
    except ValueError as exc:
        # An internationalised address (RFC 6531): the rfc822Name SAN is ASCII only
        # (RFC 5280 §4.2.1.6). The detail names the check, not the address.
        code = (
            RefusalCode.EMAIL_NOT_SUPPORTED if "email" in str(exc) else RefusalCode.INVALID_PROFILE
        )
        raise LoginRefused(code, "certificate profile", sub=sub) from exc


def _language(language: str) -> str:
    codes = {code for code, _name in settings.LANGUAGES}
    return language if language in codes else ""


def _claimed_language(claims: Mapping[str, Any]) -> str:
    """The language of the portal's profile (OIDC Core §5.1 ``locale``, BCP 47: ``de-LU``)."""
    locale = claims.get("locale")
    if not isinstance(locale, str):
        return ""
    return _language(locale.replace("_", "-").split("-")[0].lower())


@transaction.atomic
def professional_login(*, claims: Mapping[str, Any], language: str = "") -> Professional:
    """Create or refresh the professional (and Django user) that ``claims`` describe.

    ``claims`` are the verified ID token's claims, completed with profile claims from
    userinfo. Raises ``LoginRefused`` and changes nothing when they do not describe a
    professional logged in with an accepted ``acr``.
    """
    identity = validate_id_token_claims(
        claims,
        accepted_acr=settings.MYCERT_OIDC_ACCEPTED_ACR,
        professional_id_claim=settings.MYCERT_OIDC_PROFESSIONAL_ID_CLAIM,
    )
    profile = _profile_from_claims(claims, sub=identity.sub)
    _check_certificate_profile(profile, professional_id=identity.professional_id, sub=identity.sub)
    # The e-mails speak the language of the professional's portal profile; the page's
    # language (the browser's) only when the portal gives none MyCert speaks.
    language = _claimed_language(claims) or _language(language)

    professional = (
        Professional.objects.select_for_update()
        .select_related("user")
        .filter(oidc_subject=identity.sub)
        .first()
    )
    holder = (
        Professional.objects.filter(professional_id=identity.professional_id)
        .exclude(oidc_subject=identity.sub)
        .values_list("pk", flat=True)
        .first()
    )
    if holder is not None:
        # One identifier, one portal account: a second account claiming it is refused
        # rather than merged, the helpdesk sorts it out.
        logger.warning(
            "professional id already bound: professional=%s sub#%s", holder, sub_hash(identity.sub)
        )
        raise LoginRefused(RefusalCode.PROFESSIONAL_ID_TAKEN, sub=identity.sub)

    created = professional is None
    if professional is None:
        professional = _professional_create(
            sub=identity.sub,
            professional_id=identity.professional_id,
            profile=profile,
            language=language,
        )
    else:
        if professional.professional_id != identity.professional_id:
            # Certificates carry the identifier (serialNumber): a silent change would leave
            # them naming someone else.
            raise LoginRefused(RefusalCode.PROFESSIONAL_ID_CHANGED, sub=identity.sub)
        if not professional.user.is_active:
            raise LoginRefused(RefusalCode.ACCOUNT_DISABLED, sub=identity.sub)
        _professional_refresh(professional, profile=profile, language=language)

    audit_record(
        actor=actor_label(professional.user),
        action=AuditEvent.Action.AUTH_LOGIN,
        target=professional,
        details={"acr": identity.acr, "created": created},
    )
    logger.info(
        "login: user=%s professional=%s created=%s", professional.user_id, professional.pk, created
    )
    return professional


def _professional_create(
    *, sub: str, professional_id: str, profile: _Profile, language: str
) -> Professional:
    user_model = get_user_model()
    try:
        with transaction.atomic():
            user, user_created = user_model._default_manager.get_or_create(
                username=oidc_username(sub),
                defaults={
                    "first_name": profile.given_name,
                    "last_name": profile.family_name,
                    "email": profile.email,
                    "is_staff": False,
                    "is_superuser": False,
                },
            )
            if user_created:
                # Only the portal can log this user in (no password login, ever).
                user.set_unusable_password()
                user.save(update_fields=["password"])
            elif not user.is_active:
                raise LoginRefused(RefusalCode.ACCOUNT_DISABLED, sub=sub)
            return Professional.objects.create(
                user=user,
                oidc_subject=sub,
                professional_id=professional_id,
                given_name=profile.given_name,
                family_name=profile.family_name,
                email=profile.email,
                language=language or settings.LANGUAGE_CODE,
            )
    except IntegrityError as exc:
        # Two first logins of the same subject at once, or the identifier taken meanwhile.
        raise LoginRefused(RefusalCode.PROFESSIONAL_ID_TAKEN, "race", sub=sub) from exc


def _professional_refresh(professional: Professional, *, profile: _Profile, language: str) -> None:
    """Keep names and e-mail as the portal has them now."""
    updates = {
        "given_name": profile.given_name,
        "family_name": profile.family_name,
        "email": profile.email,
        "language": language or professional.language,
    }
    changed = [field for field, value in updates.items() if getattr(professional, field) != value]
    for field in changed:
        setattr(professional, field, updates[field])
    if changed:
        professional.save(update_fields=[*changed, "updated_at"])
    user = professional.user
    user_updates = {
        "first_name": profile.given_name,
        "last_name": profile.family_name,
        "email": profile.email,
    }
    user_changed = [field for field, value in user_updates.items() if getattr(user, field) != value]
    for field in user_changed:
        setattr(user, field, user_updates[field])
    if user_changed:
        user.save(update_fields=user_changed)


def professional_login_refused(
    *, code: RefusalCode, sub: str | None = None, detail: str = ""
) -> None:
    """Record a refused login: the reason code and the subject, nothing personal beyond.

    ``detail`` (which check failed, never a token or a claim's personal value) goes to
    the log only.
    """
    audit_record(
        actor="anonymous",
        action=AuditEvent.Action.AUTH_LOGIN_REFUSED,
        details={"reason": str(code), "sub": sub or ""},
    )
    logger.warning("login refused: reason=%s detail=%s sub#%s", code, detail, sub_hash(sub))


def professional_logout(*, user: AbstractBaseUser | AnonymousUser) -> None:
    """Record a logout of ``user``."""
    if not user.is_authenticated:
        return
    professional = Professional.objects.filter(user_id=user.pk).first()
    audit_record(actor=actor_label(user), action=AuditEvent.Action.AUTH_LOGOUT, target=professional)
    logger.info("logout: user=%s", user.pk)
