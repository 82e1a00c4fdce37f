"""Test data made with factory_boy: professionals, vendors, requests."""

from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth.models import User
from django.utils import timezone

from mycert.business_days import add_business_days
from mycert.models import CertificateRequest, Professional, Vendor
from mycert.services.vendors import vendor_add_confirmed
from tests.support.id_tokens import id_token_for


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"oidc:sub-{n}")
    password = factory.django.Password(None)


class ProfessionalFactory(factory.django.DjangoModelFactory[Professional]):
    class Meta:
        model = Professional

    user = factory.SubFactory(UserFactory)
    oidc_subject = factory.LazyAttribute(lambda o: o.user.username.removeprefix("oidc:"))
    professional_id = factory.Sequence(lambda n: f"LU-MED-{100000 + n}")
    given_name = "Anne"
    family_name = factory.Sequence(lambda n: f"Muller{n}")
    email = factory.Sequence(lambda n: f"pro{n}@cabinet.example.lu")
    language = "fr"


class VendorFactory(factory.django.DjangoModelFactory[Vendor]):
    class Meta:
        model = Vendor

    name = factory.Sequence(lambda n: f"Éditeur {n}")
    email = factory.Sequence(lambda n: f"support{n}@vendor.example.lu")


class ConfirmedVendorFactory(factory.django.DjangoModelFactory[Vendor]):
    """A vendor as ``manage.py add_vendor`` makes it on a worker host: its OpenPGP key
    pinned and its address and fingerprint confirmed there, through the vendor service
    (``vendor_add_confirmed``: audit event, alert, checks). ``key`` is a
    ``tests.support.gpg.GpgKey``; the vendor's address is the key's.
    """

    class Meta:
        model = Vendor

    class Params:
        key: Any = None

    name = "Logiciel Médical SA"
    email = factory.LazyAttribute(lambda o: o.key.uid_address)
    pgp_public_key = factory.LazyAttribute(lambda o: o.key.public)
    legacy_keystore = False

    @classmethod
    def _create(cls, model_class: Any, *args: Any, **kwargs: Any) -> Vendor:  # noqa: ARG003
        # factory_boy's hook, named as it calls it; the service makes the row, not the model.
        return vendor_add_confirmed(
            name=kwargs["name"],
            email=kwargs["email"],
            pgp_key=kwargs["pgp_public_key"],
            legacy_keystore=kwargs["legacy_keystore"],
            actor="command:add_vendor",
            now=timezone.now(),
        )


class CertificateRequestFactory(factory.django.DjangoModelFactory[CertificateRequest]):
    class Meta:
        model = CertificateRequest

    professional = factory.SubFactory(ProfessionalFactory)
    key_type = "ec-p256"
    language = "fr"
    terms_version = "2023-03"
    terms_accepted_at = factory.LazyFunction(timezone.now)
    due_at = factory.LazyFunction(lambda: add_business_days(timezone.now(), 5))
    # The proof of login the worker verifies: signed by the tests' provider
    # (tests/support/id_tokens.py) for this professional, as the portal would.
    id_token = factory.LazyAttribute(lambda o: id_token_for(o.professional))
