"""Streaming prepare: the JSON reader, bounded driver state, flat memory, crash safety between windows."""

from __future__ import annotations

import gc
import json
import random
import tracemalloc
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import seqformer.pipelines.prepare as prepare_module
from seqformer.pipelines.clip_records import iter_records, shard_metadata
from seqformer.pipelines.prepare import PrepareOptions, Source, local_executor, prepare
from seqformer.pipelines.ytvis import AnnotationSchemaError, YtvisIndex, read_json_range, scan_json_object


def _random_value(rng: random.Random, depth: int = 0):  # noqa: ANN202
    pick = rng.random()
    if depth > 3 or pick < 0.3:
        return rng.choice([0, -17, 2.5e-3, 12345678901234567890, 'é中"q\\', "", None, True, False, "x" * 70])
    if pick < 0.6:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {f"k{rng.randint(0, 9)}ü": _random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def test_streaming_reader_matches_json_load_at_any_chunk_size(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import seqformer.pipelines.ytvis as ytvis

    rng = random.Random(0)
    path = tmp_path / "doc.json"
    for trial in range(120):
        doc = {
            "info": _random_value(rng),
            "videos": [_random_value(rng) for _ in range(rng.randint(0, 5))],
            "n": -2.5e3,
            "annotations": [_random_value(rng) for _ in range(rng.randint(0, 5))],
        }
        path.write_text(json.dumps(doc, ensure_ascii=trial % 2 == 0, indent=1 if trial % 3 else None), "utf-8")
        chunk = rng.choice([1, 2, 5, 64])
        original = ytvis._JsonReader.__init__
        monkeypatch.setattr(
            ytvis._JsonReader, "__init__", lambda self, h, chunk=chunk, init=original: init(self, h, chunk)
        )
        seen: dict[str, list] = {"videos": [], "annotations": []}
        with open(path, "rb") as handle:

            def collect(key: str, seen: dict = seen):  # noqa: ANN202
                def callback(index: int, value, start: int, stop: int) -> None:  # noqa: ANN001
                    assert index == len(seen[key])
                    assert read_json_range(handle, start, stop) == value  # the byte range re-reads the element
                    seen[key].append(value)

                return callback

            others, streamed = scan_json_object(
                path, {"videos": collect("videos"), "annotations": collect("annotations")}
            )
        monkeypatch.setattr(ytvis._JsonReader, "__init__", original)
        assert seen == {"videos": doc["videos"], "annotations": doc["annotations"]}, trial
        assert others == {"info": doc["info"], "n": -2.5e3} and streamed == {"videos", "annotations"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"videos": [{"id": 1, "height": 2, "width": 2, "file_names": []},', r"not valid JSON \(line 1, column \d+"),
        ('{"videos": [], "categories": []} extra', "not valid JSON"),
        ('[{"videos": []}]', r"<top level>: expected a JSON object"),
        ('{"videos": 3, "categories": []}', r"videos: expected a list"),
    ],
)
def test_streaming_reader_errors_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(AnnotationSchemaError, match=message):
        YtvisIndex.build(path, tmp_path)


class _Tracked(dict):
    """A descriptor that counts how many of its kind are alive (CPython frees it when the last reference goes)."""

    live = 0

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        _Tracked.live += 1

    def __del__(self) -> None:
        _Tracked.live -= 1


def test_index_keeps_no_parsed_annotations_and_workers_get_one_window(synthetic_source, tmp_path: Path, monkeypatch):  # noqa: ANN001, ANN201
    root, annotations = synthetic_source

    def parsed_annotations() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o) is dict and "segmentations" in o)

    before = parsed_annotations()  # earlier tests of the session may still hold some
    index = YtvisIndex.build(annotations, root)
    assert parsed_annotations() == before  # the index keeps byte ranges only
    assert len(index) == 5 and index.num_annotations > 0

    peaks: list[int] = []
    original = prepare_module.descriptor_from_spill

    def counting(line: bytes, context: dict) -> _Tracked:
        descriptor = _Tracked(original(line, context))
        peaks.append(_Tracked.live)
        return descriptor

    monkeypatch.setattr(prepare_module, "descriptor_from_spill", counting)
    options = PrepareOptions(shard_size=100, window_frames=8)  # videos have 4-8 frames: 1-2 videos per window
    handed: list[dict] = []
    inner = local_executor(options)

    def recording(items):  # noqa: ANN001, ANN202
        def spy():  # noqa: ANN202
            for item in items:
                handed.append(item)
                yield item

        yield from inner(spy())

    manifest = prepare([Source("ytvis", str(annotations), str(root))], tmp_path / "out", options, executor=recording)
    assert manifest["records"] == 5 and len(manifest["shards"]) == 1
    assert len(handed) >= 3 and all(item["videos"] <= 2 for item in handed)  # several windows in one shard
    assert all(len(json.dumps(item)) < 1000 for item in handed)  # references into the spill file, not descriptors
    assert max(peaks) <= 2  # never more than one window of videos in memory as descriptors
    assert not list((tmp_path / "out").glob(".*tmp*"))  # the spill file is removed


def _cycled_dataset(synthetic_source, folder: Path, videos: int) -> Path:  # noqa: ANN001
    """An annotation file of ``videos`` entries cycling over the synthetic videos (same frames)."""
    root, annotations = synthetic_source
    base = json.loads(annotations.read_text())
    entries, anns = [], []
    for i in range(videos):
        video = base["videos"][i % len(base["videos"])]
        entries.append({**video, "id": i + 1})
        for ann in base["annotations"]:
            if ann["video_id"] == video["id"]:
                anns.append({**ann, "id": len(anns) + 1, "video_id": i + 1})
    path = folder / f"videos_{videos}.json"
    path.write_text(json.dumps({"videos": entries, "annotations": anns, "categories": base["categories"]}))
    return path


def test_driver_memory_does_not_grow_with_the_number_of_videos(synthetic_source, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import seqformer.pipelines.ytvis as ytvis

    monkeypatch.setattr(ytvis, "READ_CHUNK", 4096)  # else the reader's 1 MiB text window holds these small files whole
    root = synthetic_source[0]
    peaks = {}
    for videos in (10, 100):
        annotations = _cycled_dataset(synthetic_source, tmp_path, videos)
        options = PrepareOptions(shard_size=10_000, window_frames=16)
        prepare([Source("ytvis", str(annotations), str(root))], tmp_path / "warm", options)  # imports, caches
        tracemalloc.start()
        manifest = prepare([Source("ytvis", str(annotations), str(root))], tmp_path / f"out{videos}", options)
        peaks[videos] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert manifest["records"] == videos
    # 10x the videos (one shard, so nothing is committed early): the peak is set by fixed-size buffers and one
    # window plus the compact index (about 150 bytes per video), not by the annotations, which are never all held
    assert peaks[100] < 1.1 * peaks[10] + 128 * 1024, peaks


def test_crash_between_windows_of_a_shard_leaves_only_complete_shards(synthetic_source, tmp_path: Path) -> None:
    root, annotations = synthetic_source
    out = tmp_path / "out"
    options = PrepareOptions(shard_size=3, window_frames=1)  # one video per window; shards of 3, 2 windows
    inner = local_executor(options)

    def crashing(items):  # noqa: ANN001, ANN202
        for position, result in inner(items):
            if position == 4:  # second shard: its first window (position 3) is already appended to the shard file
                raise KeyboardInterrupt
            yield position, result

    with pytest.raises(KeyboardInterrupt):
        prepare([Source("ytvis", str(annotations), str(root))], out, options, executor=crashing)
    files = sorted(out.iterdir())
    assert [f.name for f in files if not f.name.startswith("ytvis-00000-")] == []  # no partial shard, no tmp files
    assert len(files) == 1
    meta = shard_metadata(files[0])
    assert meta is not None and pq.ParquetFile(files[0]).metadata.num_rows == meta["records"] == 3
    resumed = prepare([Source("ytvis", str(annotations), str(root))], out, options)
    assert [s["reused"] for s in resumed["shards"]] == [True, False]
    assert sorted(r["video_id"] for r in iter_records(out)) == [1, 2, 3, 4, 5]
