"""The end of ``make demo``: read the readings back from the local twin's InfluxDB (the same queries
an operator's dashboard runs) and draw each sensor's methane over the demo in the terminal, then
print the store's own completeness report for the device, and how to query the store yourself
(while the demo runs, or afterwards by serving its state again)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cloud.completeness import device_report
from cloud.influx import InfluxClient, quote_string

CHART_WIDTH = 100
CHART_HEIGHT = 14


def methane_series(client: InfluxClient, thing: str) -> dict[str, list[tuple[int, float]]]:
    """Per sensor, (time ns, ppm) of every methane reading of ``thing``, oldest first."""
    q = f'SELECT "value" FROM "methane" WHERE "device" = {quote_string(thing)} GROUP BY "sensor"'  # noqa: S608
    return {s.tags["sensor"]: [(int(t), float(v)) for t, v in s.values if v is not None]
            for s in client.query_one(q)}


def draw(sensor: str, points: list[tuple[int, float]]) -> str:
    """A line chart of one sensor's methane (plotext renders to a string)."""
    import plotext as plt  # a dev dependency (make setup), only the demo draws

    t0 = points[0][0]
    fig = plt.figure
    fig.clear()
    fig.plot_size(CHART_WIDTH, CHART_HEIGHT)
    fig.theme("colorless")
    fig.draw(fig.signal([(t - t0) / 1e9 for t, _ in points], [v for _, v in points], marker="braille"))
    fig.title(f"{sensor}: methane (ppm) read back from the database, {len(points)} readings")
    fig.label(f"seconds since {datetime.fromtimestamp(t0 / 1e9, UTC):%H:%M:%S} UTC")
    return str(fig.build())


def completeness_command(url: str, database: str, thing: str) -> str:
    return f"methane-agent cloud completeness --influx-url {url} --database {database} --thing {thing}"


def show_store(client: InfluxClient, thing: str, say: Callable[[str], None], state_dir: Path) -> bool:
    """Draw the charts and the completeness line; True when the store holds the device's readings
    without a gap. ``state_dir``: the emulator's, which serves this store again after the demo."""
    series = methane_series(client, thing)
    say(f"\nthe database ({client.url}, database {client.database!r}) now holds:")
    for sensor, points in sorted(series.items()):
        say(draw(sensor, points))
    rep = device_report(client, thing)
    say(f"completeness from the store: {rep.received} of {rep.expected} readings, gaps {rep.gaps or 'none'}, "
        f"{rep.duplicates_dropped} duplicates dropped, uptime {rep.uptime_fraction}")
    # The store stops with the demo; its data stays in the emulator's state directory.
    say(f"the store stops with the demo. To query it afterwards, serve it again: methane-agent emulator serve "
        f"--state-dir {state_dir} --ingest, then in another terminal "
        f"{completeness_command('URL', client.database, thing)} with URL the influx_url under \"ingest\" in "
        f"{state_dir / 'emulator.json'} (a new port each time)")
    return bool(series) and rep.received > 0 and not rep.gaps
