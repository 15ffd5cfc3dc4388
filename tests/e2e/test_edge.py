"""The public edge as an attacker and a careless client would try it: every declared
route with every way of making one path read as another, junk ids, consistency tokens
from the future, services that do not answer.

Requests whose paths must reach the gateway byte for byte go over `http.client` on
one keep-alive connection (httpx would resolve dot segments before sending): each
answer must be a clean 4xx and the connection must stay usable after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import psutil
import pytest

from services.gateway.routes import ROUTES, Param, Route
from shared.kit import consistency
from shared.kit.access import Access
from shared.kit.embedded import free_port
from shared.kit.stack import Stack
from tests.conftest import ADMIN_KEY, eventually
from tests.e2e.support import CONSISTENCY, error, folder, member, multipart, png, unique, upload
from tests.signing import as_user, sign_as_gateway


class RawConnection(http.client.HTTPConnection):
    """Sends the request line as given: no validation, bytes past ASCII as they are."""

    def _validate_path(self, url: str) -> None:
        pass

    def _encode_request(self, request: str) -> bytes:
        return request.encode("latin-1")


class Raw:
    """One keep-alive connection to the gateway; every answer read whole."""

    def __init__(self, base_url: str, key: str | None) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        self.conn = RawConnection(parsed.hostname or "127.0.0.1", parsed.port or 80, timeout=60)
        self.key = key
        self.sent = 0

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        keep: bool = True,
    ) -> tuple[int, dict[str, str], bytes]:
        sending = dict(headers or {})
        if self.key:
            sending["Authorization"] = f"Bearer {self.key}"
        self.conn.request(method, path, body=body, headers=sending)
        answer = self.conn.getresponse()
        data = answer.read()
        # The server kept the connection: the next request goes on the same socket.
        assert not keep or not answer.will_close, (method, path, answer.status, data[:300])
        self.sent += 1
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, data

    def close(self) -> None:
        self.conn.close()


def escapes(target: str) -> dict[str, str]:
    """`target` (a path relative to `/v1/<segment>/`, with `..` in it) written every way
    that could make a server or a client library read it as that path."""
    return {
        "raw dot segments": target,
        "%2e%2e": target.replace("..", "%2e%2e"),
        "%2E%2E": target.replace("..", "%2E%2E"),
        "..%2f": target.replace("/", "%2f"),
        "%2e%2e%2f": target.replace("..", "%2e%2e").replace("/", "%2f"),
        "%2f alone": "x%2f" + target.replace("../", "").replace("/", "%2F"),
        "%252e%252e (double)": target.replace("..", "%252e%252e"),
        "..%252f (double)": target.replace("/", "%252f"),
        "%c0%ae (overlong)": target.replace("..", "%c0%ae%c0%ae"),
        "backslashes": target.replace("/", "\\"),
        "%00": "%00",
        "%00 before": "%00" + target,
        "%ff": "%ff",
        ";": target.replace("..", "..;"),
    }


def attack_paths(route: Route, ids: dict[str, str], targets: list[str]) -> Iterator[str]:
    """The route's path with one parameter (or, without any, an extra segment) replaced
    by each escape of each target; the other parameters are real ids."""
    slots = [i for i, s in enumerate(route.segments) if isinstance(s, Param)] or [None]
    for slot in slots:
        for target in targets:
            for payload in escapes(target).values():
                parts = [
                    ids[s.name] if isinstance(s, Param) else s for s in route.segments
                ]  # fmt: skip
                if slot is None:
                    parts.append(payload)
                else:
                    parts[slot] = payload
                yield "/" + "/".join(parts)


@pytest.fixture
async def attacker(api: httpx.AsyncClient) -> dict[str, Any]:
    return await member(api, "attacker")


async def test_every_route_refuses_every_encoding_and_nothing_lands(
    api: httpx.AsyncClient, platform: Stack, attacker: dict[str, Any], as_key: Any
) -> None:
    victim = await folder(api, unique("victim"))
    kept = (await upload(api, victim["id"], ("kept.png", png())))["files"][0]
    dataset = (await api.post("/v1/datasets", json={"name": unique("victim-ds")})).json()
    ids = {
        "folder_id": victim["id"],
        "file_id": kept["id"],
        "dataset_id": dataset["id"],
        "user_id": attacker["id"],
        "key_id": str(uuid.uuid4()),
        "job_id": str(uuid.uuid4()),
        "integration_id": str(uuid.uuid4()),
        "webhook_id": str(uuid.uuid4()),
        "delivery_id": str(uuid.uuid4()),
        "session_id": str(uuid.uuid4()),
        "number": "1",
        "index": "0",
        "study_uid": "1.2.3",
        "series_uid": "1.2.3.4",
        "sop_uid": "1.2.3.4.5",
        "frames": "1",
    }
    v = victim["id"]
    targets = [
        "../../internal/audit",
        "../../../internal/users/lookup",
        f"../folders/{v}/files",
        f"../../v1/folders/{v}/files",
    ]
    planted, headers = multipart(("planted.png", png()))
    json_body = orjson.dumps({"name": "planted", "emails": [attacker["email"]], "role": "admin"})
    raw = Raw(platform.gateway_url, attacker["api_key"])
    answers: dict[int, int] = {}
    try:
        for route in ROUTES:
            for path in attack_paths(route, ids, targets):
                if route.method in ("GET", "DELETE"):
                    body, sent_headers = None, {}
                elif route.body is not None and isinstance(route.body, type):
                    body, sent_headers = json_body, {"Content-Type": "application/json"}
                else:
                    body, sent_headers = planted, headers
                status, _, data = raw.send(route.method, path, body, sent_headers)
                assert status in (400, 404, 405), (route.method, path, status, data[:300])
                problem = orjson.loads(data)["error"]
                assert problem["code"] in ("invalid_path", "not_found", "method_not_allowed")
                answers[status] = answers.get(status, 0) + 1
        # The same connection still serves an ordinary request.
        status, _, data = raw.send("GET", "/v1/users/me")
        assert status == 200 and orjson.loads(data)["id"] == attacker["id"]
    finally:
        raw.close()
    assert raw.sent > 2000, raw.sent
    assert answers.get(400, 0) > answers.get(404, 0)

    # Nothing landed: the attacker did nothing the audit knows of, the victim's folder
    # holds what it held, and no "planted" file or folder exists anywhere.
    audit = await api.get("/v1/audit", params={"actor_id": attacker["id"]})
    assert audit.status_code == 200, audit.text
    assert audit.json()["items"] == []
    listing = (await api.get(f"/v1/folders/{v}/items")).json()["items"]
    assert [i["id"] for i in listing] == [kept["id"]]
    found = (await api.get("/v1/search", params={"q": "planted"})).json()["items"]
    assert found == []
    theirs = await as_key(attacker["api_key"]).get("/v1/folders")
    assert theirs.json()["items"] == []


async def test_junk_in_a_path_is_4xx_and_the_connection_lives_on(
    platform: Stack, attacker: dict[str, Any]
) -> None:
    """`GET /v1/files/%00` was a 500 that reset the client's next request."""
    raw = Raw(platform.gateway_url, attacker["api_key"])
    try:
        for path in (
            "/v1/files/%00",
            "/v1/files/%ff",
            "/v1/files/%2e%2e",
            "/v1/folders/%00/items",
            "/v1/files/" + "a" * 5000,
            "/v1/files/nope",
            "/v1/%00",
        ):
            status, headers, data = raw.send("GET", path)
            assert status in (400, 404), (path, status, data[:200])
            assert headers["x-request-id"]
            assert orjson.loads(data)["error"]["code"] in ("invalid_path", "not_found")
            status, _, _ = raw.send("GET", "/v1/users/me")
            assert status == 200
        # A byte no request line may hold is refused by the HTTP parser itself, which
        # cannot tell where the request ends: the one case where the connection ends.
        status, _, _ = raw.send("GET", "/v1/files/\xff", keep=False)
        assert status == 400
    finally:
        raw.close()


async def exchange(url: str, sent: bytes, within: float) -> bytes:
    """What the gateway answers on a connection given `sent` and nothing more, until it
    closes the connection (within `within` seconds)."""
    parsed = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
    try:
        writer.write(sent)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), within)
    finally:
        writer.close()


async def test_a_limit_in_other_digits_is_a_422_not_a_500(api: httpx.AsyncClient) -> None:
    """ "²" and "١٢" pass str.isdigit; int() refuses the first (a 500) and reads the
    second as 12 where the others refuse it."""
    where = await folder(api, unique("digits"))
    job = (await upload(api, where["id"], ("a.png", png())))["job_id"]
    for path, params in (
        (f"/v1/jobs/{job}/files", {}),
        (f"/v1/jobs/{job}/errors", {}),
        (f"/v1/folders/{where['id']}/items", {}),
        ("/v1/search", {"q": "a"}),
    ):
        for limit in ("²", "١٢"):
            answer = await api.get(path, params={**params, "limit": limit})
            assert answer.status_code == 422, (path, limit, answer.text)
            error(answer, 422)


async def test_a_jobs_pages_limit_is_digits_alone_for_either_owner(
    api: httpx.AsyncClient,
) -> None:
    """Ingest's own check takes "+5", " 5" and "1_0" (as Python's int does); the
    gateway, which fills the page's DICOM part to the limit, read them as none, so the
    page went to 100. An upload's job (ingest's) and a re-encode's (the thumbnails
    context's) refuse them alike."""
    where = await folder(api, unique("limits"))
    job = (await upload(api, where["id"], ("a.png", png())))["job_id"]
    unknown = uuid.uuid4()  # no one's job: the re-encode's branch
    for path in (f"/v1/jobs/{job}/files", f"/v1/jobs/{job}/errors", f"/v1/jobs/{unknown}/files"):
        for limit in ("+5", " 5", "1_0", "0", "1001", "1" * 5000):
            answer = await api.get(path, params={"limit": limit})
            details = error(answer, 422, "invalid_request")["details"]
            assert details["parameter"] == "limit", (path, limit, details)
        assert (await api.get(path, params={"limit": "5"})).status_code in (200, 404)


async def test_a_nul_in_the_audits_filters_is_a_422_not_a_500(api: httpx.AsyncClient) -> None:
    # PostgreSQL's text takes no NUL: each context's query failed, and the merge with it.
    for name in ("actor_id", "type"):
        answer = await api.get("/v1/audit", params={name: "a\x00b"})
        refused = error(answer, 422, "invalid_request")
        assert refused["details"]["fields"][0]["field"] == name, refused


async def test_a_client_cannot_hold_the_gateway_with_a_huge_or_endless_request(
    platform: Stack, api: httpx.AsyncClient, attacker: dict[str, Any]
) -> None:
    """A 64 MiB header was read whole; headers that never end, a body that stops short
    of its length and a connection that sends nothing held their connection for good.
    (The test platform's timeouts: headers 5 s, a body's pause 10 s.)"""
    url = platform.gateway_url
    head = b"GET /v1/users/me HTTP/1.1\r\nHost: files\r\n"
    auth = f"Authorization: Bearer {attacker['api_key']}\r\n".encode()
    huge, endless, short, silent = await asyncio.gather(
        exchange(url, head + b"X-Big: " + b"a" * 200_000 + b"\r\n\r\n", within=20),
        exchange(url, head + auth, within=30),
        exchange(
            url,
            b"POST /v1/folders HTTP/1.1\r\nHost: files\r\n"
            + auth
            + b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"name": ',
            within=40,
        ),
        exchange(url, b"", within=30),
    )
    assert huge.startswith(b"HTTP/1.1 431 "), huge[:200]
    assert orjson.loads(huge.partition(b"\r\n\r\n")[2])["error"]["code"] == "headers_too_large"
    for late in (endless, silent):
        assert late.startswith(b"HTTP/1.1 408 "), late[:200]
        assert orjson.loads(late.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout"
    # Cut off mid-body: no answer to a request never sent whole.
    assert short == b""
    assert (await api.get("/v1/users/me")).status_code == 200


# Members enough to hold 210 transfers, each under its cap of transfers at once
# (FILES_GATEWAY_TRANSFERS_PER_CALLER, 32).
COLLUDING = 7


async def test_slow_uploads_do_not_hold_the_way_to_ingest_for_everyone(
    platform: Stack, api: httpx.AsyncClient, as_key: Any
) -> None:
    """Each upload streamed on to ingest holds a connection for as long as its client
    takes to send it: 200 slow ones held every connection of the gateway's pool to
    ingest, and every other upload waited 60 s for one, then failed 503 (until the slow
    ones were cut off for pausing: 10 s on the test platform). One member may hold 32
    at most: here several do."""
    boundary = uuid.uuid4().hex
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    starts = []
    for _ in range(COLLUDING):
        attacker = await member(api, "attacker")
        own = await folder(as_key(attacker["api_key"]), unique("slow"))
        starts.append(
            (
                f"POST /v1/folders/{own['id']}/files HTTP/1.1\r\nHost: files\r\n"
                f"Authorization: Bearer {attacker['api_key']}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {len(part) + 10_000_000}\r\n\r\n"
            ).encode()
            + part
            + b"hello"
        )
    parsed = urllib.parse.urlsplit(platform.gateway_url)
    slow = []
    try:
        for n in range(210):
            reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
            writer.write(starts[n % COLLUDING])
            await writer.drain()
            slow.append((reader, writer))
        await held_to_ingest(platform, 200, "the slow uploads streaming on to ingest")
        mine = await folder(api, unique("not-slow"))
        made = await api.post(
            f"/v1/folders/{mine['id']}/files", files=[("file", ("b.txt", b"hi\n", "text/plain"))]
        )
        assert made.status_code == 201, made.text
        # Answered while the slow uploads still hold their connections, not once they
        # were cut off for pausing.
        assert not any(reader.at_eof() for reader, _ in slow)
    finally:
        for _, writer in slow:
            writer.close()


@pytest.mark.parametrize("blobs", ["local"], indirect=True)  # S3's are presigned URLs
async def test_unread_downloads_do_not_hold_the_way_to_ingest_for_everyone(
    platform: Stack, api: httpx.AsyncClient, as_key: Any, attacker: dict[str, Any]
) -> None:
    """A download streamed from ingest holds a connection for as long as its client
    takes to read it: 200 never read held every connection of the gateway's pool to
    ingest for good, and every upload and download waited 60 s, then failed 503. One
    member may hold 32 at most: here several do."""
    mine = as_key(attacker["api_key"])
    own = await folder(mine, unique("unread"))
    big = (await upload(mine, own["id"], ("big.txt", b"0123456789abcdef\n" * 1_200_000)))["files"]
    keys = [attacker["api_key"]]
    for _ in range(COLLUDING - 1):
        other = await member(api, "attacker")
        shared = await mine.post(
            f"/v1/folders/{own['id']}/collaborators",
            json={"emails": [other["email"]], "role": "user"},
        )
        assert shared.status_code < 300, shared.text
        keys.append(other["api_key"])
    parsed = urllib.parse.urlsplit(platform.gateway_url)
    asks = [
        (
            f"GET /v1/files/{big[0]['id']}/content HTTP/1.1\r\nHost: files\r\n"
            f"Authorization: Bearer {key}\r\n\r\n"
        ).encode()
        for key in keys
    ]
    unread = []
    try:
        for n in range(210):
            sock = socket.socket()
            # A small window: what the client does not read stays with the gateway.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((parsed.hostname, parsed.port))
            sock.setblocking(False)
            _, writer = await asyncio.open_connection(sock=sock)
            writer.transport.pause_reading()
            writer.write(asks[n % COLLUDING])
            unread.append(writer)
        await held_to_ingest(platform, 200, "the unread downloads streaming from ingest")
        where = await folder(api, unique("not-unread"))
        made = await api.post(
            f"/v1/folders/{where['id']}/files", files=[("file", ("b.txt", b"hi\n", "text/plain"))]
        )
        assert made.status_code == 201, made.text
        got = await api.get(f"/v1/files/{made.json()['files'][0]['id']}/content")
        assert (got.status_code, got.content) == (200, b"hi\n")
    finally:
        for writer in unread:
            writer.transport.abort()


async def test_transfers_past_the_cap_to_a_service_are_a_503_not_a_stall(stack: Stack) -> None:
    """The gateway's transfers to each service are capped (httpcore looks over every
    connection of a pool as each call starts and ends, so an uncapped pool grew that
    cost without bound): one past the cap is refused 503 with Retry-After at once,
    other calls go on, and a transfer that ends makes room."""
    url, child = stack.add_replica(
        "gateway", env={"FILES_GRPC_PORT": "0", "FILES_GATEWAY_TRANSFERS_PER_SERVICE": "3"}
    )
    try:
        async with (
            contextlib.AsyncExitStack() as held,
            httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
            ) as gateway,
        ):
            own = await folder(gateway, unique("capped"))
            body = b"0123456789abcdef\n" * 1_200_000
            big = (await upload(gateway, own["id"], ("big.txt", body)))["files"][0]
            content = f"/v1/files/{big['id']}/content"
            unread = [
                await held.enter_async_context(gateway.stream("GET", content)) for _ in range(3)
            ]
            assert [r.status_code for r in unread] == [200, 200, 200]
            refused = await gateway.get(content)
            assert "transfers" in error(refused, 503, "unavailable")["message"]
            assert refused.headers["retry-after"]
            assert (await gateway.get(f"/v1/files/{big['id']}")).status_code == 200
            await unread[0].aclose()

            async def room() -> bool:
                got = await gateway.get(content)
                return got.status_code == 200 and got.content == body

            await eventually(room, 30, "a download once one held ended")
    finally:
        stack.remove(child)


async def held_to_ingest(platform: Stack, count: int, what: str) -> None:
    """Once the gateway holds at least `count` connections to ingest."""
    gateway = psutil.Process(platform.child("gateway").proc.pid)
    ingest = urllib.parse.urlsplit(platform.env["FILES_INGEST_URL"]).port

    async def held() -> bool:
        to_ingest = [
            c
            for c in gateway.net_connections("tcp")
            if c.raddr and c.raddr.port == ingest and c.status == psutil.CONN_ESTABLISHED
        ]
        return len(to_ingest) >= count

    await eventually(held, 30, what)


def answers(data: bytes) -> list[tuple[int, bytes]]:
    """The responses, in order, of a connection's bytes (each framed by its length)."""
    found = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in lines
            if line.lower().startswith(b"content-length:")
        )
        found.append((int(lines[0].split()[1]), rest[:length]))
        data = rest[length:]
    return found


async def test_the_head_bound_is_each_pipelined_requests_own(
    platform: Stack, attacker: dict[str, Any]
) -> None:
    """Two requests sent at once, each head under the bound but both together over it,
    are both answered; a second one over it never lands inside the first's answer."""
    url = platform.gateway_url
    auth = f"Authorization: Bearer {attacker['api_key']}\r\n".encode()

    def get(pad: int, last: bool = False) -> bytes:
        close = b"Connection: close\r\n" if last else b""
        return (
            b"GET /v1/users/me HTTP/1.1\r\nHost: files\r\n"
            + auth
            + close
            + b"X-Pad: "
            + b"p" * pad
            + b"\r\n\r\n"
        )

    both = answers(await exchange(url, get(50_000) + get(30_000, last=True), within=20))
    assert [status for status, _ in both] == [200, 200]
    assert all(orjson.loads(body)["id"] == attacker["id"] for _, body in both)
    # A second request refused (too large a head; not HTTP at all) is answered after
    # the first, never inside its answer, and the connection ends.
    for second, status, code in (
        (get(200_000), 431, "headers_too_large"),
        (b"GARBAGE\0 /\r\n\r\n", 400, "malformed_request"),
    ):
        got = answers(await exchange(url, get(1_000) + second, within=20))
        assert [s for s, _ in got] == [200, status], got
        assert orjson.loads(got[0][1])["id"] == attacker["id"]
        assert orjson.loads(got[1][1])["error"]["code"] == code


async def test_the_web_apps_pages_read_nothing_of_the_query_and_answer_head(
    api: httpx.AsyncClient,
) -> None:
    html = {"Accept": "text/html"}
    for query in ("status=0", "status=302", "q=a&status=x"):
        page = await api.get(f"/search?{query}", headers=html)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert (await api.head("/")).status_code == 200
    posted = await api.post("/")
    assert posted.status_code == 405 and posted.headers["allow"] == "GET, HEAD"
    assert (await api.head("/healthz")).status_code == 405
    assert (await api.post("/nowhere")).status_code == 404
    unknown = await api.get("/nowhere", headers=html)
    assert unknown.status_code == 404 and unknown.headers["content-type"].startswith("text/html")
    error(await api.get("/nowhere"), 404, "not_found")


async def test_the_request_id_is_the_callers_when_sane(api: httpx.AsyncClient) -> None:
    mine = "trace-" + uuid.uuid4().hex
    answer = await api.get("/v1/users/me", headers={"X-Request-Id": mine})
    assert answer.headers["x-request-id"] == mine
    replaced = await api.get("/v1/users/me", headers={"X-Request-Id": "x" * 500})
    uuid.UUID(replaced.headers["x-request-id"])


async def test_unknown_query_parameters_stay_at_the_gateway(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("query"))
    answer = await api.get(f"/v1/folders/{top['id']}", params={"needed": "admin", "x": "y"})
    assert answer.status_code == 200, answer.text


# -- consistency ---------------------------------------------------------------------


async def test_a_token_from_the_future_is_a_400_naming_its_source(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("future"))
    ahead = error(
        await api.get(f"/v1/folders/{top['id']}", headers={CONSISTENCY: "catalog:999999999"}),
        400,
        "invalid_consistency_token",
    )
    assert "catalog" in ahead["message"]
    assert ahead["details"]["source"] == "catalog"
    unknown = error(
        await api.get(f"/v1/folders/{top['id']}", headers={CONSISTENCY: "nowhere:1"}),
        400,
        "invalid_consistency_token",
    )
    assert "nowhere" in unknown["message"]
    # Forged ones: refused naming no more than their start (Python's own words for a
    # number of 5,000 digits were the message; a thousand sources were listed whole).
    for forged in (
        "catalog:" + "9" * 5000,
        ",".join(f"s{n}:1" for n in range(1000)),
        "catalog:1" + "0" * 19,
        "x" * 5000 + ":1",
    ):
        refused = error(
            await api.get(f"/v1/folders/{top['id']}", headers={CONSISTENCY: forged}),
            400,
            "invalid_consistency_token",
        )
        assert len(refused["message"]) < 200 and "int_max_str_digits" not in refused["message"]
    # A token the store has reached is waited for and answered.
    made = await api.post("/v1/folders", json={"name": "child", "parent_id": top["id"]})
    token = made.headers[CONSISTENCY]
    assert (await api.get(f"/v1/folders/{top['id']}", headers={CONSISTENCY: token})).json()[
        "folder_count"
    ] == 1


async def test_a_catch_up_asks_a_source_for_its_last_event_of_the_types_a_reader_applies(
    platform: Stack, api: httpx.AsyncClient
) -> None:
    """The gateway waits for a reader to catch up with a source as far as the events the
    reader applies: the source's last event of those types, not its head, which moves on
    with events the reader passes over (a busy pipeline's, waited for a broker hop)."""
    async with (
        httpx.AsyncClient(
            base_url=platform.env["FILES_CATALOG_URL"],
            timeout=30,
            event_hooks={"request": [sign_as_gateway]},
        ) as catalog,
        httpx.AsyncClient(
            base_url=platform.env["FILES_DICOM_URL"],
            timeout=30,
            event_hooks={"request": [sign_as_gateway]},
        ) as dicom,
    ):
        made = await api.post("/v1/folders", json={"name": unique("types")})
        assert made.status_code == 201, made.text
        created = consistency.decode(made.headers[CONSISTENCY])["catalog"]
        renamed = await api.patch(f"/v1/folders/{made.json()['id']}", json={"name": unique("r")})
        assert renamed.status_code == 200, renamed.text
        assert consistency.decode(renamed.headers[CONSISTENCY])["catalog"] > created

        def head(answer: httpx.Response) -> int:
            assert answer.status_code == 200, answer.text
            return int(answer.json()["head"]["catalog"])

        asked = {"token": "", "timeout": "0"}
        assert head(await catalog.get("/internal/consistency", params=asked)) > created
        only = {**asked, "types": "catalog.FolderCreated"}
        assert head(await catalog.get("/internal/consistency", params=only)) == created
        none = {**asked, "types": "catalog.NeverRecorded"}
        assert head(await catalog.get("/internal/consistency", params=none)) == 0
        bad = await catalog.get("/internal/consistency", params={**asked, "types": "x;drop"})
        assert "x;drop" in error(bad, 400, "invalid_event_types")["message"]
        # What a reader applies, for the gateway to ask its sources about.
        applies = (await dicom.get("/internal/consistency", params=asked)).json()["applies"]
        assert "catalog.FileMoved" in applies
        assert "ingest.DicomInstancesStored" in applies
        assert "catalog.FolderRenamed" not in applies


async def test_an_uploads_files_are_read_from_the_catalog_once_it_applied_the_upload(
    platform: Stack, api: httpx.AsyncClient
) -> None:
    """An upload answers with its files as the catalog registered them: the gateway asks
    the catalog to wait for the upload's token and read them in one call (only the
    catalog's reaction is in the answer), and the catalog names its position."""
    top = await folder(api, unique("read-after"))
    sent = await api.post(
        f"/v1/folders/{top['id']}/files",
        files=[("file", (n, png(), "image/png")) for n in ("a.png", "b.png")],
    )
    assert sent.status_code == 201, sent.text
    token = consistency.decode(sent.headers[CONSISTENCY])
    assert {"ingest", "catalog"} <= set(token)
    files = sent.json()["files"]
    assert [f["name"] for f in files] == ["a.png", "b.png"]
    # The same bytes twice: each is the other's duplicate, as the catalog counts them.
    assert all(f["duplicates"] >= 1 and f["datasets"] == [] for f in files)
    async with httpx.AsyncClient(
        base_url=platform.env["FILES_CATALOG_URL"],
        timeout=30,
        event_hooks={"request": [sign_as_gateway]},
    ) as catalog:
        ids = {"ids": [f["id"] for f in files]}
        asked = {"token": sent.headers[CONSISTENCY], "timeout": "5"}
        who = str(uuid.uuid4())
        admin = as_user(who, Access(user_id=who, org_admin=True))
        read = await catalog.post("/internal/files", params=asked, json=ids, headers=admin)
        assert read.status_code == 200, read.text
        assert {f["id"] for f in read.json()["items"]} == set(ids["ids"])
        assert consistency.decode(read.headers[CONSISTENCY])["catalog"] >= token["catalog"]
        bad = await catalog.post(
            "/internal/files", params={"token": "x;y"}, json=ids, headers=admin
        )
        assert "x;y" in error(bad, 400, "invalid_consistency_token")["message"]


# -- dry runs ------------------------------------------------------------------------


async def test_a_dry_run_names_only_the_datasets_the_caller_may_see(
    api: httpx.AsyncClient, as_key: Any
) -> None:
    editor = await member(api, "dry-run-editor")
    top = await folder(api, unique("dry-run"))
    invitation = {"emails": [editor["email"]], "role": "editor"}
    invited = await api.post(f"/v1/folders/{top['id']}/collaborators", json=invitation)
    assert invited.status_code == 200, invited.text
    files = (await upload(api, top["id"], ("a.png", png()), ("b.png", png(4, 4))))["files"]
    ids = [f["id"] for f in files]
    theirs_key = as_key(editor["api_key"])
    mine = (await theirs_key.post("/v1/datasets", json={"name": unique("editor-ds")})).json()
    hidden = (await api.post("/v1/datasets", json={"name": unique("admin-ds")})).json()
    for dataset, client in ((mine, theirs_key), (hidden, api)):
        added = await client.post(f"/v1/datasets/{dataset['id']}/files", json={"file_ids": ids})
        assert added.status_code == 200, added.text

    for path, body in (
        ("/v1/delete", {"file_ids": ids, "dry_run": True}),
        ("/v1/delete", {"folder_ids": [top["id"]], "dry_run": True}),
    ):
        seen = await theirs_key.post(path, json=body)
        assert seen.status_code == 200, seen.text
        assert seen.json()["datasets"] == [
            {"id": mine["id"], "name": mine["name"], "links_removed": 2}
        ]
        assert seen.json()["hidden_datasets"] == 1
        everything = (await api.post(path, json=body)).json()
        assert {d["id"] for d in everything["datasets"]} == {mine["id"], hidden["id"]}
        assert everything["hidden_datasets"] == 0


# -- services that do not answer -----------------------------------------------------


@pytest.fixture(scope="module")
def crippled_gateway(stack: Stack) -> Iterator[str]:
    """A second gateway in front of the same services, but whose datasets service is
    unreachable (a closed port) and whose DICOM service answers every consistency
    question with a 404 (it is the first gateway, which has no such route)."""
    url, child = stack.add_replica(
        "gateway",
        env={
            "FILES_GRPC_PORT": "0",
            "FILES_DATASETS_URL": f"http://127.0.0.1:{free_port()}",
            "FILES_DICOM_URL": stack.gateway_url,
        },
        probe="/healthz",
    )
    yield url
    stack.remove(child)


async def test_a_service_that_does_not_answer_is_a_503_and_a_made_write_stands(
    api: httpx.AsyncClient, crippled_gateway: str
) -> None:
    top = await folder(api, unique("crippled"))
    file = (await upload(api, top["id"], ("c.png", png())))["files"][0]
    raw = Raw(crippled_gateway, None)
    auth = {"Authorization": api.headers["Authorization"]}
    try:
        status, _, data = raw.send("GET", "/v1/datasets", headers=auth)
        assert status == 503, data
        problem = orjson.loads(data)["error"]
        assert problem["code"] == "unavailable" and "datasets" in problem["message"]
        # A write the catalog made answers as made, though its composition (the file's
        # datasets) cannot be had: a 5xx would have the client make it again.
        body = orjson.dumps({"name": "renamed.png"})
        headers = {**auth, "Content-Type": "application/json"}
        status, answered, data = raw.send("PATCH", f"/v1/files/{file['id']}", body, headers)
        assert status == 200, data
        assert orjson.loads(data)["name"] == "renamed.png"
        assert answered.get("files-consistency")
        # A top-level folder waits on every service's consistency: the unreachable one
        # and the one answering 404 add nothing, and the folder is made.
        body = orjson.dumps({"name": unique("made-anyway")})
        status, answered, data = raw.send("POST", "/v1/folders", body, headers)
        assert status == 201, data
        token = answered["files-consistency"]
        status, _, data = raw.send(
            "GET", f"/v1/folders/{orjson.loads(data)['id']}", headers={**auth, CONSISTENCY: token}
        )
        assert status == 200, data
    finally:
        raw.close()
    assert (await api.get(f"/v1/files/{file['id']}")).json()["name"] == "renamed.png"


async def test_an_unreachable_acl_is_a_503_not_a_500(stack: Stack, api: httpx.AsyncClient) -> None:
    """Authentication itself asks the ACL context: when it cannot, the caller is told
    to try again, not that something broke."""
    url, child = stack.add_replica(
        "gateway",
        env={"FILES_GRPC_PORT": "0", "FILES_ACL_URL": f"http://127.0.0.1:{free_port()}"},
        probe="/healthz",
    )
    raw = Raw(url, None)
    try:
        auth = {"Authorization": api.headers["Authorization"]}
        status, headers, data = raw.send("GET", "/v1/users/me", headers=auth)
        assert status == 503, data
        assert orjson.loads(data)["error"]["details"] == {
            "service": "acl",
            "retry": True,
            "cause": "service_unavailable",
        }
        assert headers["retry-after"] == "1"
        status, _, _ = raw.send("GET", "/healthz")
        assert status == 200
    finally:
        raw.close()
        stack.remove(child)


async def test_a_security_header_sent_twice_is_refused_not_picked(
    platform: Stack, api: httpx.AsyncClient
) -> None:
    """Two keys, two Idempotency-Keys, two CSRF tokens, two session cookies: which one
    counts would depend on the part that reads it, so none does."""
    bob = await member(api, "twice")
    secret = await folder(api, unique("twice-secret"))
    admin, theirs = f"Bearer {ADMIN_KEY}", f"Bearer {bob['api_key']}"
    async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=30) as bare:
        for pair in ([theirs, admin], [admin, theirs]):
            answer = await bare.get(
                f"/v1/folders/{secret['id']}", headers=[("Authorization", v) for v in pair]
            )
            assert error(answer, 400, "duplicate_header")["details"]["header"] == "Authorization"
            assert "Authorization" in answer.json()["error"]["message"]
        name = unique("twice-keyed")
        keys = [str(uuid.uuid4()), str(uuid.uuid4())]
        answer = await bare.post(
            "/v1/folders",
            json={"name": name},
            headers=[("Authorization", admin), *(("Idempotency-Key", k) for k in keys)],
        )
        assert error(answer, 400, "duplicate_header")["details"]["header"] == "Idempotency-Key"
        # Nothing was made under either key: the first alone makes it (no replay, and
        # the name not taken).
        made = await bare.post(
            "/v1/folders",
            json={"name": name},
            headers={"Authorization": admin, "Idempotency-Key": keys[0]},
        )
        assert made.status_code == 201 and "idempotent-replayed" not in made.headers
        answer = await bare.post(
            "/v1/folders",
            json={"name": unique("twice-csrf")},
            headers=[("X-Files-CSRF", "1"), ("X-Files-CSRF", "2")],
        )
        assert error(answer, 400, "duplicate_header")["details"]["header"] == "X-Files-CSRF"
        answer = await bare.get(
            "/v1/users/me", headers={"Cookie": "files_session=a; other=1; files_session=b"}
        )
        refused = error(answer, 400, "duplicate_header")
        assert refused["details"] == {"header": "Cookie", "cookie": "files_session"}
        # A cookie someone else planted locks nobody out: a key's request reads no
        # cookie, and signing out stays possible.
        planted = {"Cookie": "files_session=a; files_session=b"}
        keyed = await bare.get("/v1/users/me", headers={**planted, "Authorization": theirs})
        assert keyed.json()["id"] == bob["id"]
        out = await bare.delete("/v1/sessions", headers={**planted, "X-Files-CSRF": "1"})
        assert out.status_code == 204, out.text
        # Over TLS the session cookie is `__Host-files_session`: others are not read.
        over_tls = {**planted, "X-Forwarded-Proto": "https"}
        error(await bare.get("/v1/users/me", headers=over_tls), 401, "unauthenticated")
        hosted = {"Cookie": "__Host-files_session=a; __Host-files_session=b"}
        answer = await bare.get("/v1/users/me", headers={**hosted, "X-Forwarded-Proto": "https"})
        assert error(answer, 400, "duplicate_header")["details"]["cookie"] == "__Host-files_session"
        # Once is fine; so is the same value again (a client library's repeat).
        me = await bare.get("/v1/users/me", headers={"Authorization": theirs})
        assert me.json()["id"] == bob["id"]
        again = await bare.get("/v1/users/me", headers=[("Authorization", theirs)] * 2)
        assert again.json()["id"] == bob["id"]
