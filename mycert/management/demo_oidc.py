"""The demo's OpenID provider: ``oidc-provider-mock``, started by ``manage.py demo``.

Without the deprecation warnings its imports print on every start (``authlib.jose``,
Authlib's httpx client): they concern the mock's own code, not MyCert, and nobody trying
the demo can act on them. Authlib installs an "always" filter for its warning class when
first imported, so ours goes in after it.
"""

from __future__ import annotations

import sys
import warnings

from authlib.deprecate import AuthlibDeprecationWarning

warnings.filterwarnings("ignore", category=AuthlibDeprecationWarning)

from oidc_provider_mock.__main__ import run  # type: ignore[import-untyped]  # noqa: E402 - after the filter

if __name__ == "__main__":
    sys.exit(run())
