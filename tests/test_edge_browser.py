"""Consent-link pages in a real browser: headless Debian chromium, driven over the
DevTools protocol, loads the page, presses the button, and saves screenshots under
the test's temp dir. Missing chromium is a failure, never a skip (.ci/run installs it)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import field_mask_pb2

from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import admin_pb2_grpc as apb_grpc
from consent_client.v1 import consent_pb2 as pb
from consent_client.v1 import consent_pb2_grpc as pb_grpc

from .support import ServerProcess

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",  # tests run as root in CI containers
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=900,700",
    "--remote-debugging-port=0",
]

pytestmark = pytest.mark.xdist_group("edge_browser")


class Page:
    """One browser tab over the DevTools protocol (just what the test needs)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._next = 0
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next += 1
        ident = self._next
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            msg = json.loads((await self._ws.receive(timeout=20)).data)
            if msg.get("id") == ident:
                assert "error" not in msg, msg
                result: dict[str, Any] = msg["result"]
                return result
            self._events.put_nowait(msg)

    async def wait_event(self, method: str) -> None:
        while not self._events.empty():
            if self._events.get_nowait().get("method") == method:
                return
        while True:
            msg = json.loads((await self._ws.receive(timeout=20)).data)
            if msg.get("method") == method:
                return

    async def text(self) -> str:
        out = await self.call("Runtime.evaluate", expression="document.body.innerText")
        return str(out["result"]["value"])

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png")
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Page]:
    if CHROMIUM is None:
        pytest.fail(
            "chromium is not installed: the link pages must be checked in a real browser. "
            "Install it with `apt-get install -y chromium` (.ci/run does this)."
        )
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        endpoint = ""
        for _ in range(200):
            line = await asyncio.to_thread(proc.stderr.readline)
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                endpoint = m.group(1)
                break
            if not line and proc.poll() is not None:
                break
        assert endpoint, "chromium did not start its DevTools endpoint"
        http_base = "http://" + endpoint.split("/")[2]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{http_base}/json/list") as resp:
                targets = await resp.json()
            page_ws = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with session.ws_connect(page_ws, max_msg_size=64 * 1024 * 1024) as ws:
                page = Page(ws)
                await page.call("Page.enable")
                yield page
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def edge_server() -> Iterator[ServerProcess]:
    srv = ServerProcess(http=True).start()
    yield srv
    srv.stop()


async def test_opt_out_and_resubscribe_in_a_real_browser(
    browser: Page, edge_server: ServerProcess, tmp_path: Path
) -> None:
    rcpt = pb.Recipient(channel=pb.CHANNEL_EMAIL, address="jane.doe@example.com")
    with grpc.insecure_channel(edge_server.target) as ch:
        stub = pb_grpc.ConsentServiceStub(ch)
        links = stub.CreateConsentLink(
            pb.CreateConsentLinkRequest(tenant_id="meals", recipient=rcpt, topic="marketing")
        )

        def allowed() -> bool:
            return stub.CheckConsent(
                pb.CheckConsentRequest(tenant_id="meals", recipient=rcpt, topic="marketing")
            ).allowed

        await browser.call("Page.navigate", url=links.opt_out_url)
        await browser.wait_event("Page.loadEventFired")
        assert "Stop receiving “marketing” messages from meals" in await browser.text()
        await browser.screenshot(tmp_path / "unsubscribe-confirm.png")
        assert allowed(), "loading the page in a browser must not change anything"

        await browser.call(
            "Runtime.evaluate", expression="document.getElementById('confirm').click()"
        )
        await browser.wait_event("Page.loadEventFired")
        assert "You are unsubscribed" in await browser.text()
        await browser.screenshot(tmp_path / "unsubscribe-done.png")
        assert not allowed()

        await browser.call("Page.navigate", url=links.resubscribe_url)
        await browser.wait_event("Page.loadEventFired")
        await browser.screenshot(tmp_path / "resubscribe-confirm.png")
        await browser.call(
            "Runtime.evaluate", expression="document.getElementById('confirm').click()"
        )
        await browser.wait_event("Page.loadEventFired")
        assert "You are subscribed" in await browser.text()
        assert allowed()

        await browser.call("Page.navigate", url=links.opt_out_url[:-6] + "AAAAAA")
        await browser.wait_event("Page.loadEventFired")
        assert "This link is not valid" in await browser.text()
        await browser.screenshot(tmp_path / "invalid.png")

    for name in ("unsubscribe-confirm", "unsubscribe-done", "resubscribe-confirm", "invalid"):
        png = (tmp_path / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000, name


async def _key(browser: Page, key: str, code: str, key_code: int) -> None:
    for kind in ("keyDown", "keyUp"):
        await browser.call(
            "Input.dispatchKeyEvent",
            type=kind,
            key=key,
            code=code,
            windowsVirtualKeyCode=key_code,
            nativeVirtualKeyCode=key_code,
            **({"text": "\r"} if key == "Enter" and kind == "keyDown" else {}),
        )


async def _evaluate(browser: Page, expression: str) -> Any:
    out = await browser.call("Runtime.evaluate", expression=expression, returnByValue=True)
    return out["result"].get("value")


async def test_keyboard_only_opt_out_through_a_short_link(
    browser: Page, edge_server: ServerProcess, tmp_path: Path
) -> None:
    """A customer who cannot use a mouse: Tab reaches the button, the focus ring shows,
    Enter submits. Spanish browser, short SMS link."""
    rcpt = pb.Recipient(channel=pb.CHANNEL_SMS, address="+16505550199")
    await browser.call("Network.setExtraHTTPHeaders", headers={"Accept-Language": "es-ES,es;q=0.9"})
    with grpc.insecure_channel(edge_server.target) as ch:
        apb_grpc.ConsentAdminServiceStub(ch).UpdateTenantSettings(
            apb.UpdateTenantSettingsRequest(
                tenant_id="meals",
                settings=apb.TenantSettings(
                    business_name="Comidas Ana", page_languages=["en", "es"]
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["business_name", "page_languages"]),
            )
        )
        stub = pb_grpc.ConsentServiceStub(ch)
        links = stub.CreateConsentLink(
            pb.CreateConsentLinkRequest(
                tenant_id="meals", recipient=rcpt, topic="promos", short_links=True
            )
        )
        assert "/l/" in links.short_opt_out_url and len(links.short_opt_out_url) < 60

        def allowed() -> bool:
            return stub.CheckConsent(
                pb.CheckConsentRequest(tenant_id="meals", recipient=rcpt, topic="promos")
            ).allowed

        await browser.call("Network.enable")
        await browser.call("Page.navigate", url=links.short_opt_out_url)
        await browser.wait_event("Page.loadEventFired")
        assert await _evaluate(browser, "document.documentElement.lang") == "es"
        assert "¿Dejar de recibir" in await browser.text()
        assert "Comidas Ana" in await browser.text()
        assert allowed()

        for _ in range(5):  # the button is the page's only focusable element
            await _key(browser, "Tab", "Tab", 9)
            if await _evaluate(browser, "document.activeElement.id") == "confirm":
                break
        assert await _evaluate(browser, "document.activeElement.tagName") == "BUTTON"
        outline = await _evaluate(
            browser,
            "(() => { const s = getComputedStyle(document.activeElement);"
            " return [s.outlineStyle, parseFloat(s.outlineWidth)]; })()",
        )
        assert outline[0] != "none" and outline[1] >= 2, outline
        await browser.screenshot(tmp_path / "keyboard-focus.png")
        assert allowed(), "focusing the button changes nothing"

        await _key(browser, "Enter", "Enter", 13)
        await browser.wait_event("Page.loadEventFired")
        assert "Se ha dado de baja" in await browser.text()
        await browser.screenshot(tmp_path / "keyboard-done.png")
        assert not allowed()

    png = (tmp_path / "keyboard-focus.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000
