"""What upres lets in (issue 26): the server's access token and loopback rule, its headers,
slow uploads, and weights files that lie about themselves. Servers listen on 127.0.0.1 only."""

from __future__ import annotations

import json
import socket
import struct
import time
from pathlib import Path

import httpx
import pytest

from test_serve import _serving
from upres.cli import main
from upres.errors import UpresError
from upres.models.weights import load_model
from upres.models.zoo import resolve
from upres.serve.app import is_loopback

from conftest import BENCH

BIRD = BENCH / "Set5" / "bird.png"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    token = "s3cret-token-for-the-tests-only"
    (d / "token").write_text(token + "\n")
    with _serving(d, "--token-file", str(d / "token"), "--models", "fast-x2",
                  "--read-timeout", "1") as url:
        yield url, token


def test_token_is_required_on_the_api(guarded):
    url, token = guarded
    assert httpx.get(f"{url}/v1/models").status_code == 401
    bad = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{url}/openapi.json").status_code == 401
    ok = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and any(m["name"] == "fast-x2" for m in ok.json())
    r = httpx.post(f"{url}/v1/upscale", params={"model": "fast-x2"}, content=BIRD.read_bytes(),
                   headers={"Authorization": f"Bearer {token}"}, timeout=120)
    assert r.status_code == 200
    assert httpx.get(f"{url}/healthz").status_code == 200  # liveness stays open
    assert httpx.get(f"{url}/").status_code == 200  # the page asks for the token itself


def test_headers_leak_no_server_version_or_path_and_cors_is_closed(guarded):
    url, token = guarded
    r = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {token}",
                                                "Origin": "http://evil.example"})
    assert "server" not in r.headers
    assert not any(k.lower().startswith("access-control") for k in r.headers)
    pre = httpx.options(f"{url}/v1/upscale", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers
    for v in r.headers.values():
        assert "/work" not in v and "/tmp" not in v and "uvicorn" not in v.lower()


def test_slow_upload_hits_the_read_timeout(guarded):
    url, token = guarded
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(f"POST /v1/upscale?model=fast-x2 HTTP/1.1\r\nHost: {host}\r\n"
                  f"Authorization: Bearer {token}\r\nContent-Length: 100000\r\n"
                  "Content-Type: application/octet-stream\r\n\r\n".encode() + b"\x89PNG")
        t0 = time.monotonic()
        reply = s.recv(4096).decode(errors="replace")  # nothing more is ever sent
        waited = time.monotonic() - t0
        while "}" not in reply:  # the JSON body may come in a packet of its own
            more = s.recv(4096)
            if not more:
                break
            reply += more.decode(errors="replace")
    assert reply.startswith("HTTP/1.1 408"), reply
    assert waited < 20 and "upload too slow" in reply


def test_serve_off_loopback_needs_a_token(capsys):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.7")
    assert main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0 without an access token" in err


def _tamper(src: Path, dst: Path, header: bytes | None = None, n: int | None = None) -> Path:
    data = src.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    hdr = data[8:8 + size] if header is None else header
    dst.write_bytes(struct.pack("<Q", len(hdr) if n is None else n) + hdr + data[8 + size:])
    return dst


def test_lying_safetensors_are_refused_in_one_line(tmp_path):
    src = resolve("fast-x2")
    huge = _tamper(src, tmp_path / "huge.safetensors", n=5 * 2**30)
    with pytest.raises(UpresError, match="header claims 5368709120 bytes") as e:
        load_model(huge)
    assert "\n" not in str(e.value)
    head = json.loads(src.read_bytes()[8:8 + struct.unpack("<Q", src.read_bytes()[:8])[0]])
    name = next(k for k in head if k != "__metadata__")
    head[name]["data_offsets"] = [0, 10**12]
    past = _tamper(src, tmp_path / "past.safetensors", json.dumps(head).encode())
    with pytest.raises(UpresError, match="claims bytes 0-1000000000000"):
        load_model(past)
    assert main(["upscale", str(BIRD), "-o", str(tmp_path / "o.png"), "-m", str(past)]) == 2


def test_onnx_external_data_outside_its_folder_is_refused(tmp_path):
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from upres.export import load_onnx

    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", 1, [4, 4])],
                              [helper.make_tensor_value_info("y", 1, [4, 4])], [w])
    model = helper.make_model(graph)
    t = model.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", "../../etc/passwd"), ("offset", "0"), ("length", "64")):
        e = t.external_data.add()
        e.key, e.value = k, v
    onnx.save(model, tmp_path / "evil.onnx")
    with pytest.raises(UpresError, match="outside the model's folder"):
        load_onnx(tmp_path / "evil.onnx")


def test_damaged_model_cards_and_graphs_are_one_line(tmp_path):
    """Found by the fuzz run: a bit flip inside the card's JSON in a .safetensors, and an ONNX
    graph whose node names an input nobody makes, were tracebacks."""
    import onnx
    from safetensors.torch import load_file, save_file

    from upres.export import export_onnx, load_onnx

    src = resolve("tiny-x2")
    net, card = load_model(src)
    bad = tmp_path / "card.safetensors"
    save_file(load_file(str(src)), str(bad), metadata={"upres": card.to_metadata()["upres"][:-9]})
    with pytest.raises(UpresError, match=r"model card .* is damaged") as e:
        load_model(bad)
    assert "\n" not in str(e.value) and str(bad) in str(e.value)
    good = export_onnx(net, card, tmp_path / "m.onnx")
    proto = onnx.load(str(good))
    proto.graph.node[1].input[0] = "made_by_no_node"
    onnx.save(proto, str(tmp_path / "graph.onnx"))
    with pytest.raises(UpresError, match="not a valid ONNX model") as e:
        load_onnx(tmp_path / "graph.onnx")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("card", ["null", "[]", "[" * 100000])
def test_model_cards_that_are_not_objects_are_one_line(tmp_path, card):
    from safetensors.torch import load_file, save_file

    src = resolve("tiny-x2")
    bad = tmp_path / "card.safetensors"
    save_file(load_file(str(src)), str(bad), metadata={"upres": card})
    with pytest.raises(UpresError, match="is damaged"):
        load_model(bad)
