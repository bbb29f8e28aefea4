"""Segment's real SDKs, pointed at the collector by their host only, reach the Yespo
stand-in as the right events for the right contact: PyPI's segment-analytics-python and
npm's @segment/analytics-node (installed into a temporary directory, or the one .ci/run
made: SEGMENT_NODE_MODULES)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from segment.analytics import Client

from standin import StandIn

from .conftest import Running, delivering, running

WRITE_KEY = "shop-server"
NODE_PACKAGE = "@segment/analytics-node@3"
SHOP = "https://shop.example"


@pytest.fixture(scope="session")
def node_modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where @segment/analytics-node is installed: .ci/run's, else a fresh npm install."""
    given = os.environ.get("SEGMENT_NODE_MODULES")
    if given:
        return Path(given)
    npm = shutil.which("npm")
    assert npm is not None, "npm is needed: apt-get install nodejs npm (.ci/run does)"
    prefix = tmp_path_factory.mktemp("npm")
    subprocess.run(
        [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", NODE_PACKAGE],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return prefix / "node_modules"


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[tuple[Running, StandIn]]:
    async with StandIn() as yespo:
        settings = delivering(tmp_path, yespo.url, segment_write_keys=(WRITE_KEY,))
        async with running(settings) as collector:
            yield collector, yespo


def item(product_id: str, name: str, price: float, quantity: int) -> dict[str, Any]:
    return {"product_id": product_id, "name": name, "price": price, "quantity": quantity,
            "url": f"{SHOP}/{product_id}", "image_url": f"{SHOP}/{product_id}.jpg"}  # fmt: skip


# What a shop's site and server send for one shopper: browsing before login, login, the
# cart, the order. The same calls through both SDKs (each SDK's own spelling below).
MUG = item("mug", "Mug", 12.5, 2)
TEE = item("tee", "Tee", 20, 1)
ORDER = {"order_id": "1001", "total": 45, "currency": "EUR", "products": [MUG, TEE]}


def events_by_type(yespo: StandIn) -> dict[str, list[dict[str, Any]]]:
    """The stand-in's events, by type in arrival order, each with its params as a dict."""
    out: dict[str, list[dict[str, Any]]] = {}
    for record in yespo.events:
        body = record.body
        params = body["params"]
        assert all(type(p["value"]) is str for p in params), params  # Yespo wants strings
        values = {p["name"]: p["value"] for p in params}
        out.setdefault(body["eventTypeKey"], []).append({"keyValue": body["keyValue"], **values})
    return out


def check_the_shop_reached_yespo(yespo: StandIn, email: str, user: str) -> None:
    got = events_by_type(yespo)
    assert sorted(got) == ["Signed_Up", "cartUpdated", "orderCreated", "pageViewed",
                           "productViewed"]  # fmt: skip
    everything = [e for events in got.values() for e in events]
    # The contact: every event, the held ones too, is the identified shopper's.
    assert {(e["keyValue"], e["email"], e["externalCustomerId"]) for e in everything} == {
        (email, email, user)
    }
    assert [orjson.loads(p["page"])["location"] for p in got["pageViewed"]] == [
        f"{SHOP}/",
        f"{SHOP}/mugs",
    ]
    [viewed] = got["productViewed"]
    assert orjson.loads(viewed["product"]) == {
        "productId": "mug", "price": 12.5, "name": ["Mug"], "url": [f"{SHOP}/mug"],
        "imageUrl": [f"{SHOP}/mug.jpg"],
    }  # fmt: skip
    # Whole carts, one product at a time: two added before login, one taken off after.
    carts = [
        [(p["productId"], p["quantity"]) for p in orjson.loads(c["products"])]
        for c in got["cartUpdated"]
    ]
    assert carts == [[("mug", 2)], [("mug", 2), ("tee", 1)], [("mug", 1), ("tee", 1)]]
    assert {c["currencyCode"] for c in got["cartUpdated"]} == {"EUR"}
    [order] = got["orderCreated"]
    assert (order["externalOrderId"], order["totalCost"], order["status"], order["currency"]) == (
        "1001", "45", "INITIALIZED", "EUR")  # fmt: skip
    assert [i["externalItemId"] for i in orjson.loads(order["items"])] == ["mug", "tee"]
    [custom] = got["Signed_Up"]
    assert custom["plan"] == "pro" and custom["seats"] == "3"  # a number, sent as a string


async def test_the_python_sdk_with_only_its_host_changed(shop: tuple[Running, StandIn]) -> None:
    collector, yespo = shop
    errors: list[Exception] = []
    analytics = Client(
        WRITE_KEY,
        host=collector.url,  # the one change a shop makes
        gzip=True,
        upload_interval=0.05,
        on_error=lambda error, _: errors.append(error),
    )
    anon, user, email = "anon-py-1", "user-py-1", "jane.py@example.com"

    def browse() -> None:  # before login: only the device's id
        analytics.page(anonymous_id=anon, name="Home", properties={"url": f"{SHOP}/"})
        analytics.track(anonymous_id=anon, event="Product Viewed", properties={
            "product_id": "mug", "name": "Mug", "price": 12.5, "url": f"{SHOP}/mug",
            "image_url": f"{SHOP}/mug.jpg"})  # fmt: skip
        analytics.track(anonymous_id=anon, event="Product Added",
                        properties={**MUG, "currency": "EUR"})  # fmt: skip
        analytics.track(anonymous_id=anon, event="Product Added",
                        properties={**TEE, "currency": "EUR"})  # fmt: skip
        analytics.flush()

    def buy() -> None:  # logged in: the server knows the user
        analytics.identify(user_id=user, anonymous_id=anon, traits={"email": "Jane.Py@Example.com"})
        analytics.page(
            user_id=user, anonymous_id=anon, name="Mugs", properties={"url": f"{SHOP}/mugs"}
        )
        analytics.track(user_id=user, event="Product Removed",
                        properties={"product_id": "mug", "quantity": 1, "currency": "EUR"})  # fmt: skip
        analytics.track(user_id=user, event="Signed Up", properties={"plan": "pro", "seats": 3})
        analytics.track(user_id=user, event="Order Completed", properties=ORDER)
        analytics.flush()

    await asyncio.to_thread(browse)
    await asyncio.sleep(0.2)
    assert yespo.events == []  # held: nobody knows who the visitor is yet
    await asyncio.to_thread(buy)
    await yespo.wait_for_events(8, within_s=10)
    await asyncio.to_thread(analytics.shutdown)
    assert errors == []
    check_the_shop_reached_yespo(yespo, email, user)


NODE_SHOP = """
const { Analytics } = require('@segment/analytics-node')
const [host, writeKey, anon, user, shop] = process.argv.slice(2)
const item = (id, name, price, quantity) =>
  ({ product_id: id, name, price, quantity, url: `${shop}/${id}`, image_url: `${shop}/${id}.jpg` })
const mug = item('mug', 'Mug', 12.5, 2), tee = item('tee', 'Tee', 20, 1)
const analytics = new Analytics({ writeKey, host, flushInterval: 50 })
const errors = []
analytics.on('error', (err) => errors.push(String(err.reason || err)))

async function main() {
  // before login: only the device's id
  analytics.page({ anonymousId: anon, name: 'Home', properties: { url: `${shop}/` } })
  analytics.track({ anonymousId: anon, event: 'Product Viewed', properties: {
    product_id: 'mug', name: 'Mug', price: 12.5, url: `${shop}/mug`, image_url: `${shop}/mug.jpg` } })
  analytics.track({ anonymousId: anon, event: 'Product Added', properties: { ...mug, currency: 'EUR' } })
  analytics.track({ anonymousId: anon, event: 'Product Added', properties: { ...tee, currency: 'EUR' } })
  await analytics.flush()
  console.log('browsed')
  await new Promise((resolve) => process.stdin.once('data', resolve))
  // logged in
  analytics.identify({ userId: user, anonymousId: anon, traits: { email: 'Jane.Node@Example.com' } })
  analytics.page({ userId: user, anonymousId: anon, name: 'Mugs', properties: { url: `${shop}/mugs` } })
  analytics.track({ userId: user, event: 'Product Removed',
    properties: { product_id: 'mug', quantity: 1, currency: 'EUR' } })
  analytics.track({ userId: user, event: 'Signed Up', properties: { plan: 'pro', seats: 3 } })
  analytics.track({ userId: user, event: 'Order Completed', properties: {
    order_id: '1001', total: 45, currency: 'EUR', products: [mug, tee] } })
  await analytics.closeAndFlush()
  console.log(JSON.stringify({ errors }))
}
main()
"""


async def test_the_node_sdk_with_only_its_host_changed(
    shop: tuple[Running, StandIn], node_modules: Path, tmp_path: Path
) -> None:
    collector, yespo = shop
    node = shutil.which("node")
    assert node is not None, "node is needed: apt-get install nodejs (.ci/run does)"
    script = tmp_path / "shop.js"
    script.write_text(NODE_SHOP)
    anon, user, email = "anon-node-1", "user-node-1", "jane.node@example.com"
    proc = await asyncio.create_subprocess_exec(
        node, str(script), collector.url, WRITE_KEY, anon, user, SHOP,
        env={**os.environ, "NODE_PATH": str(node_modules)},
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        async with asyncio.timeout(60):
            assert (await proc.stdout.readline()).strip() == b"browsed"
            await asyncio.sleep(0.2)
            assert yespo.events == []  # held: nobody knows who the visitor is yet
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
            proc.stdin.close()  # node exits once its stdin ends
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    assert orjson.loads(out.splitlines()[-1]) == {"errors": []}
    await yespo.wait_for_events(8, within_s=10)
    check_the_shop_reached_yespo(yespo, email, user)
