"""The private influxd: loopback only, data under the given folder, stops cleanly."""

from __future__ import annotations

from cloud.influx import InfluxClient
from cloud.localstore import LocalInflux, render_config


def test_private_influxd_keeps_its_data_under_the_folder(tmp_path):
    server = LocalInflux(tmp_path / "store")
    url = server.start()
    try:
        assert url.startswith("http://127.0.0.1:")
        c = InfluxClient(url, "methane")
        c.create_database()
        c.write(["m,device=a value=1.5 1000"])
        assert c.query_one('SELECT "value" FROM "m"')[0].values == [[1000, 1.5]]
        assert (tmp_path / "store" / "meta").is_dir() and (tmp_path / "store" / "wal").is_dir()
    finally:
        server.stop()
    assert not server.ping() and not server.running()
    # Restarted on the same folder and port, the data is still there.
    with LocalInflux(tmp_path / "store", port=server.port) as again:
        assert InfluxClient(again.url, "methane").query_one('SELECT "value" FROM "m"')[0].values == [[1000, 1.5]]


def test_config_binds_loopback_only(tmp_path):
    conf = render_config(tmp_path, 1234, 1235)
    assert 'bind-address = "127.0.0.1:1234"' in conf and 'bind-address = "127.0.0.1:1235"' in conf
    assert "reporting-disabled = true" in conf and "store-enabled = false" in conf
