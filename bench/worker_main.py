"""Run ``adoption-rate worker`` with a working /metrics under aiohttp 3.14.

NOTE: the worker's /metrics handler passes Prometheus' content type
``text/plain; version=0.0.4; charset=utf-8`` to Faust's ``Web.bytes``, which
hands it to ``aiohttp.web.Response``. aiohttp 3.14 raises "charset must not be
in content_type argument", so every scrape fails with HTTP 500. Until the
handler is fixed, this launcher moves the charset into its own argument in
Faust's aiohttp driver and then runs the worker's command line unchanged.
Once a scrape of the plain ``python -m stream worker`` returns 200, the bench
can run that instead.
"""

import sys
from typing import Any

from faust.web.drivers import aiohttp as faust_aiohttp

from stream.cli.main import main

_original_bytes = faust_aiohttp.Web.bytes


def _bytes_with_separate_charset(self: Any, value: bytes, *, content_type: str | None = None,
                                 **kwargs: Any) -> Any:
    if content_type and "charset=" in content_type:
        parts = [part.strip() for part in content_type.split(";")]
        content_type = "; ".join(part for part in parts if not part.startswith("charset="))
    return _original_bytes(self, value, content_type=content_type, **kwargs)


faust_aiohttp.Web.bytes = _bytes_with_separate_charset

if __name__ == "__main__":
    sys.exit(main())
