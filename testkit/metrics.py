"""The service's ``GET /metrics`` (Prometheus text format), read with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def unlabelled_samples(text: str) -> dict[str, float]:
    """Sample name -> value for every sample without labels (e.g. ``streamer_inference_seconds_sum``,
    ``streamer_frames_hidden_whole_total``)."""
    return {sample.name: float(sample.value) for family in text_string_to_metric_families(text)
            for sample in family.samples if not sample.labels}
