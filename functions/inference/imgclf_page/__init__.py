"""The page that lets a person try the classifier in a browser, and the headers it is served with.

`index.html` is one static file: its style and script are inline, it loads nothing from anywhere else (no
CDN, no build step), and it POSTs the photo to the origin and path it was served from. Two servers answer
`GET /` with it, byte for byte and with the same headers:

- the inference Lambda behind its Function URL (functions/inference/app.py). This package lives in the
  function's code folder, so `sam build` ships it and the Lambda imports it as `imgclf_page`;
- local mode's endpoint (localmode/app.py). pyproject.toml maps the same folder as the installed
  package `imgclf_page` (package-data: index.html), so local mode imports it the same way.

The Content-Security-Policy allows only the page itself: its own inline script and style, by their
SHA-256 (computed here from the file, so an edit to the page can never leave a stale hash behind), and
requests to its own origin. Pure standard library: the Lambda pays nothing for it at cold start.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

PAGE_FILE = "index.html"
CONTENT_TYPE = "text/html; charset=utf-8"
HTML: str = resources.files(__name__).joinpath(PAGE_FILE).read_text(encoding="utf-8")

_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


def inline_hashes(html: str, element: str) -> list[str]:
    """CSP hash sources ('sha256-<base64>') of the inline <script> or <style> blocks of `html`: the hash of
    the exact text between the tags, as CSP Level 3 defines it."""
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode("ascii") + "'"
        for name, body in _INLINE.findall(html)
        if name == element
    ]


def content_security_policy(html: str = HTML) -> str:
    """Everything denied by default; the page's own script and style by hash; fetches to its own origin."""
    directives = {
        "default-src": ["'none'"],
        "script-src": inline_hashes(html, "script"),
        "style-src": inline_hashes(html, "style"),
        "img-src": ["data:"],  # only the empty data: favicon, which keeps browsers from asking for one
        "connect-src": ["'self'"],  # the POST of the photo
        "base-uri": ["'none'"],
        "form-action": ["'none'"],
        "frame-ancestors": ["'none'"],
        "require-trusted-types-for": ["'script'"],  # the script writes text only, never HTML
    }
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


# CORS headers are left to the Function URL's own CORS configuration, which takes precedence over any a
# function returns (https://docs.aws.amazon.com/lambda/latest/dg/urls-configuration.html#urls-cors); the
# page needs none, since it only talks to its own origin.
HEADERS: dict[str, str] = {
    "Content-Type": CONTENT_TYPE,
    "Content-Security-Policy": content_security_policy(),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "geolocation=(), microphone=(), payment=(), usb=()",
    # Function URLs are HTTPS only; browsers ignore this header over local mode's plain HTTP.
    "Strict-Transport-Security": "max-age=31536000",
    "Cache-Control": "no-cache",  # revalidate: a new deployment's page shows at once
}
