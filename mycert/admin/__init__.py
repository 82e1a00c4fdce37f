"""The helpdesk's admin: ``site`` (the admin site, its second factor and index), ``base``
(what every page shares), and one module per model family that registers its pages on
that site: ``certificates`` (and revocation), ``requests``, ``professionals``,
``deliveries``, ``vendors``, ``publication`` (CRLs), ``alerts`` and ``audit``.

Like the views, the admin reads through selectors and querysets and writes through
services. ``MyCertConfig.ready()`` imports the registering modules, not this package:
Django imports this package first to build ``admin.site`` from ``site``, and a
registration made during that import would build a second site (``DefaultAdminSite``
is not set up yet).
"""
