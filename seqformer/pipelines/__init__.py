"""Data pipelines: YouTube-VIS / COCO readers, clip records in sharded Parquet, training ingestion, synthetic data.

Modules (import what you need; this package imports nothing heavy):

- ``ytvis`` / ``coco``: read and validate the annotation JSONs into per-video descriptors.
- ``clip_records``: build records from descriptors; Parquet schema, shard writer, manifest, readers.
- ``prepare``: plan, build (local loop or Ray Data) and write a prepared folder incrementally.
- ``ray_data``: the only module that imports Ray (prepare executor, ``training_dataset``).
- ``transforms`` / ``pseudo_clips`` / ``collate``: clip sampling, augmentation, COCO pseudo clips, batching.
- ``synthetic``: moving-shapes data in the YouTube-VIS and COCO layouts.
- ``video_io`` / ``masks``: image/video decoding and mask encodings.
- ``evaluation``: YouTube-VIS AP.
"""
