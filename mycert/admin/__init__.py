"""The helpdesk's admin: ``site`` (the admin site, its second factor and index) and
``helpdesk`` (the pages of MyCert's models, registered on that site).

Like the views, the admin reads through selectors and querysets and writes through
services. ``MyCertConfig.ready()`` imports ``helpdesk``, not this package: Django imports
this package first to build ``admin.site`` from ``site``, and a registration made during
that import would build a second site (``DefaultAdminSite`` is not set up yet).
"""
