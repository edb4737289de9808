"""Batch inference on a Ray cluster: labels, probabilities, embeddings and CAMs for millions of images.

The image list is fixed on disk and cut into shards (``shard_size`` images each); a Ray Dataset of
shard numbers flows through ``map_batches`` into a fixed pool of actors (:class:`ShardWorker`), each
loading the model artifact once and writing its shards' Parquet files (and CAM PNGs) itself. Only
small "shard done" rows come back, so the driver holds no results and the object store carries no
images; a re-run skips shards whose file exists. The backbone runs in the same engine as locally
(ONNX Runtime), so results equal the local engine's.

Ray is optional: ``pip install 'frugalvision[ray]'``.
"""

from ._batch import BatchResult, ShardWorker, label_images, read_results, require_ray, run_batch

__all__ = ["run_batch", "read_results", "BatchResult", "require_ray", "ShardWorker", "label_images"]
