"""The API docs page (Swagger UI), its assets pinned: one version of swagger-ui-dist from
jsDelivr, each file checked by the browser against a Subresource Integrity hash, so a
compromised or changed CDN file is refused rather than run on a page that holds a token.

The hashes were computed from the npm tarball of that version (`npm pack swagger-ui-dist@5.35.0`,
whose own sha512 the registry publishes): `openssl dgst -sha384 -binary FILE | base64`.
To upgrade, change the version and recompute both hashes the same way.
"""

from __future__ import annotations

import json

from fastapi import FastAPI
from starlette.responses import HTMLResponse

SWAGGER_UI_VERSION = "5.35.0"
_CDN = f"https://cdn.jsdelivr.net/npm/swagger-ui-dist@{SWAGGER_UI_VERSION}"
SWAGGER_UI_JS = (
    f"{_CDN}/swagger-ui-bundle.js",
    "sha384-gjRm0bEPMeTmMh5jT2cHccIwCUZSTd8YC+j0d0sXw0MdGEfScduGpSyF3ZSSLkX9",
)
SWAGGER_UI_CSS = (
    f"{_CDN}/swagger-ui.css",
    "sha384-WlYgdmXYOOBWL5apwjDEZwN+U3HmXSSu5R6V5aGxEcf7z+KuRNwBhoxKVN1i3D5I",
)


def docs_page(title: str, openapi_url: str) -> str:
    """Swagger UI for the document at openapi_url; nothing loads from anywhere unpinned."""
    (js, js_hash), (css, css_hash) = SWAGGER_UI_JS, SWAGGER_UI_CSS
    # JSON in a <script>: `<` escaped, so no value can close the script element.
    config = json.dumps({"url": openapi_url, "dom_id": "#swagger-ui", "deepLinking": True})
    config = config.replace("<", "\\u003c")
    name = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f"""<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>{name} - Swagger UI</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{css}" integrity="{css_hash}" crossorigin="anonymous">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{js}" integrity="{js_hash}" crossorigin="anonymous"></script>
<script>
const ui = SwaggerUIBundle(Object.assign({config}, {{
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  layout: "BaseLayout",
}}));
</script>
</body>
</html>
"""


def install_docs(app: FastAPI, docs_url: str, openapi_url: str) -> None:
    """Serve the docs page at docs_url (the app is built with `docs_url=None`)."""
    page = docs_page(app.title, openapi_url)

    @app.get(docs_url, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})
