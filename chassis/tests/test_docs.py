"""The docs page's pinned assets: their integrity hashes are those of the files in the npm
package of that version (the files jsDelivr serves under /npm/swagger-ui-dist@VERSION/)."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile

import aiohttp
import pytest
from souq_chassis.docs import SWAGGER_UI_CSS, SWAGGER_UI_JS, SWAGGER_UI_VERSION

TARBALL = f"https://registry.npmjs.org/swagger-ui-dist/-/swagger-ui-dist-{SWAGGER_UI_VERSION}.tgz"


async def test_the_pinned_swagger_ui_files_match_their_integrity_hashes() -> None:
    try:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(TARBALL) as response:
            response.raise_for_status()
            tarball = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        pytest.skip(f"the npm registry does not answer from here: {type(exc).__name__}: {exc}")

    with tarfile.open(fileobj=io.BytesIO(tarball)) as package:
        for url, integrity in (SWAGGER_UI_JS, SWAGGER_UI_CSS):
            name = url.rsplit("/", 1)[1]
            member = package.extractfile(f"package/{name}")
            assert member is not None, name
            digest = base64.b64encode(hashlib.sha384(member.read()).digest()).decode()
            assert f"sha384-{digest}" == integrity, name
