"""MyCert URLs. CRL and OCSP paths are the ones written into certificates."""

from django.contrib import admin
from django.urls import include, path, re_path

from mycert import views, views_auth, views_check, views_ops, views_pki

urlpatterns = [
    path("", views.home, name="home"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("request/", views.request_certificate, name="request-certificate"),
    path("request/sent/<int:request_id>/", views.request_sent, name="request-sent"),
    path("certificates/", views.my_certificates, name="my-certificates"),
    path("certificates/status/", views.my_certificates_status, name="my-certificates-status"),
    path(
        "certificates/<int:certificate_id>/revoke/",
        views.revoke_certificate,
        name="revoke-certificate",
    ),
    path("oidc/login/", views_auth.login, name="oidc-login"),
    path("oidc/callback/", views_auth.callback, name="oidc-callback"),
    path("oidc/logout/", views_auth.logout, name="oidc-logout"),
    path("login/refused/<slug:reason>/", views_auth.refused, name="login-refused"),
    # The addresses written into certificates (mycert.ca_store): CRL DP and AIA.
    path("pki/crl/issuing.crl", views_pki.crl, name="pki-crl"),
    path("pki/crl/root.crl", views_pki.root_crl, name="pki-root-crl"),
    re_path(
        r"^pki/ca/(?P<which>issuing|root)\.cer$",
        views_pki.ca_certificate,
        name="pki-ca-certificate",
    ),
    path("pki/ocsp/", views_pki.ocsp_post, name="pki-ocsp"),
    path("pki/ocsp/<path:encoded>", views_pki.ocsp_get, name="pki-ocsp-get"),
    path("i18n/", include("django.conf.urls.i18n")),
    # Operations (docs/deploy.md): probes and Prometheus; never redirected to HTTPS.
    path("healthz", views_ops.healthz, name="healthz"),
    path("metrics", views_ops.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    # The mutual-TLS self-check: its nginx (deploy/nginx/mycert-check.conf) maps
    # {MYCERT_CHECK_BASE_URL}/ and /status.json here.
    path("check/", views_check.check_page, name="check"),
    path("check/status.json", views_check.check_status, name="check-status"),
]
