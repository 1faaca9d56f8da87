"""TensorBoard event files for a run, written from the rows gankit already logs (optional extra).

RUN/tensorboard/events.out.tfevents.gankit holds, against images seen (the step):
- every metrics.jsonl column of an iteration row as a scalar, `train/<column>`;
- every number of an evaluation as a scalar, `eval/<name>`, its protocol as text;
- the warnings as text (`warnings`), other events (rollback, cuda_graph) as text (`events/<name>`);
- the snapshot grids (samples/*.png, the PNG bytes as written) as images, `samples`;
- config.json as text, `config.json`, at step 0.

The file is a function of the run folder: whenever a run (re)opens it (a new run, a resume, a
rollback) it is rewritten from metrics.jsonl, samples/ and config.json up to the checkpoint's
image count, and appended to as training goes on. So a resumed run continues its curves with no
duplicate or stale steps, for any reader, and `gankit tensorboard RUN` writes the same file for
a run trained without it. Nothing here touches the device: rows arrive as Python floats.
"""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path
from typing import Any

from gankit import runs
from gankit.errors import GankitError

FOLDER = runs.TENSORBOARD
EVENTS = "events.out.tfevents.gankit"  # one file, a fixed name: "tfevents" is what readers look for
FLUSH_SECONDS = 5.0  # a live view lags at most this much (of the rows' clock)
INSTALL_HINT = "pip install 'gankit[tensorboard]'"


def available() -> bool:
    try:
        import tensorboard.compat.proto.event_pb2  # noqa: F401
    except ImportError:
        return False
    return True


def missing_note() -> str:
    return (f"gankit: note: tensorboard is not installed, so this run writes no TensorBoard logs "
            f"({INSTALL_HINT} to get them, or --tensorboard off to silence this)")


class TensorBoardLog:
    """The run's event file: MetricsLog's mirror (row, event, truncate, flush, close), plus image."""

    def __init__(self, run_dir: Path, images: int | None):
        """Rewrite the event file from the run folder up to `images` (None: all of it), then
        open it for appending."""
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / FOLDER / EVENTS
        self.file = None
        self._last_flush = 0.0
        self._rebuild(images)

    # --- MetricsLog's mirror -------------------------------------------------------------------

    def row(self, iteration: int, images: int, time_: float, stats: dict[str, float]) -> None:
        self._write(_row_event({"iteration": iteration, "images": images, "time": time_, **stats}))
        if time_ - self._last_flush >= FLUSH_SECONDS:
            self._last_flush = time_
            self.flush()

    def event(self, name: str, images: int, **fields: Any) -> None:
        self._write(_event_event({"event": name, "images": images, **fields}))

    def image(self, images: int, png: Path) -> None:
        self._write(_image_event(images, png.read_bytes()))
        self.flush()

    def truncate(self, images: int) -> None:
        """Back to `images` (a rollback): rewritten from the run folder, which MetricsLog has cut."""
        self.close()
        self._rebuild(images)

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    # --- the file ------------------------------------------------------------------------------

    def _rebuild(self, images: int | None) -> None:
        # Whole or not at all, as files.atomic_write, but under a name no reader takes for an
        # event file ("tfevents"); runs.remove_stale_temp_files finds one a killed process left.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".rewrite.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                for record in events_of_run(self.run_dir, images):
                    f.write(_record(record.SerializeToString()))
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.file = open(self.path, "ab")  # noqa: SIM115 (close())

    def _write(self, event) -> None:
        if self.file is not None:
            self.file.write(_record(event.SerializeToString()))


def events_of_run(run_dir: Path, images: int | None = None) -> list:
    """The Event protos of a run folder, up to `images`: what the live log would have written."""
    from tensorboard.compat.proto.event_pb2 import Event

    def keep(step: int) -> bool:
        return images is None or step <= images

    events = [Event(wall_time=time.time(), step=0, file_version="brain.Event:2")]
    config = run_dir / runs.CONFIG
    if config.is_file():
        events.append(config_event(config.read_text()))
    pngs = {}
    for png in (run_dir / runs.SAMPLES).glob("*.png") if (run_dir / runs.SAMPLES).is_dir() else ():
        if png.stem.isdigit() and keep(int(png.stem)):
            pngs[int(png.stem)] = png
    for record in complete_rows(run_dir / runs.METRICS):
        step = int(record.get("images", 0))
        if not keep(step):
            continue
        for at in sorted(s for s in pngs if s < step):  # each grid in its place among the rows
            events.append(_image_event(at, pngs.pop(at).read_bytes()))
        events.append(_event_event(record) if "event" in record else _row_event(record))
    for at in sorted(pngs):
        events.append(_image_event(at, pngs[at].read_bytes()))
    return events


def complete_rows(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's complete lines (one a killed process cut short, or one being written, is left out)."""
    if not path.is_file():
        return []
    lines = path.read_text().split("\n")[:-1]  # the text after the last newline is not a line yet
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("images"), int):
            rows.append(row)
    return rows


def write_for_run(run_dir: str | Path) -> Path:
    """`gankit tensorboard RUN`: the event file of a run folder, from metrics.jsonl, samples/ and config.json."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GankitError(f"tensorboard: {run_dir} is not a folder")
    if not (run_dir / runs.METRICS).is_file() and not (run_dir / runs.CONFIG).is_file():
        raise GankitError(f"tensorboard: {run_dir} is not a gankit run folder (no {runs.METRICS} or {runs.CONFIG})")
    if not complete_rows(run_dir / runs.METRICS):
        raise GankitError(f"tensorboard: {run_dir} has no metrics yet (no complete line in {runs.METRICS}); "
                          "wait for the run's first rows")
    if not available():
        raise GankitError(f"tensorboard: the tensorboard package is not installed; {INSTALL_HINT}")
    log = TensorBoardLog(run_dir, None)
    log.close()
    return log.path


# --- events ---------------------------------------------------------------------------------------

def _scalars(step: int, values: dict[str, Any], prefix: str):
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    return Event(wall_time=time.time(), step=step, summary=Summary(value=[
        Summary.Value(tag=prefix + name, simple_value=float(value)) for name, value in values.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)]))


def _row_event(row: dict[str, Any]):
    """An iteration row: every column but the step (images) as a scalar train/<column>."""
    return _scalars(int(row["images"]), {k: v for k, v in row.items() if k != "images"}, "train/")


def _event_event(record: dict[str, Any]):
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    name, step = record["event"], int(record["images"])
    fields = {k: v for k, v in record.items() if k not in ("event", "images")}
    if name == "eval":
        event = _scalars(step, fields, "eval/")
        if "protocol" in fields:
            event.summary.value.append(_text_value("eval/protocol", _code(json.dumps(fields["protocol"], indent=2))))
        return event
    if name == "warning":
        text = f"{fields.get('kind', 'warning')}: {fields.get('message', '')}"
        return Event(wall_time=time.time(), step=step, summary=Summary(value=[_text_value("warnings", text)]))
    return Event(wall_time=time.time(), step=step, summary=Summary(value=[
        _text_value(f"events/{name}", _code(json.dumps(fields, indent=2)))]))


def _image_event(step: int, png: bytes):
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    colour = {0: 1, 2: 3, 4: 2, 6: 4}.get(png[25], 3)  # grey, RGB, grey + alpha, RGBA
    image = Summary.Image(height=height, width=width, colorspace=colour, encoded_image_string=png)
    return Event(wall_time=time.time(), step=step, summary=Summary(value=[Summary.Value(tag="samples", image=image)]))


def config_event(text: str):
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    return Event(wall_time=time.time(), step=0, summary=Summary(value=[_text_value("config.json", _code(text))]))


def _text_value(tag: str, text: str):
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto

    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="text"))
    tensor = TensorProto(dtype="DT_STRING", string_val=[text.encode()],
                         tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))
    return Summary.Value(tag=tag, metadata=metadata, tensor=tensor)


def _code(text: str) -> str:
    """Text shown as is by TensorBoard's Markdown: an indented code block."""
    return "\n".join("    " + line for line in text.strip("\n").splitlines())


def _record(data: bytes) -> bytes:
    """A TFRecord: length, its masked CRC-32C, the data, its masked CRC-32C."""
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))
