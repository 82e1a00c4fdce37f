"""MyCert URLs. CRL and OCSP paths are the ones written into certificates."""

from django.contrib import admin
from django.urls import include, path, re_path

from mycert.views import auth, check, ops, pki, portal, revocation_code

urlpatterns = [
    path("", portal.home, name="home"),
    path("favicon.ico", portal.favicon, name="favicon"),
    path("request/", portal.request_certificate, name="request-certificate"),
    path("request/sent/<int:request_id>/", portal.request_sent, name="request-sent"),
    path("certificates/", portal.my_certificates, name="my-certificates"),
    path("certificates/status/", portal.my_certificates_status, name="my-certificates-status"),
    path(
        "certificates/<int:certificate_id>/revoke/",
        portal.revoke_certificate,
        name="revoke-certificate",
    ),
    # « Révoquer sans connexion »: the revocation code of the password e-mail (2/2).
    path("revoke/", revocation_code.revoke_without_login, name="revoke-without-login"),
    path(
        "revoke/confirm/",
        revocation_code.revoke_without_login_confirm,
        name="revoke-without-login-confirm",
    ),
    path(
        "revoke/done/",
        revocation_code.revoke_without_login_done,
        name="revoke-without-login-done",
    ),
    path("oidc/login/", auth.login, name="oidc-login"),
    path("oidc/callback/", auth.callback, name="oidc-callback"),
    path("oidc/logout/", auth.logout, name="oidc-logout"),
    path("login/refused/<slug:reason>/", auth.refused, name="login-refused"),
    # The addresses written into certificates (mycert.custody.addresses): CRL DP and AIA.
    path("pki/crl/issuing.crl", pki.crl, name="pki-crl"),
    path("pki/crl/root.crl", pki.root_crl, name="pki-root-crl"),
    re_path(
        r"^pki/ca/(?P<which>issuing|root)\.cer$",
        pki.ca_certificate,
        name="pki-ca-certificate",
    ),
    path("pki/ocsp/", pki.ocsp_post, name="pki-ocsp"),
    path("pki/ocsp/<path:encoded>", pki.ocsp_get, name="pki-ocsp-get"),
    path("i18n/", include("django.conf.urls.i18n")),
    # Operations (docs/deploy.md): probes and Prometheus; never redirected to HTTPS.
    path("healthz", ops.healthz, name="healthz"),
    path("metrics", ops.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    # The mutual-TLS self-check: its nginx (deploy/nginx/mycert-check.conf) maps
    # {MYCERT_CHECK_BASE_URL}/ and /status.json here.
    path("check/", check.check_page, name="check"),
    path("check/status.json", check.check_status, name="check-status"),
]
