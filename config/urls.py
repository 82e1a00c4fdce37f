"""MyCert URLs. CRL and OCSP paths are the ones written into certificates."""

from django.contrib import admin
from django.urls import include, path

from mycert import views, views_auth

urlpatterns = [
    path("", views.home, name="home"),
    path("request/", views.request_certificate, name="request-certificate"),
    path("request/sent/<int:request_id>/", views.request_sent, name="request-sent"),
    path("certificates/", views.my_certificates, name="my-certificates"),
    path("certificates/status/", views.my_certificates_status, name="my-certificates-status"),
    path("oidc/login/", views_auth.login, name="oidc-login"),
    path("oidc/callback/", views_auth.callback, name="oidc-callback"),
    path("oidc/logout/", views_auth.logout, name="oidc-logout"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("admin/", admin.site.urls),
]
